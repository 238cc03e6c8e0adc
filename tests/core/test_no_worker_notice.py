"""The no-worker notice in distributed mode, for real: Redis, PostgreSQL, `dramatiq
lmstrix.workers` processes and the emulator. A caller whose job sits queued on a host nobody
serves is warned once, naming the command that starts a worker, and the timeout error repeats
it; a caller queued behind a busy live worker is not."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from helpers.dramatiq_worker import DramatiqWorkers, require_redis, worker_env
from helpers.waiting import wait_for

from lmstrix.api.exceptions import InferenceTimeoutError
from lmstrix.core.inference_manager import InferenceManager, InferenceResult
from lmstrix.core.jobs import JobManager
from lmstrix.db import utcnow
from lmstrix.domain.heartbeats import NO_WORKER_NOTICE_AFTER
from lmstrix.jobs.store import JobView
from lmstrix.testing import LMStudioEmulator
from lmstrix.utils.config import Config

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

MODEL = "llama-3.2-1b-instruct"
OTHER = "qwen/qwen3-4b"


@dataclass
class Cluster:
    config: Config
    env: dict[str, str]
    tmp: Path
    emulator: LMStudioEmulator
    served: str  # a worker runs for this host all along
    unserved: str  # nobody serves this one unless a test starts a worker

    def manager(self, timeout: float = 60) -> InferenceManager:
        return InferenceManager(timeout=timeout, config=self.config)

    def workers(self) -> DramatiqWorkers:
        return DramatiqWorkers(self.tmp, self.env)


@pytest.fixture(scope="module")
def cluster(
    postgres_database_factory: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    redis_url = require_redis()
    tmp = tmp_path_factory.mktemp("notice")
    db_url = postgres_database_factory()
    tag = uuid.uuid4().hex[:6]
    served, unserved = f"busy{tag}", f"idle{tag}"
    emu = LMStudioEmulator(clock="real", tokens_per_second=40.0, load_seconds=0.0).start()
    hosts = f"{served}={emu.url},{unserved}={emu.url}"
    env = worker_env(hosts, db_url, redis_url, tmp, {"LMSTRIX_QUEUE__LINGER_SECONDS": "1"})
    config = Config(
        {
            "hosts": [{"name": served, "url": emu.url}, {"name": unserved, "url": emu.url}],
            "database": {"url": db_url},
            "redis": {"url": redis_url},
        }
    )
    c = Cluster(config, env, tmp, emu, served, unserved)
    with c.workers() as always:
        always.start(served)
        with JobManager(config) as jobs:
            wait_for(lambda: jobs.workers(served), what="the worker to register")
        try:
            yield c
        finally:
            emu.stop()


def notices(caplog: pytest.LogCaptureFixture, host: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and f"`lmstrix worker --host {host}`" in r.getMessage()
    ]


def in_thread(call: Callable[[], InferenceResult]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(call())
        except Exception as exc:
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def queued_job(manager: InferenceManager, host: str) -> JobView:
    (job,) = manager.service.store.list_jobs(status=["queued"], host=host)
    return job


def test_a_caller_on_a_host_nobody_serves_is_told_once(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    host = cluster.unserved
    manager = cluster.manager()
    manager.service.rescan(host)
    with caplog.at_level(logging.WARNING, logger="lmstrix"):
        thread, out = in_thread(lambda: manager.infer(MODEL, "say served at last", max_tokens=8))
        wait_for(lambda: notices(caplog, host), timeout=15, what="the no-worker notice")
        (notice,) = notices(caplog, host)
        job = queued_job(manager, host)
        assert job.id in notice.getMessage() and f"no worker serves host {host}" in (
            notice.getMessage()
        )
        # The command it names works: the job runs, and nobody is told twice.
        with cluster.workers() as started:
            started.start(host)
            thread.join(60)
        assert not thread.is_alive()
        with JobManager(cluster.config) as jobs:
            assert jobs.workers(host, include_stale=True) == []  # it left when it stopped
    (result,) = out
    assert isinstance(result, InferenceResult) and result.response == "served at last"
    assert len(notices(caplog, host)) == 1
    manager.close()


def test_the_timeout_error_repeats_the_notice(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    host = cluster.unserved
    manager = cluster.manager(timeout=NO_WORKER_NOTICE_AFTER + 2.5)
    manager.service.rescan(host)
    with (
        caplog.at_level(logging.WARNING, logger="lmstrix"),
        pytest.raises(InferenceTimeoutError) as err,
    ):
        manager.infer(MODEL, "say nobody", max_tokens=8)
    assert len(notices(caplog, host)) == 1
    assert f"no worker serves host {host}" in str(err.value)
    assert f"`lmstrix worker --host {host}`" in str(err.value)
    assert manager.service.store.get(str(err.value.job_id)).status == "cancelled"
    manager.close()


def test_no_notice_while_a_live_worker_is_busy(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    host = cluster.served
    manager = cluster.manager()
    manager.service.rescan(host)
    store = manager.service.store
    emu = cluster.emulator
    busy = manager.submit(MODEL, "count to 4000", max_tokens=4000, host=host)
    wait_for(lambda: store.get(busy.id).status == "running", what="the long job to run")
    with caplog.at_level(logging.WARNING, logger="lmstrix"):
        # another model, so it waits for the long job to end (the same one would join it in a
        # free slot)
        thread, out = in_thread(lambda: manager.infer(OTHER, "say behind it", max_tokens=8))
        wait_for(lambda: store.list_jobs(status=["queued"], host=host), what="the second job")
        waiting = queued_job(manager, host)
        # Queued behind the long job for well past the moment its waiter looks for workers.
        long_enough = waiting.created_at + timedelta(seconds=NO_WORKER_NOTICE_AFTER + 1.5)
        wait_for(lambda: utcnow() > long_enough, what="the waiter to have looked")
        assert store.get(waiting.id).status == "queued"
        store.cancel(busy.id)
        thread.join(60)
    (result,) = out
    assert isinstance(result, InferenceResult) and result.response == "behind it"
    assert notices(caplog, host) == []
    emu.wait_for(lambda: emu.counters.in_flight == 0, timeout=30)
    manager.close()
