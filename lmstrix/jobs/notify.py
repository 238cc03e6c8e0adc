"""Done-notifications: how a waiter learns, without polling, that its job's row is final.

The row is the truth; a notification only says "look again now" (ARCHITECTURE.md rule 6).
Distributed: the worker commits, then pushes to the Redis list ``lmstrix:done:<job_id>``; the
waiter BLPOPs that key in short slices. A list, unlike pub/sub, keeps a push made before the waiter
arrived. Embedded: an in-process event per job. Either way the waiter re-reads the row after every
wake-up or slice, and the slices grow (polling with backoff) so a lost notification, or a worker in
another process without Redis, costs latency, never correctness.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis

DONE_KEY = "lmstrix:done:{}"
DONE_TTL_SECONDS = 3600
FIRST_SLICE = 0.02
MAX_SLICE = 1.0


class Notifier(Protocol):
    def notify_done(self, job_id: str, final: object | None = None) -> None:
        """Say the job's row is final (after the commit). ``final`` is the committed row, which
        an in-process waiter may use instead of reading it back."""
        ...

    def wait_done(self, job_id: str, timeout: float) -> bool:
        """Block until ``job_id`` is notified or ``timeout`` passes; True when notified."""
        ...


class LocalNotifier:
    """In-process notifications (embedded mode), with callbacks for asyncio waiters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}
        self._callbacks: dict[str, list[Callable[[], None]]] = {}
        self._finals: dict[str, object] = {}

    def _event(self, job_id: str) -> threading.Event:
        with self._lock:
            ev = self._events.get(job_id)
            if ev is None:
                ev = self._events[job_id] = threading.Event()
            return ev

    def notify_done(self, job_id: str, final: object | None = None) -> None:
        if final is not None:
            with self._lock:
                self._finals[job_id] = final
        self._event(job_id).set()
        with self._lock:
            callbacks = self._callbacks.pop(job_id, [])
        for cb in callbacks:
            cb()

    def wait_done(self, job_id: str, timeout: float) -> bool:
        return self._event(job_id).wait(timeout)

    def on_done(self, job_id: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the worker's thread) when ``job_id`` is notified."""
        with self._lock:
            ev = self._events.get(job_id)
            if ev is None or not ev.is_set():
                self._callbacks.setdefault(job_id, []).append(callback)
                return
        callback()

    def final(self, job_id: str) -> object | None:
        """The committed row the worker passed along, if any."""
        with self._lock:
            return self._finals.get(job_id)

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._finals.pop(job_id, None)
            self._events.pop(job_id, None)
            self._callbacks.pop(job_id, None)


class RedisNotifier:
    """Notifications through a Redis list key per job."""

    def __init__(self, url: str) -> None:
        self.url = url
        # No socket_timeout: a BLPOP longer than it would fail (queue notes §3).
        self._redis = redis.Redis.from_url(url, socket_timeout=None, socket_connect_timeout=5)

    def notify_done(self, job_id: str, final: object | None = None) -> None:
        key = DONE_KEY.format(job_id)
        pipe = self._redis.pipeline()
        pipe.lpush(key, 1)
        pipe.expire(key, DONE_TTL_SECONDS)
        pipe.execute()

    def wait_done(self, job_id: str, timeout: float) -> bool:
        if timeout <= 0:
            return bool(self._redis.lpop(DONE_KEY.format(job_id)))
        return self._redis.blpop([DONE_KEY.format(job_id)], timeout=timeout) is not None

    def close(self) -> None:
        self._redis.close()


class PollingNotifier:
    """No notifications at all: the waiter's growing slices are plain polling with backoff."""

    def notify_done(self, job_id: str, final: object | None = None) -> None:
        pass

    def wait_done(self, job_id: str, timeout: float) -> bool:
        time.sleep(max(timeout, 0.0))
        return False


_local = LocalNotifier()


def local_notifier() -> LocalNotifier:
    """The process-wide in-process notifier shared by embedded workers and waiters."""
    return _local


def wait_until_final(
    is_final: Callable[[], bool],
    wait_slice: Callable[[float], bool],
    deadline: float,
    *,
    first_slice: float = FIRST_SLICE,
    max_slice: float = MAX_SLICE,
) -> bool:
    """Check, wait a slice, check again, until ``is_final()`` or the monotonic ``deadline``.

    Returns whether the row became final. Slices double while no notification comes (backoff),
    and reset after one did, since a notification means things are moving.
    """
    slice_ = first_slice
    while True:
        if is_final():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        notified = wait_slice(min(slice_, remaining))
        slice_ = first_slice if notified else min(slice_ * 2, max_slice)
