"""Channels that carry a job's streamed pieces from its worker to any number of readers.

Distributed: a Redis stream per job (``lmstrix:pieces:<job_id>``), bounded in length and expiring
an hour after its last write, read with blocking ``XREAD`` from any position, so a reader that
joins late starts from the first piece. Embedded: an in-process buffer per job, kept for a while
after the job ends.

Publishing never fails a job: if the channel breaks, the writer goes quiet and readers fill in the
rest of the answer from the job's row. Reading raises :class:`PiecesUnavailableError` instead of
the client library's errors, so a reader can fall back the same way.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import redis

from lmstrix.domain.errors import LMStrixError
from lmstrix.domain.pieces import Piece

if TYPE_CHECKING:
    import redis.asyncio as aredis

log = logging.getLogger(__name__)

PIECES_KEY = "lmstrix:pieces:{}"
#: Entries kept per job stream (approximate trim). An answer rarely has more pieces; a reader
#: that falls further behind gets the rest from the row.
PIECES_MAXLEN = 20_000
PIECES_TTL_SECONDS = 3600
#: How long an in-process buffer outlives its job (readers attach late, ``jobs follow``).
LOCAL_KEEP_SECONDS = 120.0
#: The longest a final marker waits for the pieces before it to be sent.
FLUSH_SECONDS = 5.0
#: A publisher that cannot reach Redis says so once per this many seconds.
PUBLISH_WARN_EVERY = 30.0
#: Where a reader starts: before the first piece.
START = "0"


class PiecesUnavailableError(LMStrixError):
    """The channel of streamed pieces could not be read (Redis is down or restarting)."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"streamed pieces are unavailable: {reason}; the answer comes from the job"
        )


class PieceWriter(Protocol):
    def write(self, text: str) -> None:
        """Publish the next piece; never raises."""
        ...


class PieceChannel(Protocol):
    """One kind of channel: the worker writes, readers read from a cursor (``START`` first)."""

    def writer(self, job_id: str, attempt: int) -> PieceWriter: ...

    def flush(self) -> None:
        """Wait until the pieces written so far are readable (or were given up on)."""
        ...

    def end(self, job_id: str) -> None:
        """Say the job's row is final (after the commit), after its pieces; never raises."""
        ...

    def read(self, job_id: str, cursor: str, timeout: float) -> tuple[list[Piece], str]:
        """Pieces after ``cursor``, waiting up to ``timeout`` for the first; and the new cursor."""
        ...

    async def read_async(
        self, job_id: str, cursor: str, timeout: float
    ) -> tuple[list[Piece], str]: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


# -- in process ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Buffer:
    pieces: list[Piece] = field(default_factory=list)
    ended_at: float | None = None
    listeners: list[Callable[[], None]] = field(default_factory=list)


@dataclass(slots=True)
class _LocalWriter:
    channel: LocalPieces
    job_id: str
    attempt: int
    seq: int = 0

    def write(self, text: str) -> None:
        self.channel._append(self.job_id, Piece(self.attempt, self.seq, text))
        self.seq += 1


