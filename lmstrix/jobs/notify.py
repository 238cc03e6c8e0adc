"""Done-notifications: how a waiter learns, without polling, that its job's row is final.

The row is the truth; a notification only says "look again now".
Distributed: the worker commits, then pushes to the Redis list ``lmstrix:done:<job_id>``; the
waiter BLPOPs that key in short slices. A list, unlike pub/sub, keeps a push made before the waiter
arrived. Embedded: an in-process event per job. Either way the waiter re-reads the row after every
wake-up or slice, and the slices grow (polling with backoff) so a lost notification, or a worker in
another process without Redis, costs latency, never correctness.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import redis

from lmstrix.domain.urls import mask_url_password
from lmstrix.jobs.pieces import PieceChannel, RedisPieces, local_pieces

if TYPE_CHECKING:
    import redis.asyncio as aredis

    from lmstrix.jobs.store import JobView

log = logging.getLogger(__name__)

DONE_KEY = "lmstrix:done:{}"
DONE_TTL_SECONDS = 3600
#: A waiter that finds Redis down says so once per this many seconds, not once per slice.
UNAVAILABLE_WARN_EVERY = 30.0


class Notifier(Protocol):
    """Everything a worker and a waiter do with done-notifications; each kind does all of it, so
    neither side ever asks which kind it holds."""

    #: True when the worker's committed row comes with the notification (in-process only). Such
    #: notifications are never lost, so a waiter's first look, with nothing handed over yet, knows
    #: the job is not done without reading the row.
    hands_over_rows: bool

    #: Where the worker publishes a job's streamed pieces and readers follow them.
    pieces: PieceChannel

    def notify_done(self, job_id: str, final: JobView | None = None) -> None:
        """Say the job's row is final (after the commit), to its waiter and to the readers of
        its pieces. ``final`` is the committed row, which an in-process waiter may use instead
        of reading it back."""
        ...

    def wait_done(self, job_id: str, timeout: float) -> bool:
        """Block until ``job_id`` is notified or ``timeout`` passes; True when notified."""
        ...

    async def wait_done_async(self, job_id: str, timeout: float) -> bool:
        """:meth:`wait_done` for an asyncio waiter: holds no thread while it waits."""
        ...

    def handed_over(self, job_id: str) -> JobView | None:
        """The committed row the worker passed along with its notification, if any."""
        ...

    def forget(self, job_id: str) -> None:
        """The waiter is done with ``job_id``: drop whatever is kept for it."""
        ...

    def close(self) -> None: ...

    async def aclose(self) -> None:
        """Close what :meth:`wait_done_async` opened (it belongs to the caller's event loop)."""
        ...


class LocalNotifier:
    """In-process notifications (embedded mode): an event per job, the row handed over with it."""

    hands_over_rows = True

    def __init__(self) -> None:
        self.pieces: PieceChannel = local_pieces()
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}
        self._callbacks: dict[str, list[Callable[[], None]]] = {}
        self._finals: dict[str, JobView] = {}

    def _event(self, job_id: str) -> threading.Event:
        with self._lock:
            ev = self._events.get(job_id)
            if ev is None:
                ev = self._events[job_id] = threading.Event()
            return ev

    def notify_done(self, job_id: str, final: JobView | None = None) -> None:
        if final is not None:
            with self._lock:
                self._finals[job_id] = final
        self._event(job_id).set()
        self.pieces.end(job_id)
        with self._lock:
            callbacks = self._callbacks.pop(job_id, [])
        for cb in callbacks:
            cb()

    def wait_done(self, job_id: str, timeout: float) -> bool:
        return self._event(job_id).wait(timeout)

    async def wait_done_async(self, job_id: str, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not fut.done():
                fut.set_result(None)

        def done() -> None:  # called from the worker's thread
            if not loop.is_closed():
                loop.call_soon_threadsafe(settle)

        self._on_done(job_id, done)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._drop_callback(job_id, done)

    def _on_done(self, job_id: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` when ``job_id`` is notified (at once if it already was)."""
        with self._lock:
            ev = self._events.get(job_id)
            if ev is None or not ev.is_set():
                self._callbacks.setdefault(job_id, []).append(callback)
                return
        callback()

    def _drop_callback(self, job_id: str, callback: Callable[[], None]) -> None:
        with self._lock:
            callbacks = self._callbacks.get(job_id, [])
            if callback in callbacks:
                callbacks.remove(callback)

    def handed_over(self, job_id: str) -> JobView | None:
        with self._lock:
            return self._finals.get(job_id)

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._finals.pop(job_id, None)
            self._events.pop(job_id, None)
            self._callbacks.pop(job_id, None)

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class RedisNotifier:
    """Notifications through a Redis list key per job."""

    hands_over_rows = False

    def __init__(self, url: str) -> None:
        self.url = url
        # No socket_timeout: a BLPOP longer than it would fail.
        self._redis = redis.Redis.from_url(url, socket_timeout=None, socket_connect_timeout=5)
        self._aredis: aredis.Redis | None = None
        self._pieces = RedisPieces(url, self._redis)
        self._warned_at = -UNAVAILABLE_WARN_EVERY
        self.pieces: PieceChannel = self._pieces

    def notify_done(self, job_id: str, final: JobView | None = None) -> None:
        key = DONE_KEY.format(job_id)
        self._pieces.flush()  # the final marker comes after the job's last piece
        pipe = self._redis.pipeline()
        pipe.lpush(key, 1)
        pipe.expire(key, DONE_TTL_SECONDS)
        self._pieces.end_in(pipe, job_id)
        pipe.execute()

    # A waiter rides out a Redis outage: the slice passes without a notification, and the
    # waiter's next look at the row (in SQL, the truth) tells it what it needs.

    def wait_done(self, job_id: str, timeout: float) -> bool:
        try:
            if timeout <= 0:
                return bool(self._redis.lpop(DONE_KEY.format(job_id)))
            return self._redis.blpop([DONE_KEY.format(job_id)], timeout=timeout) is not None
        except redis.RedisError as exc:
            self._unavailable(exc)
            time.sleep(max(timeout, 0.0))
            return False

    async def wait_done_async(self, job_id: str, timeout: float) -> bool:
        if self._aredis is None:
            import redis.asyncio as aredis  # only asyncio waiters pay for it

            self._aredis = aredis.Redis.from_url(self.url, socket_timeout=None)
        key = DONE_KEY.format(job_id)
        try:
            if timeout <= 0:
                return bool(await self._aredis.lpop(key))
            return await self._aredis.blpop([key], timeout=timeout) is not None
        except redis.RedisError as exc:
            self._unavailable(exc)
            await asyncio.sleep(max(timeout, 0.0))
            return False

    def _unavailable(self, exc: redis.RedisError) -> None:
        now = time.monotonic()
        if now - self._warned_at > UNAVAILABLE_WARN_EVERY:
            self._warned_at = now
            log.warning(
                "Redis at %s does not answer (%s); waiting on the database alone",
                mask_url_password(self.url),
                type(exc).__name__,
            )

    def handed_over(self, job_id: str) -> JobView | None:
        return None

    def forget(self, job_id: str) -> None:
        pass

    def close(self) -> None:
        self._pieces.close()

    async def aclose(self) -> None:
        await self._pieces.aclose()
        if self._aredis is not None:
            await self._aredis.aclose()
            self._aredis = None


_local = LocalNotifier()


def local_notifier() -> LocalNotifier:
    """The process-wide in-process notifier shared by embedded workers and waiters."""
    return _local
