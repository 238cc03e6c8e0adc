"""Streaming in distributed mode for real: a `dramatiq lmstrix.workers` process publishes each
piece to a Redis stream, readers in this process follow it; PostgreSQL holds the rows. Also: a
worker killed mid-answer, and a Redis that dies under a reader.

Skips when Redis or PostgreSQL do not answer, except under CI=true, where it fails instead.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from helpers.dramatiq_worker import DramatiqWorkers, require_redis, worker_env
from helpers.waiting import wait_for

from lmstrix.core.inference_manager import AsyncInferenceManager, InferenceManager
from lmstrix.core.jobs import JobManager
from lmstrix.testing import LMStudioEmulator
from lmstrix.utils.config import Config

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

MODEL = "llama-3.2-1b-instruct"
QUICK_LEASES = {
    "LMSTRIX_QUEUE__LEASE_SECONDS": "2",
    "LMSTRIX_QUEUE__REAPER_INTERVAL": "0.5",
    "LMSTRIX_QUEUE__LINGER_SECONDS": "2",
}


def _config(name: str, emu: LMStudioEmulator, db_url: str, redis_url: str) -> Config:
    return Config(
        {
            "hosts": [{"name": name, "url": emu.url}],
            "database": {"url": db_url},
            "redis": {"url": redis_url},
        }
    )


class Site:
    def __init__(self, tmp: Path, db_url: str, redis_url: str) -> None:
        self.host = f"st{uuid.uuid4().hex[:6]}"
        self.emu = LMStudioEmulator(clock="real", tokens_per_second=100.0, load_seconds=0.0)
        self.emu.start()
        self.config = _config(self.host, self.emu, db_url, redis_url)
        env = worker_env(f"{self.host}={self.emu.url}", db_url, redis_url, tmp, QUICK_LEASES)
        self.workers = DramatiqWorkers(tmp, env)
        self.proc = self.workers.start(self.host)

    def manager(self, timeout: float = 60) -> InferenceManager:
        return InferenceManager(timeout=timeout, config=self.config)

    def close(self) -> None:
        self.workers.stop_all()
        self.emu.stop()


@pytest.fixture(scope="module")
def site(
    postgres_database_factory: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    s = Site(tmp_path_factory.mktemp("streaming"), postgres_database_factory(), require_redis())
    yield s
    s.close()


def test_pieces_arrive_while_the_worker_writes_them(site: Site) -> None:
    manager = site.manager()
    stream = manager.stream(MODEL, "count to 60", max_tokens=80)
    store = manager.service.store
    pieces, status_at_first = [], None
    for piece in stream:
        if not pieces:
            status_at_first = store.status(stream.job_id)
        pieces.append(piece)
    assert status_at_first == "running"
    assert stream.result is not None and stream.result.succeeded
    assert "".join(pieces) == stream.result.response
    assert stream.result.response.split() == [str(i) for i in range(1, 61)]
    assert len(pieces) >= 60  # piece by piece, not one block at the end
    manager.close()


def test_a_late_follower_and_an_async_reader_get_every_piece(site: Site) -> None:
    manager = site.manager()
    stream = manager.stream(MODEL, "count to 40", max_tokens=60)
    head = [next(stream) for _ in range(5)]
    with JobManager(site.config) as jobs:
        follower = jobs.follow_job(stream.job_id, timeout=60)

        async def follow_async() -> str:
            am = AsyncInferenceManager(timeout=60, config=site.config)
            try:
                reader = am.sync.follow(stream.job_id)
                return "".join([piece async for piece in reader.apieces()])
            finally:
                await am.aclose()

        tail = list(stream)
        followed = "".join(follower)
        followed_async = asyncio.run(follow_async())
    assert stream.result is not None
    assert "".join(head + tail) == followed == followed_async == stream.result.response
    manager.close()


def test_async_stream_through_redis(site: Site) -> None:
    async def main() -> tuple[list[str], str]:
        am = AsyncInferenceManager(timeout=60, config=site.config)
        try:
            stream = await am.stream(MODEL, "count to 20", max_tokens=30)
            pieces = [piece async for piece in stream]
            assert stream.result is not None
            return pieces, stream.result.response
        finally:
            await am.aclose()

    pieces, response = asyncio.run(main())
    assert len(pieces) >= 20 and "".join(pieces) == response


def test_a_worker_killed_mid_stream_restarts_the_answer(site: Site) -> None:
    manager = site.manager()
    store = manager.service.store
    stream = manager.stream(MODEL, "count to 300", max_tokens=400)
    seen = [next(stream) for _ in range(3)]
    site.workers.kill(site.proc)
    site.proc = site.workers.start(site.host)
    seen += list(stream)
    assert stream.result is not None and stream.result.succeeded
    assert stream.restarts == 1
    # the new attempt's pieces follow what the first one had sent; the result is the new one
    assert "".join(seen).endswith(stream.result.response)
    assert stream.result.response.split()[-1] == "300"
    assert store.get(stream.job_id).attempts == 2
    manager.close()


# -- a Redis of our own, to kill under a reader -----------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def own_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"

    def answers() -> bool:
        try:
            return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    wait_for(answers, what="the test's own redis-server")
    yield url, proc
    proc.kill()
    proc.wait(10)


def test_a_reader_whose_redis_dies_gets_the_answer_from_the_database(
    own_redis: tuple[str, subprocess.Popen[bytes]],
    postgres_database_factory: Callable[[], str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis_url, redis_proc = own_redis
    site = Site(tmp_path, postgres_database_factory(), redis_url)
    try:
        manager = site.manager()
        stream = manager.stream(MODEL, "count to 150", max_tokens=200)
        head = [next(stream) for _ in range(3)]
        redis_proc.kill()
        redis_proc.wait(10)
        rest = list(stream)  # no redis or connection error escapes: the row has the answer
        assert stream.result is not None and stream.result.succeeded
        assert "".join(head + rest) == stream.result.response
        assert stream.result.response.split()[-1] == "150"
        assert "streamed pieces are unavailable" in caplog.text  # it did lose the channel
        manager.close()
    finally:
        site.close()
