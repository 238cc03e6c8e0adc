"""A context test through a real `dramatiq lmstrix.workers` process, Redis and PostgreSQL: the
worker is SIGKILLed while a probe hangs, a new worker resumes the same job, and the size that was
in flight counts as a failure without being probed again.

Skips when Redis or PostgreSQL do not answer, except under CI=true, where it fails instead.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.dramatiq_worker import DramatiqWorkers, require_redis, worker_env
from helpers.waiting import wait_for

from lmstrix.core.context_tester import ContextTester
from lmstrix.core.models import ModelRegistry
from lmstrix.jobs.context_test import INTERRUPTED_ERROR, read_probes
from lmstrix.testing import EmulatedModel, LMStudioEmulator
from lmstrix.utils.config import Config

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

DECLARED, LOADABLE, USABLE = 32768, 24576, 16384
BUDGET = 32
MODEL = EmulatedModel(
    key="acme/dist-7b",
    max_context_length=DECLARED,
    loadable_limit=LOADABLE,
    usable_limit=USABLE,
)


@pytest.fixture(scope="module")
def redis_url() -> str:
    return require_redis()


class HostWorkers(DramatiqWorkers):
    """Workers for the one emulated host, logged as worker-0.log, worker-1.log, ..."""

    def __init__(self, tmp: Path, env: dict[str, str], host: str) -> None:
        super().__init__(tmp, env)
        self.host = host

    def start(
        self, host: str | None = None, log_name: str | None = None
    ) -> subprocess.Popen[bytes]:
        return super().start(host or self.host, log_name or f"worker-{len(self.procs)}.log")


@pytest.fixture
def setup(
    redis_url: str,
    postgres_database_factory: Callable[[], str],
    tmp_path: Path,
) -> Iterator[tuple[LMStudioEmulator, HostWorkers, ContextTester, str]]:
    emu = LMStudioEmulator([MODEL], hang_loads_above=DECLARED - 1).start()
    db_url = postgres_database_factory()
    host = f"ct{uuid.uuid4().hex[:6]}"
    env = worker_env(
        f"{host}={emu.url}",
        db_url,
        redis_url,
        tmp_path,
        {
            "LMSTRIX_QUEUE__LEASE_SECONDS": "2",
            "LMSTRIX_QUEUE__REAPER_INTERVAL": "0.5",
            "LMSTRIX_QUEUE__LINGER_SECONDS": "2",
            "LMSTRIX_LMSTUDIO__MAX_RETRIES": "0",
        },
    )
    config = Config(
        {
            "hosts": [{"name": host, "url": emu.url}],
            "database": {"url": db_url},
            "redis": {"url": redis_url},
        }
    )
    workers = HostWorkers(tmp_path, env, host)
    tester = ContextTester(config=config, output_tokens=BUDGET)
    try:
        yield emu, workers, tester, db_url
    finally:
        tester.close()
        workers.stop_all()
        emu.stop()


def test_killed_worker_resumes_the_job_on_postgres(
    setup: tuple[LMStudioEmulator, HostWorkers, ContextTester, str],
) -> None:
    emu, workers, tester, db_url = setup
    first = workers.start()
    job = tester.submit(MODEL.key)
    wait_for(lambda: emu.hanging == 1, what="the worker's first load to hang")
    rows = read_probes(db_url, job.id)
    assert [(r.kind, r.size, r.outcome) for r in rows] == [("load", DECLARED, "in_flight")]
    assert ModelRegistry(db_url).get_model(MODEL.key).test_status == "testing"
    workers.kill(first)

    workers.start()  # its reaper re-queues the job once the dead worker's lease runs out
    view = tester.watch(job.id, timeout=120)
    assert view.status == "succeeded" and view.attempts == 2
    rows = read_probes(db_url, job.id)
    assert rows[0].error == INTERRUPTED_ERROR and rows[0].outcome == "failed"
    assert [r.size for r in rows].count(DECLARED) == 1
    assert all(rec.requested_context < DECLARED for rec in emu.counters.loads)
    result = tester.result(view, 0.0)
    assert result["test_successful"] and result["iterations"] == len(rows)
    optimal = result["optimal_context"]
    assert USABLE - 256 <= optimal <= USABLE + BUDGET + 33
    model = ModelRegistry(db_url).get_model(MODEL.key)
    assert model.test_status == "tested" and model.tested_context == optimal
    assert model.last_known_bad_context == result["failure_point"]

    # Through the same worker: a rerun only confirms the size at its own load (one load, its
    # pre-screen and the full prompt), a reset one searches again.
    again = tester.test_model_context(MODEL.key)
    assert again["optimal_context"] == optimal and again["iterations"] == 3
    assert {p["context_size"] for p in again["test_points"] if p["phase"] == "load"} == {optimal}
    emu.configure(hang_loads_above=None)
    fresh = tester.test_model_context(MODEL.key, reset=True)
    assert fresh["test_successful"] and fresh["optimal_context"] == optimal
    assert any(p["context_size"] == DECLARED for p in fresh["test_points"])
