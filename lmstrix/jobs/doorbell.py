"""Ringing a host's doorbell: "there may be work for you", never the work itself.

A doorbell carries only the host name; the worker then chooses what to run from SQL, so extra
rings are harmless and a lost one is covered by the reaper, which rings every
host that has queued jobs. A ring Redis refuses is tried again for a few seconds (a Redis
restart); only then does the caller hear of it, and its job is failed rather than left queued
with nobody told.

Distributed: a dramatiq message to ``lmstudio.<host>`` (the durable trigger that starts an idle
worker), plus a push on a short Redis list ``lmstrix:wake:<host>`` that a worker still lingering
after its last job listens to, so a busy host picks up the next job in a Redis round trip instead
of dramatiq's poll interval. Embedded: a call into the in-process worker of that host.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import redis

from lmstrix.domain.errors import LMStrixError
from lmstrix.domain.urls import mask_url_password

log = logging.getLogger(__name__)

ACTOR_NAME = "doorbell"
#: A ring Redis refused is tried again for this long (a restart takes a second or two), with
#: waits growing from the first to the longest, before the caller hears of it.
RING_RETRY_SECONDS = 5.0
RING_RETRY_FIRST = 0.1
RING_RETRY_MOST = 1.0
WAKE_KEY = "lmstrix:wake:{}"
QUEUE_PREFIX = "lmstudio."


class BrokerUnavailableError(LMStrixError):
    """Redis (the doorbell) cannot be reached, so no worker would learn about a job."""

    raised_to_caller = True

    def __init__(self, redis_url: str, reason: str) -> None:
        where = mask_url_password(redis_url)
        super().__init__(
            f"cannot ring the worker through Redis at {where}: {reason}; start Redis "
            "(or unset LMSTRIX_REDIS_URL to run jobs in-process)",
            redis_url=where,
            reason=reason,
        )


def sanitize_host(name: str) -> str:
    """A host name as a dramatiq queue-name suffix (``[a-zA-Z0-9._-]``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def queue_name(host: str) -> str:
    return QUEUE_PREFIX + sanitize_host(host)


def worker_command(host: str) -> list[str]:
    """The command line of the distributed worker of ``host``: one dramatiq process with one
    thread on the host's queue alone, so that it is the only caller of that host."""
    return [
        sys.executable,
        "-m",
        "dramatiq",
        "lmstrix.workers",
        "--processes",
        "1",
        "--threads",
        "1",
        "--queues",
        queue_name(host),
    ]


class Doorbell(Protocol):
    def ring(self, host: str) -> None: ...


class LocalDoorbell:
    """Embedded mode: wake the in-process worker registered for the host."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: dict[str, Callable[[], None]] = {}

    def register(self, host: str, wake: Callable[[], None]) -> None:
        with self._lock:
            self._handlers[host] = wake

    def unregister(self, host: str) -> None:
        with self._lock:
            self._handlers.pop(host, None)

    def ring(self, host: str) -> None:
        with self._lock:
            wake = self._handlers.get(host)
        if wake is not None:
            wake()


class RedisDoorbell:
    """Distributed mode: a dramatiq message on the host's queue, plus the wake list."""

    def __init__(self, url: str, retry_for: float = RING_RETRY_SECONDS) -> None:
        """``retry_for``: how long a ring that Redis refused is tried again (a restart)."""
        from dramatiq.brokers.redis import RedisBroker

        self.url = url
        self.retry_for = retry_for
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        # Our own broker instance, not the global one: enqueueing to a queue by name needs no
        # declared actor here (the worker process has it), and the caller's process stays free
        # of dramatiq's global state.
        self._broker = RedisBroker(client=self._redis, middleware=[])  # type: ignore[no-untyped-call]

    def ring(self, host: str) -> None:
        import dramatiq

        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=queue_name(host),
            actor_name=ACTOR_NAME,
            args=(host,),
            kwargs={},
            options={},
        )
        deadline = time.monotonic() + self.retry_for
        delay = RING_RETRY_FIRST
        while True:
            try:
                self.wake(host)
                self._broker.enqueue(message)
                return
            except redis.RedisError as exc:
                if time.monotonic() + delay > deadline:
                    reason = str(exc) or type(exc).__name__
                    raise BrokerUnavailableError(self.url, reason) from exc
                log.warning("ringing %s failed (%s); trying again in %.1fs", host, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, RING_RETRY_MOST)

    def wake(self, host: str) -> None:
        """Only the wake-list push (the lingering worker's fast path)."""
        key = WAKE_KEY.format(sanitize_host(host))
        pipe = self._redis.pipeline(transaction=False)
        pipe.lpush(key, 1)
        pipe.ltrim(key, 0, 0)  # a flag, not a counter: one pending wake is enough
        pipe.expire(key, 60)
        pipe.execute()

    def close(self) -> None:
        self._redis.close()


_local = LocalDoorbell()


def local_doorbell() -> LocalDoorbell:
    return _local