class LocalPieces:
    """Pieces in this process's memory (embedded mode)."""

    def __init__(self, keep_seconds: float = LOCAL_KEEP_SECONDS) -> None:
        self.keep_seconds = keep_seconds
        self._cond = threading.Condition()
        self._buffers: dict[str, _Buffer] = {}
        # Ended jobs, oldest first: purging looks only at the expired head, never at them all.
        self._ended: collections.deque[tuple[float, str]] = collections.deque()

    def writer(self, job_id: str, attempt: int) -> PieceWriter:
        self._purge()
        return _LocalWriter(self, job_id, attempt)

    def flush(self) -> None:
        pass  # written is readable

    def end(self, job_id: str) -> None:
        self._append(job_id, Piece(0, 0, final=True), ended=True)

    def _append(self, job_id: str, piece: Piece, *, ended: bool = False) -> None:
        with self._cond:
            buf = self._buffers.setdefault(job_id, _Buffer())
            buf.pieces.append(piece)
            if ended:
                buf.ended_at = time.monotonic()
                self._ended.append((buf.ended_at, job_id))
            listeners, buf.listeners = buf.listeners, []
            self._cond.notify_all()
        for listener in listeners:
            listener()

    def _purge(self) -> None:
        cutoff = time.monotonic() - self.keep_seconds
        with self._cond:
            while self._ended and self._ended[0][0] <= cutoff:
                ended_at, key = self._ended.popleft()
                buf = self._buffers.get(key)
                if buf is not None and buf.ended_at == ended_at:
                    del self._buffers[key]

    def _after(self, job_id: str, cursor: str) -> tuple[list[Piece], str]:
        buf = self._buffers.get(job_id)
        index = int(cursor)
        if buf is None or index >= len(buf.pieces):
            return [], cursor
        return buf.pieces[index:], str(len(buf.pieces))

    def read(self, job_id: str, cursor: str, timeout: float) -> tuple[list[Piece], str]:
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            while True:
                found = self._after(job_id, cursor)
                remaining = deadline - time.monotonic()
                if found[0] or remaining <= 0:
                    return found
                self._cond.wait(remaining)

    async def read_async(self, job_id: str, cursor: str, timeout: float) -> tuple[list[Piece], str]:
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()

        def wake() -> None:  # called from the worker's thread
            if not loop.is_closed():
                loop.call_soon_threadsafe(arrived.set)

        with self._cond:
            found = self._after(job_id, cursor)
            if found[0] or timeout <= 0:
                return found
            self._buffers.setdefault(job_id, _Buffer()).listeners.append(wake)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), timeout)
        with self._cond:
            buf = self._buffers.get(job_id)
            if buf is not None and wake in buf.listeners:
                buf.listeners.remove(wake)
            return self._after(job_id, cursor)

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


# -- Redis --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _RedisWriter:
    publisher: _Publisher
    key: str
    attempt: int
    seq: int = 0

    def write(self, text: str) -> None:
        self.publisher.put(self.key, {"a": self.attempt, "s": self.seq, "t": text}, self.seq == 0)
        self.seq += 1


