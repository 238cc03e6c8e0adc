"""The distributed worker's side: what one doorbell message does in a dramatiq worker process.

On a doorbell the host's runner drains the queue, then lingers: it keeps listening on the host's
wake list (which every ring also pushes to) for a few seconds, so a host that is being used picks
up the next job within a Redis round trip instead of waiting for dramatiq's next poll. A doorbell
for work that is already done finds nothing and returns at once, without lingering: extra rings
are harmless, so ringers never need to know whether someone rang already. (While a worker
lingers, the rings of the jobs it picks up from the wake list still queue their dramatiq
messages; each of those later finds nothing and costs one look at the queue, not a linger.)
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from lmstrix.api.factory import client_for
from lmstrix.domain.enums import WorkerMode
from lmstrix.domain.errors import ConfigurationError, DatabaseUnavailableError
from lmstrix.jobs.doorbell import WAKE_KEY, RedisDoorbell, sanitize_host
from lmstrix.jobs.jobs_config import JobsConfig
from lmstrix.jobs.notify import RedisNotifier
from lmstrix.jobs.runner import JobRunner
from lmstrix.jobs.store import JobStore

log = logging.getLogger(__name__)

#: Draining again while the database is away: first and longest wait.
DRAIN_RETRY_FIRST = 0.2
DRAIN_RETRY_MOST = 2.0


class HostServer:
    """Serves one host in this process: one runner (so one model call at a time)."""

    def __init__(self, config: JobsConfig, host: str) -> None:
        redis_url = config.redis_url
        if not redis_url:
            raise ConfigurationError(
                "dramatiq workers need Redis: set LMSTRIX_REDIS_URL (or run `lmstrix worker` "
                "without Redis to drain the queue in embedded mode)",
                key="redis.url",
            )
        self.host = host
        self.settings = config.queue.for_host(config.host(host).max_parallel)
        self.store = JobStore(config.database_url)
        self.client = client_for(config.host(host), config.lmstudio)
        self.notifier = RedisNotifier(redis_url)
        self.doorbell = RedisDoorbell(redis_url)
        self._wake = redis.Redis.from_url(redis_url, socket_timeout=None)
        self.runner = JobRunner(
            self.store,
            host,
            self.client,
            self.notifier,
            settings=self.settings,
            mode=WorkerMode.DISTRIBUTED,
        )
        self._lock = threading.Lock()

    def serve(self) -> int:
        """Drain, then linger for more; returns how many jobs ran."""
        key = WAKE_KEY.format(sanitize_host(self.host))
        ran = 0
        with self._lock:
            while True:
                ran += self._drain()
                if self.settings.linger_seconds <= 0 or ran == 0:
                    return ran  # a doorbell for work already done: nothing to linger for
                try:
                    if self._wake.blpop([key], timeout=self.settings.linger_seconds) is None:
                        return ran
                except redis.RedisError as exc:  # Redis is away: stop lingering, not serving
                    log.warning("%s: stopped listening for wake-ups (%s)", self.host, exc)
                    return ran

    def _drain(self) -> int:
        """Drain; a database that is away (a PostgreSQL restart) is waited for, up to a lease,
        rather than dropping the doorbell: its jobs would otherwise wait for the reaper."""
        deadline = time.monotonic() + self.settings.lease_seconds
        delay = DRAIN_RETRY_FIRST
        while True:
            try:
                return self.runner.drain()
            except DatabaseUnavailableError as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning(
                    "%s: the database is away (%s); draining again in %.1fs", self.host, exc, delay
                )
                time.sleep(delay)
                delay = min(delay * 2, DRAIN_RETRY_MOST)

    def close(self) -> None:
        self.runner.close()
        self.client.close()
        self.notifier.close()
        self.doorbell.close()
        self._wake.close()
