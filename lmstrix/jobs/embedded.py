"""Embedded mode: one worker thread per host inside the calling process (no Redis needed).

The thread runs the same :class:`JobRunner` as a dramatiq worker; the doorbell is an in-process
wake-up and the done-notification an in-process event. While it holds its host it also reaps, so
jobs left ``running`` by a process that died are picked up again seconds later (their worker's
row in the workers table went silent).

At most one embedded worker per (database, host) runs in a process, however many
``InferenceManager`` objects exist: a host must see one caller at a time, or two callers would
swap models under each other. Across processes the host lock (``db.host_lock``) does the same:
only the process holding it runs the host's jobs, including those other processes queued, and
the others take over when it exits or dies.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable

from lmstrix.api.client import LMStudioClient
from lmstrix.db.host_lock import host_lock_for
from lmstrix.domain.heartbeats import DEAD_WORKER_SWEEP_SECONDS
from lmstrix.domain.queue_settings import QueueSettings
from lmstrix.jobs.doorbell import Doorbell, local_doorbell
from lmstrix.jobs.notify import Notifier, local_notifier
from lmstrix.jobs.reaper import SilenceTrust, reap
from lmstrix.jobs.runner import JobRunner
from lmstrix.jobs.store import JobStore

log = logging.getLogger(__name__)

#: How often the process that runs a host looks for jobs queued by other processes.
HELD_POLL_SECONDS = 1.0
#: How often a process whose host another one runs asks whether it may take over.
LOCK_RETRY_SECONDS = 0.5


class EmbeddedWorker:
    """A daemon thread draining one host's queue whenever its doorbell rings."""

    def __init__(
        self,
        store: JobStore,
        host: str,
        client_factory: Callable[[], LMStudioClient],
        *,
        settings: QueueSettings,
        notifier: Notifier | None = None,
        doorbell: Doorbell | None = None,
    ) -> None:
        self.store = store
        self.host = host
        self.settings = settings
        self.notifier = notifier or local_notifier()
        self.doorbell = doorbell or local_doorbell()
        self._client_factory = client_factory
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"lmstrix-worker-{host}", daemon=True
        )
        self.runner: JobRunner | None = None
        self.lock = host_lock_for(store.url, host)

    def start(self) -> None:
        local_doorbell().register(self.host, self.wake)
        self._thread.start()
        self.wake()  # drain whatever was queued before we started

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        local_doorbell().unregister(self.host)
        self._stopped.set()
        self._wake.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        client = self._client_factory()
        self.runner = JobRunner(
            self.store, self.host, client, self.notifier, settings=self.settings
        )
        next_reap = next_ring = time.monotonic()
        trust = SilenceTrust()
        # While this process holds the host it also looks for jobs other processes queued (they
        # cannot ring an in-process doorbell); while another holds it, it asks again soon.
        held_poll = min(self.settings.reap_every, HELD_POLL_SECONDS)
        try:
            while not self._stopped.is_set():
                self._wake.wait(held_poll if self.lock.held else LOCK_RETRY_SECONDS)
                self._wake.clear()
                if self._stopped.is_set():
                    break
                try:
                    had_it = self.lock.held
                    if not self.lock.try_acquire():
                        continue  # another process runs this host; its worker takes our jobs
                    if not had_it:
                        # Another process may have loaded and unloaded models here meanwhile.
                        self.runner.forget_loaded()
                    now = time.monotonic()
                    if not had_it or now >= next_reap:
                        # A job of a process that died holding the host runs again within
                        # seconds: its worker's row goes silent (or its lease runs out).
                        ring_queued = now >= next_ring
                        reap(
                            self.store,
                            self.doorbell,
                            ring_queued=ring_queued,
                            waiter_grace=self.settings.waiter_grace,
                            trust=trust,
                        )
                        next_reap = now + DEAD_WORKER_SWEEP_SECONDS
                        if ring_queued:
                            next_ring = now + self.settings.reap_every
                    self.runner.drain(lambda: not self._stopped.is_set())
                except Exception:  # the database went away for a moment: keep the thread
                    log.exception("embedded worker for %s: drain failed", self.host)
                    self._stopped.wait(1.0)
                    self._wake.set()
        finally:
            self.runner.close()
            client.close()
            self.lock.release()


_lock = threading.Lock()
_workers: dict[tuple[str, str], EmbeddedWorker] = {}
_exit_hook = False

#: At interpreter exit a worker claims nothing more and gets this long to end the job it runs
#: (often another process's: this one held the host), instead of dying with it mid-answer.
EXIT_GRACE_SECONDS = 10.0


def ensure_worker(
    store: JobStore,
    host: str,
    client_factory: Callable[[], LMStudioClient],
    settings: QueueSettings,
) -> EmbeddedWorker:
    """The process's embedded worker for (database, host), started on first use."""
    global _exit_hook
    key = (store.url, host)
    with _lock:
        worker = _workers.get(key)
        if worker is None or not worker.alive:
            worker = EmbeddedWorker(store, host, client_factory, settings=settings)
            _workers[key] = worker
            worker.start()
        if not _exit_hook:
            atexit.register(stop_all, EXIT_GRACE_SECONDS)
            _exit_hook = True
    return worker


def serving(store: JobStore, host: str) -> bool:
    """Whether this process runs a live embedded worker for (database, host)."""
    with _lock:
        worker = _workers.get((store.url, host))
    return worker is not None and worker.alive


def stop_all(timeout: float = 10.0) -> None:
    """Stop every embedded worker of this process (tests, interpreter shutdown)."""
    with _lock:
        workers = list(_workers.values())
        _workers.clear()
    for w in workers:
        w.stop(timeout)