class _Publisher:
    """Sends the pieces of every job this process streams, off the generating thread.

    ``put`` only queues; a daemon thread takes everything queued so far and sends it in one
    pipelined round trip, so a host that produces pieces faster than Redis answers costs one
    round trip per batch, not per piece, and generation never waits on Redis. ``flush`` waits
    until everything queued before it was sent (the final marker must come after the pieces).
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._cond = threading.Condition()
        self._queue: list[tuple[str, dict[Any, Any], bool]] = []
        self._sending = False
        self._closed = False
        self._warned_at = -PUBLISH_WARN_EVERY
        self._thread: threading.Thread | None = None

    def put(self, key: str, fields: dict[Any, Any], first: bool) -> None:
        with self._cond:
            if self._closed:
                return
            self._queue.append((key, fields, first))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="lmstrix-pieces", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float = FLUSH_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._sending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=FLUSH_SECONDS)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                batch, self._queue = self._queue, []
                self._sending = True
            try:
                self._send(batch)
            finally:
                with self._cond:
                    self._sending = False
                    self._cond.notify_all()

    def _send(self, batch: list[tuple[str, dict[Any, Any], bool]]) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            for key, fields, first in batch:
                pipe.xadd(key, fields, maxlen=PIECES_MAXLEN, approximate=True)
                if first:
                    pipe.expire(key, PIECES_TTL_SECONDS)
            pipe.execute()
        except redis.RedisError as exc:
            now = time.monotonic()
            if now - self._warned_at > PUBLISH_WARN_EVERY:
                self._warned_at = now
                log.warning(
                    "streamed pieces not published (%s); readers get the answers from the jobs",
                    type(exc).__name__,
                )


def _decode(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> tuple[list[Piece], str | None]:
    pieces = []
    last = None
    for entry_id, data in entries:
        last = entry_id.decode()
        if b"f" in data:
            pieces.append(Piece(0, 0, final=True))
        else:
            pieces.append(
                Piece(int(data[b"a"]), int(data[b"s"]), data.get(b"t", b"").decode("utf-8"))
            )
    return pieces, last


class RedisPieces:
    """Pieces in a Redis stream per job (distributed mode)."""

    def __init__(self, url: str, client: redis.Redis | None = None) -> None:
        """``client``: a connection to share (no ``socket_timeout``: a blocking XREAD longer
        than it would fail)."""
        self.url = url
        self.redis = client or redis.Redis.from_url(
            url, socket_timeout=None, socket_connect_timeout=5
        )
        self._aredis: aredis.Redis | None = None
        self._publisher = _Publisher(self.redis)

    def writer(self, job_id: str, attempt: int) -> PieceWriter:
        return _RedisWriter(self._publisher, PIECES_KEY.format(job_id), attempt)

    def flush(self) -> None:
        """Wait until the pieces written so far were sent (or given up on)."""
        self._publisher.flush()

    def end(self, job_id: str) -> None:
        self.flush()
        try:
            pipe = self.redis.pipeline(transaction=False)
            self.end_in(pipe, job_id)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("could not close the stream of job %s (%s)", job_id, exc)

    @staticmethod
    def end_in(pipe: redis.client.Pipeline, job_id: str) -> None:
        """Queue the final marker on ``pipe``. Only a stream that exists gets one: jobs that
        streamed nothing leave no key behind (their readers see the row)."""
        key = PIECES_KEY.format(job_id)
        pipe.xadd(key, {"f": 1}, maxlen=PIECES_MAXLEN, approximate=True, nomkstream=True)
        pipe.expire(key, PIECES_TTL_SECONDS)

    def read(self, job_id: str, cursor: str, timeout: float) -> tuple[list[Piece], str]:
        block = int(timeout * 1000) if timeout > 0 else None
        if block == 0:
            block = 1  # XREAD BLOCK 0 would wait forever
        try:
            answer = self.redis.xread({PIECES_KEY.format(job_id): cursor}, block=block)
        except redis.RedisError as exc:
            raise PiecesUnavailableError(type(exc).__name__) from None
        return _entries(answer, cursor)

    async def read_async(self, job_id: str, cursor: str, timeout: float) -> tuple[list[Piece], str]:
        if self._aredis is None:
            import redis.asyncio as aredis  # only asyncio readers pay for it

            self._aredis = aredis.Redis.from_url(self.url, socket_timeout=None)
        block = max(int(timeout * 1000), 1) if timeout > 0 else None
        try:
            answer = await self._aredis.xread({PIECES_KEY.format(job_id): cursor}, block=block)
        except redis.RedisError as exc:
            raise PiecesUnavailableError(type(exc).__name__) from None
        return _entries(answer, cursor)

    def close(self) -> None:
        self._publisher.close()
        self.redis.close()

    async def aclose(self) -> None:
        if self._aredis is not None:
            await self._aredis.aclose()
            self._aredis = None


def _entries(answer: object, cursor: str) -> tuple[list[Piece], str]:
    if not answer:
        return [], cursor
    # [(key, [(entry_id, {field: value}), ...])]
    _, entries = answer[0]  # type: ignore[index]
    pieces, last = _decode(entries)
    return pieces, last or cursor


_local = LocalPieces()


def local_pieces() -> LocalPieces:
    """The process-wide in-process channel shared by embedded workers and readers."""
    return _local


__all__ = [
    "PIECES_KEY",
    "START",
    "LocalPieces",
    "PieceChannel",
    "PieceWriter",
    "PiecesUnavailableError",
    "RedisPieces",
    "local_pieces",
]
