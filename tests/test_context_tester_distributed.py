"""A context test through a real `dramatiq lmstrix.workers` process, Redis and PostgreSQL: the
worker is SIGKILLed while a probe hangs, a new worker resumes the same job, and the size that was
in flight counts as a failure without being probed again.

Skips when Redis or PostgreSQL do not answer, except under CI=true, where it fails instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from lmstrix.core.context_tester import ContextTester
from lmstrix.core.models import ModelRegistry
from lmstrix.jobs.context_test import INTERRUPTED_ERROR, read_probes
from lmstrix.testing import EmulatedModel, LMStudioEmulator
from lmstrix.utils.config import Config

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

REDIS_URL = os.environ.get("LMSTRIX_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
DECLARED, LOADABLE, USABLE = 32768, 24576, 16384
BUDGET = 32
MODEL = EmulatedModel(
    key="acme/dist-7b",
    max_context_length=DECLARED,
    loadable_limit=LOADABLE,
    usable_limit=USABLE,
)


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        reason = f"Redis at {REDIS_URL} does not answer ({exc})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the Redis tests must run, not skip)")
        pytest.skip(reason)
    return REDIS_URL


class Workers:
    """`dramatiq lmstrix.workers` processes for one host, each in its own process group."""

    def __init__(self, tmp: Path, env: dict[str, str], host: str) -> None:
        self.tmp, self.env, self.host = tmp, env, host
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"worker-{len(self.procs)}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dramatiq",
                "lmstrix.workers",
                "--processes",
                "1",
                "--threads",
                "1",
                "--queues",
                f"lmstudio.{self.host}",
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # SIGKILL to the group reaches dramatiq's forked child
        )
        log.close()
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@pytest.fixture
def setup(
    redis_url: str,
    postgres_database_factory: Callable[[], str],
    tmp_path: Path,
) -> Iterator[tuple[LMStudioEmulator, Workers, ContextTester, str]]:
    emu = LMStudioEmulator([MODEL], hang_loads_above=DECLARED - 1).start()
    db_url = postgres_database_factory()
    host = f"ct{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "LMSTRIX_HOSTS": f"{host}={emu.url}",
        "LMSTRIX_DATABASE_URL": db_url,
        "LMSTRIX_REDIS_URL": redis_url,
        "LMSTRIX_JOB_LEASE_SECONDS": "2",
        "LMSTRIX_REAPER_INTERVAL": "0.5",
        "LMSTRIX_WORKER_LINGER": "2",
        "LMSTRIX_LMSTUDIO__MAX_RETRIES": "0",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("LMSTRIX_CONFIG", None)
    config = Config(
        {
            "hosts": [{"name": host, "url": emu.url}],
            "database": {"url": db_url},
            "redis": {"url": redis_url},
        }
    )
    workers = Workers(tmp_path, env, host)
    tester = ContextTester(config=config, output_tokens=BUDGET)
    try:
        yield emu, workers, tester, db_url
    finally:
        tester.close()
        workers.stop_all()
        emu.stop()


def test_killed_worker_resumes_the_job_on_postgres(
    setup: tuple[LMStudioEmulator, Workers, ContextTester, str],
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

    # Through the same worker: a rerun needs no probe, a reset one searches again.
    assert tester.test_model_context(MODEL.key)["iterations"] == 0
    emu.configure(hang_loads_above=None)
    fresh = tester.test_model_context(MODEL.key, reset=True)
    assert fresh["test_successful"] and fresh["optimal_context"] == optimal
    assert any(p["context_size"] == DECLARED for p in fresh["test_points"])
