"""Recovery from dead workers, independent of the broker.

Dramatiq on Redis returns a dead worker's message only after a heartbeat timeout *and* a random
maintenance pass, which for an idle per-host queue means many minutes. Our own signals are
quicker: a worker beats on its ``workers`` row every two seconds, so a running job whose worker
went silent for a few beats belonged to a worker that died; a job whose lease expired too. It
goes back to ``queued`` (or fails for good after ``max_attempts`` claims) and its host's
doorbell rings. A job that was being cancelled, or whose interactive caller went away, is
cancelled instead: nobody wants it run again.

The reaper looks for silent workers every second (one indexed query), and every
``reaper_interval`` it also rings every host whose jobs have been queued that long, which covers
a doorbell that was lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from lmstrix.domain.heartbeats import (
    DEAD_WORKER_SWEEP_SECONDS,
    DEFAULT_WAITER_GRACE,
    WORKER_LIVE_WITHIN,
)
from lmstrix.jobs.doorbell import Doorbell
from lmstrix.jobs.store import JobStore, ReapedJob

log = logging.getLogger(__name__)


class SilenceTrust:
    """Whether a silent worker row means a dead worker. Not right after this reaper could not
    reach the database: then every worker's beats failed too, so each row looks silent until
    its worker beats again; the lease alone decides for a few beats after such an outage."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failed = False
        self._from = 0.0

    def worker_silent_for(self) -> float | None:
        """What to pass to :meth:`JobStore.reap_expired` now."""
        trusted = not self._failed and self._clock() >= self._from
        return WORKER_LIVE_WITHIN if trusted else None

    def failed(self) -> None:
        """A pass could not reach the database."""
        self._failed = True

    def succeeded(self) -> None:
        """A pass reached it: after a failure, silence counts again a few beats later."""
        if self._failed:
            self._failed = False
            self._from = self._clock() + WORKER_LIVE_WITHIN


def reap(
    store: JobStore,
    doorbell: Doorbell | None,
    *,
    ring_queued: bool = True,
    queued_for: float = 0.0,
    waiter_grace: float = DEFAULT_WAITER_GRACE,
    trust: SilenceTrust | None = None,
) -> list[ReapedJob]:
    """Re-queue jobs whose worker is gone and ring the hosts that have work; returns the reaped.
    ``waiter_grace``: the queue's, see :meth:`JobStore.reap_expired`; ``trust``: the caller's
    record of its own database outages (none: silent workers count as dead)."""
    silent_for = WORKER_LIVE_WITHIN if trust is None else trust.worker_silent_for()
    try:
        reaped = store.reap_expired(waiter_grace, silent_for)
    except Exception:
        if trust is not None:
            trust.failed()
        raise
    if trust is not None:
        trust.succeeded()
    for job in reaped:
        how = "its worker went silent" if job.noticed_by == "heartbeat" else "its lease expired"
        if job.cancelled:
            log.warning("job %s on %s: %s and its caller left; cancelled", job.id, job.host, how)
        elif job.requeued:
            log.warning("job %s on %s: %s; queued again", job.id, job.host, how)
        else:
            log.error("job %s on %s lost its worker too often (%s); failed", job.id, job.host, how)
    if doorbell is not None:
        hosts = {j.host for j in reaped if j.requeued}
        if ring_queued:
            hosts.update(store.hosts_with_queued(queued_for))
        for host in sorted(hosts):
            try:
                doorbell.ring(host)
            except Exception:
                log.exception("could not ring %s after reaping", host)
    return reaped


class ReaperThread:
    """Reaps in the background (inside each dramatiq worker): looks for silent workers every
    ``sweep`` seconds, and rings hosts with jobs queued for ``interval`` seconds that often."""

    def __init__(
        self,
        store: JobStore,
        doorbell: Doorbell | None,
        interval: float,
        waiter_grace: float = DEFAULT_WAITER_GRACE,
        sweep: float = DEAD_WORKER_SWEEP_SECONDS,
    ) -> None:
        self.store = store
        self.doorbell = doorbell
        self.interval = interval
        self.waiter_grace = waiter_grace
        self.sweep = min(sweep, interval)
        self.trust = SilenceTrust()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lmstrix-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        next_ring = time.monotonic()
        while True:
            ring_queued = time.monotonic() >= next_ring
            if ring_queued:
                next_ring = time.monotonic() + self.interval
            try:
                # Only jobs queued for a whole interval count as "doorbell lost": a fresh job's
                # doorbell is still on its way.
                reap(
                    self.store,
                    self.doorbell,
                    ring_queued=ring_queued,
                    queued_for=self.interval,
                    waiter_grace=self.waiter_grace,
                    trust=self.trust,
                )
            except Exception:
                log.exception("reaper pass failed")
            if self._stop.wait(self.sweep):
                return
