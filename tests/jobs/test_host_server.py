"""The distributed worker's handling of one doorbell (``HostServer.serve``), in process, against
real Redis, a SQLite file and the emulator."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from helpers.dramatiq_worker import require_redis
from helpers.waiting import wait_for

from lmstrix.domain.hosts import HostConfig
from lmstrix.domain.queue_settings import QueueSettings
from lmstrix.jobs.distributed import HostServer
from lmstrix.jobs.doorbell import RedisDoorbell
from lmstrix.jobs.jobs_config import JobsConfig
from lmstrix.testing import LMStudioEmulator

pytestmark = [pytest.mark.redis]

MODEL = "llama-3.2-1b-instruct"


@contextmanager
def host_server(tmp: Path, url: str, linger: float) -> Iterator[HostServer]:
    redis_url = require_redis()
    host = f"hs-{uuid.uuid4().hex[:8]}"
    config = JobsConfig(
        database_url=f"sqlite:///{tmp / 'jobs.db'}",
        hosts=(HostConfig(name=host, url=url),),
        redis_url=redis_url,
        queue=QueueSettings(linger_seconds=linger),
    )
    hs = HostServer(config, host)
    try:
        yield hs
    finally:
        hs.close()
        redis.Redis.from_url(redis_url).delete(f"lmstrix:wake:{host}")


def submit(hs: HostServer, url: str, prompt: str) -> str:
    return hs.store.submit(
        host=hs.host,
        model=MODEL,
        request={"prompt": prompt, "max_tokens": 8, "context_length": 4096},
        host_url=url,
    )


def serve_in_thread(hs: HostServer) -> tuple[threading.Thread, list[int]]:
    ran: list[int] = []
    thread = threading.Thread(target=lambda: ran.append(hs.serve()), daemon=True)
    thread.start()
    return thread, ran


def test_a_doorbell_for_work_already_done_returns_without_lingering(
    tmp_path: Path, lmstudio_emulator: LMStudioEmulator
) -> None:
    """A stale doorbell (its job ran, or was cancelled, before it was handled) costs one look at
    the queue, not a linger: the worker's next message is not held up."""
    with host_server(tmp_path, lmstudio_emulator.url, linger=3600) as server:
        job = submit(server, lmstudio_emulator.url, "say one")
        server.store.cancel(job)  # nothing is left to run
        thread, ran = serve_in_thread(server)
        thread.join(60)  # a linger would last an hour
        assert ran == [0] and not thread.is_alive()


def test_a_worker_that_ran_a_job_lingers_and_takes_the_next_from_a_wake(
    tmp_path: Path, lmstudio_emulator: LMStudioEmulator
) -> None:
    with host_server(tmp_path, lmstudio_emulator.url, linger=2.0) as server:
        first = submit(server, lmstudio_emulator.url, "say one")
        thread, ran = serve_in_thread(server)
        wait_for(lambda: server.store.get(first).status == "succeeded", 60, "the first job")
        second = submit(server, lmstudio_emulator.url, "say two")
        RedisDoorbell(server.doorbell.url).wake(server.host)  # a ring's push, not its message
        wait_for(lambda: server.store.get(second).status == "succeeded", 60, "the second job")
        thread.join(60)  # the linger ends two seconds after the last wake
        assert ran == [2]  # both in one serve: the second was taken while it lingered
