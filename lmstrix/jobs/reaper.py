"""Recovery from dead workers, independent of the broker.

Dramatiq on Redis returns a dead worker's message only after a heartbeat timeout *and* a random
maintenance pass, which for an idle per-host queue means many minutes. Our own
lease is exact: a running job whose lease was not renewed in time belonged to a worker that died,
so it goes back to ``queued`` (or fails for good after ``max_attempts`` claims) and its host's
doorbell rings. A job that was being cancelled, or whose interactive caller went away, is
cancelled instead: nobody wants it run again. Every host with queued jobs is rung too, which also
covers a lost doorbell.
"""

from __future__ import annotations

import logging
import threading

from lmstrix.domain.heartbeats import DEFAULT_WAITER_GRACE
from lmstrix.jobs.doorbell import Doorbell
from lmstrix.jobs.store import JobStore, ReapedJob

log = logging.getLogger(__name__)


def reap(
    store: JobStore,
    doorbell: Doorbell | None,
    *,
    ring_queued: bool = True,
    queued_for: float = 0.0,
    waiter_grace: float = DEFAULT_WAITER_GRACE,
) -> list[ReapedJob]:
    """Re-queue jobs whose lease expired and ring the hosts that have work; returns the reaped.
    ``waiter_grace``: the queue's, see :meth:`JobStore.reap_expired`."""
    reaped = store.reap_expired(waiter_grace)
    for job in reaped:
        if job.cancelled:
            log.warning("job %s on %s lost its worker and its caller; cancelled", job.id, job.host)
        elif job.requeued:
            log.warning("job %s on %s lost its worker; queued again", job.id, job.host)
        else:
            log.error("job %s on %s lost its worker too often; failed", job.id, job.host)
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
    """Reaps every ``interval`` seconds in the background (inside each dramatiq worker)."""

    def __init__(
        self,
        store: JobStore,
        doorbell: Doorbell | None,
        interval: float,
        waiter_grace: float = DEFAULT_WAITER_GRACE,
    ) -> None:
        self.store = store
        self.doorbell = doorbell
        self.interval = interval
        self.waiter_grace = waiter_grace
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lmstrix-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            try:
                # Only jobs queued for a whole interval count as "doorbell lost": a fresh job's
                # doorbell is still on its way.
                reap(
                    self.store,
                    self.doorbell,
                    queued_for=self.interval,
                    waiter_grace=self.waiter_grace,
                )
            except Exception:
                log.exception("reaper pass failed")
            if self._stop.wait(self.interval):
                return
