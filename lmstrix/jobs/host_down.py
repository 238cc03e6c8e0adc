"""A host found down: one probe, then its queued jobs wait for it together or fail together.

Why: when a host stops answering, every job queued behind the one that found out would otherwise
be sent in turn and wait out its own timeout (a hung host with ``lmstudio.timeout = 80`` failed
its queue after 80, 159, 238 s). So after a job failed for want of an answer, the worker asks
the host once, cheaply (any HTTP answer within the connect time); if it does not answer, the
host's queued jobs stay queued for ``queue.host_down_grace`` seconds while the host is probed
every second, then all fail in one transaction with :class:`HostDownError`. Jobs of a host that
comes back within the grace run as usual. None of them was sent, so none is doubled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from lmstrix.api.client import LMStudioClient
from lmstrix.domain.errors import (
    HostDownError,
    LMStrixError,
    LMStudioConnectionError,
    LMStudioServerError,
    LMStudioTimeoutError,
)
from lmstrix.domain.queue_settings import QueueSettings
from lmstrix.jobs.store import JobStore, JobView

log = logging.getLogger(__name__)

#: Seconds between probes of a host while its queued jobs wait for it.
PROBE_EVERY = 1.0


def suggests_host_down(exc: BaseException) -> bool:
    """Whether a job's failure says nothing about the job and may mean the host is gone: no
    connection, no answer in time, or the connection closed before an answer."""
    if isinstance(exc, LMStudioServerError):
        return exc.status is None
    return isinstance(exc, LMStudioConnectionError | LMStudioTimeoutError)


class HostDownCheck:
    """What a host's worker does after a job failed as :func:`suggests_host_down` says."""

    def __init__(
        self,
        store: JobStore,
        host: str,
        client: LMStudioClient,
        settings: QueueSettings,
        notify: Callable[[str, JobView], None],
    ) -> None:
        self.store = store
        self.host = host
        self.client = client
        self.settings = settings
        self.notify = notify
        self._closed = threading.Event()

    @property
    def probe_timeout(self) -> float:
        return min(self.client.connect_timeout, self.client.timeout)

    def host_answers(self, why: str, should_continue: Callable[[], bool]) -> bool:
        """True when the host answers (its queue goes on). Otherwise its queued jobs wait up to
        the grace period for it and, if it stays silent, all fail together; False then, or when
        the worker is stopping (the jobs stay queued for whoever serves the host next)."""
        if self.client.answers(self.probe_timeout):
            return True
        grace = self.settings.host_down_grace
        log.warning(
            "%s does not answer (%s); its queued jobs wait up to %gs for it", self.host, why, grace
        )
        until = time.monotonic() + grace
        while (left := until - time.monotonic()) > 0 and self._queued():
            if not should_continue() or self._closed.wait(min(PROBE_EVERY, left)):
                return False
            left = until - time.monotonic()
            if left > 0 and self.client.answers(min(self.probe_timeout, left)):
                log.warning("%s answers again; its queue goes on", self.host)
                return True
        if not should_continue():
            return False
        if time.monotonic() < until:
            # Nothing was queued to wait for the host: nothing to fail. A job that comes now
            # goes to the host and, if it is still down, starts its own check.
            return False
        self.fail_queued(why, grace)
        return False

    def fail_queued(self, why: str, grace: float) -> list[JobView]:
        """Fail every queued job of the host at once, each waiter told."""
        waited = f" nor during the {grace:g}s grace (queue.host_down_grace)" if grace else ""
        error: LMStrixError = HostDownError(
            self.client.base_url,
            f"it stopped answering ({why}), and a probe got no answer within "
            f"{self.probe_timeout:g}s{waited}",
            grace_seconds=grace,
        )
        ended = self.store.fail_queued(self.host, error.to_payload())
        if ended:
            log.error("%s is down: %d queued job(s) failed together", self.host, len(ended))
        for view in ended:
            self.notify(view.id, view)
        return ended

    def close(self) -> None:
        """Stop waiting for the host (the worker is closing)."""
        self._closed.set()

    def _queued(self) -> bool:
        return self.store.counts(self.host).get("queued", 0) > 0
