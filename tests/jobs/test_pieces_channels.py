"""The channels of streamed pieces, in process and through a real Redis: order, late readers,
bounded length, the final marker, asyncio readers, and a Redis that does not answer."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator

import pytest
import redis
from helpers.dramatiq_worker import require_redis

from lmstrix.domain.pieces import Piece
from lmstrix.jobs import pieces as pieces_mod
from lmstrix.jobs.notify import RedisNotifier
from lmstrix.jobs.pieces import (
    PIECES_KEY,
    START,
    LocalPieces,
    PieceChannel,
    PiecesUnavailableError,
    RedisPieces,
)


@pytest.fixture(params=["local", "redis"])
def channel(request: pytest.FixtureRequest) -> Iterator[PieceChannel]:
    if request.param == "local":
        yield LocalPieces()
        return
    ch = RedisPieces(require_redis())
    yield ch
    ch.close()


def _job() -> str:
    return str(uuid.uuid4())


def _read_all(ch: PieceChannel, job: str, cursor: str = START) -> list[Piece]:
    out: list[Piece] = []
    while True:
        got, cursor = ch.read(job, cursor, 0)
        if not got:
            return out
        out.extend(got)


def test_a_late_reader_gets_every_piece_in_order_then_the_marker(channel: PieceChannel) -> None:
    job = _job()
    writer = channel.writer(job, attempt=1)
    for text in ["a", "b", "c"]:
        writer.write(text)
    channel.end(job)  # after the pieces, even though they are sent off the writing thread
    got = _read_all(channel, job)
    assert [(p.attempt, p.seq, p.text) for p in got[:3]] == [(1, 0, "a"), (1, 1, "b"), (1, 2, "c")]
    assert got[3].final and len(got) == 4


def test_a_reader_waits_for_the_next_piece(channel: PieceChannel) -> None:
    job = _job()
    got: list[list[Piece]] = []
    ready = threading.Event()

    def read() -> None:
        ready.set()
        got.append(channel.read(job, START, 30)[0])

    reader = threading.Thread(target=read)
    reader.start()
    ready.wait(10)
    channel.writer(job, attempt=1).write("hello")
    reader.join(30)
    assert [p.text for p in got[0]] == ["hello"]


def test_the_cursor_moves_past_what_was_read(channel: PieceChannel) -> None:
    job = _job()
    writer = channel.writer(job, attempt=1)
    writer.write("one")
    channel.flush()
    first, cursor = channel.read(job, START, 0)
    writer.write("two")
    channel.flush()
    second, _ = channel.read(job, cursor, 0)
    assert [p.text for p in first] == ["one"] and [p.text for p in second] == ["two"]
    assert channel.read(job, START, 0)[0][0].text == "one"  # any reader may start over


def test_read_async_waits_without_a_thread(channel: PieceChannel) -> None:
    job = _job()

    async def main() -> list[Piece]:
        task = asyncio.create_task(channel.read_async(job, START, 30))
        await asyncio.sleep(0)  # let the reader register before the write
        await asyncio.to_thread(channel.writer(job, attempt=1).write, "x")
        got, _ = await task
        await channel.aclose()
        return got

    assert [p.text for p in asyncio.run(main())] == ["x"]


def test_redis_stream_is_bounded_and_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    url = require_redis()
    monkeypatch.setattr(pieces_mod, "PIECES_MAXLEN", 10)
    ch = RedisPieces(url)
    job = _job()
    writer = ch.writer(job, attempt=1)
    for i in range(500):
        writer.write(str(i))
    ch.flush()
    client = redis.Redis.from_url(url)
    key = PIECES_KEY.format(job)
    # approximate trimming keeps at most a node's worth beyond the bound, never all 500
    assert client.xlen(key) < 500
    assert 0 < client.ttl(key) <= pieces_mod.PIECES_TTL_SECONDS
    kept = _read_all(ch, job)
    assert [p.seq for p in kept] == list(range(500 - len(kept), 500))
    ch.close()


def test_the_final_marker_leaves_no_key_for_a_job_that_streamed_nothing() -> None:
    url = require_redis()
    notifier = RedisNotifier(url)
    job = _job()
    notifier.notify_done(job)
    assert not redis.Redis.from_url(url).exists(PIECES_KEY.format(job))
    notifier.pieces.writer(job, attempt=1).write("x")
    notifier.notify_done(job)  # flushes the piece first: the marker needs the stream
    assert _read_all(notifier.pieces, job)[-1].final
    notifier.close()


def test_redis_down_writer_goes_quiet_and_reader_raises_a_typed_error() -> None:
    ch = RedisPieces("redis://127.0.0.1:1/0")  # nothing listens on port 1
    ch.writer(_job(), attempt=1).write("lost")  # never raises
    ch.end(_job())  # never raises
    with pytest.raises(PiecesUnavailableError, match="the answer comes from the job"):
        ch.read(_job(), START, 0.1)

    async def aread() -> None:
        try:
            await ch.read_async(_job(), START, 0.1)
        finally:
            await ch.aclose()

    with pytest.raises(PiecesUnavailableError):
        asyncio.run(aread())


def test_local_buffers_of_ended_jobs_are_dropped_after_a_while() -> None:
    ch = LocalPieces(keep_seconds=0.0)
    old = _job()
    ch.writer(old, attempt=1).write("x")
    ch.end(old)
    ch.writer(_job(), attempt=1)  # a new writer purges what has ended
    assert ch.read(old, START, 0)[0] == []
