"""Waiting for a job's row to be final: one loop, with a blocking and an awaitable entry point.

The waiter looks at the row, waits a slice for the done-notification, and looks again, until the
row is final or the deadline passes; then the job is cancelled (unless the caller keeps it
running) and :class:`InferenceTimeoutError` raised. Slices double while no notification comes
(polling with backoff, so a lost notification costs latency, never correctness) and start small
again after one did, since a notification means things are moving.

An interactive caller *owns* its job (``owned=True``): while it waits it beats on the row
(:class:`WaiterBeat`), and whatever ends its wait early (Ctrl-C, a cancelled task, any exception)
cancels the job before it propagates; if the caller dies instead, its beats stop and the queue
cancels the job after ``waiter_grace`` (see :mod:`lmstrix.domain.heartbeats`). A job still queued
after a couple of seconds on a host that no live worker serves gets the caller one warning
naming the command that starts a worker (:class:`NoWorkerWatch`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from lmstrix.db import JobStatus
from lmstrix.domain.errors import DatabaseUnavailableError, InferenceTimeoutError
from lmstrix.domain.heartbeats import NO_WORKER_NOTICE_AFTER, WAITER_BEAT_SECONDS, no_worker_hint
from lmstrix.jobs.notify import Notifier
from lmstrix.jobs.store import JobStore, JobView

log = logging.getLogger(__name__)

FIRST_SLICE = 0.02
MAX_SLICE = 1.0
FOREVER = 10.0**9
#: How long an interrupted owner waits for its in-process worker to stop the job (at its next
#: chunk), so the row is final before the process exits.
CANCEL_SETTLE_SECONDS = 3.0

#: Whether some live worker serves a host (the no-worker notice asks it).
Served = Callable[[str], bool]

#: Called after every look at the row (a live view reads what it shows there). When the look
#: found the row final, everything the job wrote is final too: the row is written last.
OnLook = Callable[[], None]


@dataclass(slots=True)
class Slices:
    """How long the next wait for a notification lasts."""

    first: float
    most: float
    current: float = field(init=False)

    def __post_init__(self) -> None:
        self.current = self.first

    def next(self, deadline: float) -> float | None:
        """The next slice, cut at the monotonic ``deadline``; None once it has passed."""
        remaining = deadline - time.monotonic()
        return None if remaining <= 0 else min(self.current, remaining)

    def after(self, notified: bool) -> None:
        self.current = self.first if notified else min(self.current * 2, self.most)


def wait_until_final(
    is_final: Callable[[], bool],
    wait_slice: Callable[[float], bool],
    deadline: float,
    *,
    first_slice: float = FIRST_SLICE,
    max_slice: float = MAX_SLICE,
) -> bool:
    """Check, wait a slice, check again, until ``is_final()`` or the monotonic ``deadline``;
    returns whether the row became final."""
    slices = Slices(first_slice, max_slice)
    while not is_final():
        seconds = slices.next(deadline)
        if seconds is None:
            return False
        slices.after(wait_slice(seconds))
    return True


async def await_until_final(
    is_final: Callable[[], Awaitable[bool]],
    wait_slice: Callable[[float], Awaitable[bool]],
    deadline: float,
    *,
    first_slice: float = FIRST_SLICE,
    max_slice: float = MAX_SLICE,
) -> bool:
    """The awaitable twin of :func:`wait_until_final`."""
    slices = Slices(first_slice, max_slice)
    while not await is_final():
        seconds = slices.next(deadline)
        if seconds is None:
            return False
        slices.after(await wait_slice(seconds))
    return True


class WaiterBeat:
    """A waiting caller's heartbeat on its job's row (``waiter_seen_at``).

    :meth:`beat` touches the row at most every ``interval`` seconds (the first time one interval
    after creation: submitting with ``waiter=True`` has just written it), so calls that end
    sooner never pay for it. It never raises: a database hiccup is logged and the next beat tries
    again, well within the queue's ``waiter_grace``.
    """

    def __init__(self, store: JobStore, job_id: str, interval: float = WAITER_BEAT_SECONDS) -> None:
        self.store = store
        self.job_id = job_id
        self.interval = interval
        self._next = time.monotonic() + interval

    @property
    def due(self) -> bool:
        """Whether :meth:`beat` would touch the row now."""
        return time.monotonic() >= self._next

    def beat(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval
        try:
            self.store.touch_waiter(self.job_id)
        except Exception:
            log.warning(
                "job %s: could not mark its caller as still waiting; trying again in %ss",
                self.job_id,
                self.interval,
                exc_info=True,
            )


class NoWorkerWatch:
    """Warns a caller, once, that its job sits queued on a host no live worker serves.

    Asked after every look at the row; it asks ``served`` at most every ``after`` seconds, from
    ``after`` seconds into the wait on, and only while the job is still queued. ``hint`` is the
    warning once given (the timeout error repeats it).
    """

    def __init__(self, served: Served, job_id: str, after: float = NO_WORKER_NOTICE_AFTER) -> None:
        self.served = served
        self.job_id = job_id
        self.after = after
        self.hint: str | None = None
        self._next = time.monotonic() + after

    @property
    def due(self) -> bool:
        return self.hint is None and time.monotonic() >= self._next

    def look(self, row: JobView | None) -> None:
        if not self.due or row is None or row.status != JobStatus.QUEUED.value:
            return
        self._next = time.monotonic() + self.after
        try:
            served = self.served(row.host)
        except Exception:  # a hint is not worth failing the wait over
            log.debug("could not look for workers of %s", row.host, exc_info=True)
            return
        if not served:
            self.hint = no_worker_hint(row.host)
            log.warning("job %s is queued: %s", self.job_id, self.hint)


class _Outage:
    """A waiter's looks at the row while the database is away: not final yet, said once. The
    waiter goes on until its deadline; the give-up then meets the outage itself, if it lasts,
    as a :class:`DatabaseUnavailableError`."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.warned = False

    def ride(self, read: Callable[[], bool]) -> bool:
        try:
            final = read()
        except DatabaseUnavailableError as exc:
            if not self.warned:
                self.warned = True
                log.warning("job %s: %s; still waiting", self.job_id, exc)
            return False
        if self.warned:
            self.warned = False
            log.info("job %s: the database answers again", self.job_id)
        return final


class _Looks:
    """One waiter's looks at one job's row, and the latest row seen.

    A row the worker handed over with its notification needs no read. Otherwise the first look
    reads only the status (a job is rarely done that soon), or nothing at all when the notifier
    hands rows over: its notifications are never lost, so none yet means not done yet (and a read
    would only compete with the worker thread for the GIL). Nor is anything read at the first
    look at a job its caller ``fresh``-ly queued to wait for: it was queued just now, and should
    it be done already, its notification is waiting for the next look.
    """

    def __init__(
        self, store: JobStore, notifier: Notifier, job_id: str, *, fresh: bool = False
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.job_id = job_id
        self.fresh = fresh
        self.count = 0
        self.last: JobView | None = None

    def handed(self) -> bool:
        """Count a look; True when the worker handed over the final row."""
        self.count += 1
        handed = self.notifier.handed_over(self.job_id)
        if handed is not None and handed.finished:
            self.last = handed
            return True
        return False

    @property
    def needs_read(self) -> bool:
        return self.count > 1 or not (self.notifier.hands_over_rows or self.fresh)

    def read(self) -> bool:
        """Read the row; True when it is final."""
        if self.count == 1 and not JobStatus(self.store.status(self.job_id)).finished:
            return False
        self.last = self.store.get(self.job_id)
        return self.last.finished

    def give_up(
        self, started: float, cancel: bool, hint: str | None = None
    ) -> InferenceTimeoutError:
        """Cancel the job if asked, and the error that says where it now stands."""
        waited = time.monotonic() - started
        store = self.store
        status = store.cancel(self.job_id).status if cancel else store.status(self.job_id)
        model = self.last.model if self.last is not None else None
        return InferenceTimeoutError(
            self.job_id, waited, model_id=model, cancelled=cancel, status=status, hint=hint
        )


def cancel_owned(store: JobStore, job_id: str) -> JobView | None:
    """Cancel the job of an owner whose wait ended early (it is on its way out: never raise)."""
    try:
        view = store.cancel(job_id)
    except Exception:
        log.warning("job %s: could not cancel it after its caller stopped waiting", job_id)
        return None
    log.info("job %s: its caller stopped waiting; cancelled (%s)", job_id, view.status)
    return view


def _settle(store: JobStore, notifier: Notifier, job_id: str, view: JobView | None) -> None:
    """Give an in-process worker a moment to stop the cancelled job at its next chunk, so the
    row is final before an interrupted process exits (a worker elsewhere needs no waiting for)."""
    if view is None or view.finished or not notifier.hands_over_rows:
        return
    deadline = time.monotonic() + CANCEL_SETTLE_SECONDS
    try:
        wait_until_final(
            lambda: JobStatus(store.status(job_id)).finished,
            lambda t: notifier.wait_done(job_id, t),
            deadline,
        )
    except Exception:
        log.debug("job %s: could not see it stop", job_id, exc_info=True)


def abandon_owned(store: JobStore, notifier: Notifier, job_id: str) -> None:
    """The owner of ``job_id`` stops early: cancel the job, and let an in-process worker end it
    before the owner's process may exit. Never raises."""
    _settle(store, notifier, job_id, cancel_owned(store, job_id))


def wait_for_job(
    store: JobStore,
    notifier: Notifier,
    job_id: str,
    timeout: float | None,
    *,
    cancel_on_timeout: bool = True,
    on_look: OnLook | None = None,
    max_slice: float = MAX_SLICE,
    owned: bool = False,
    served: Served | None = None,
) -> JobView:
    """Block until the job's row is final (``timeout`` None: no limit) and return it.

    ``owned``: this caller's job lives only while it waits: it beats on the row, and a wait that
    ends early (Ctrl-C, any exception, the timeout) cancels the job. ``served``: whether a host
    has a live worker; with it, a job left queued on a host nobody serves gets one warning."""
    started = time.monotonic()
    deadline = started + (FOREVER if timeout is None else timeout)
    looks = _Looks(store, notifier, job_id, fresh=owned)
    outage = _Outage(job_id)
    beat = WaiterBeat(store, job_id) if owned else None
    watch = NoWorkerWatch(served, job_id) if served is not None else None

    def is_final() -> bool:
        final = looks.handed() or (looks.needs_read and outage.ride(looks.read))
        if not final:
            if beat is not None:
                beat.beat()
            if watch is not None:
                watch.look(looks.last)
        if on_look is not None:
            on_look()
        return final

    try:
        done = wait_until_final(
            is_final, lambda t: notifier.wait_done(job_id, t), deadline, max_slice=max_slice
        )
    except BaseException:
        if owned:
            abandon_owned(store, notifier, job_id)
        raise
    finally:
        notifier.forget(job_id)
    if done and looks.last is not None:
        return looks.last
    raise looks.give_up(started, cancel_on_timeout or owned, watch.hint if watch else None)


async def await_job(
    store: JobStore,
    notifier: Notifier,
    job_id: str,
    timeout: float | None,
    *,
    cancel_on_timeout: bool = True,
    owned: bool = False,
    served: Served | None = None,
) -> JobView:
    """:func:`wait_for_job` for asyncio callers: database reads run in a thread, the waits
    between them hold none. ``owned``: a cancelled task (or any exception) cancels the job."""
    started = time.monotonic()
    deadline = started + (FOREVER if timeout is None else timeout)
    looks = _Looks(store, notifier, job_id, fresh=owned)
    outage = _Outage(job_id)
    beat = WaiterBeat(store, job_id) if owned else None
    watch = NoWorkerWatch(served, job_id) if served is not None else None

    async def is_final() -> bool:
        final = looks.handed() or (
            looks.needs_read and await asyncio.to_thread(outage.ride, looks.read)
        )
        if not final:
            if beat is not None and beat.due:
                await asyncio.to_thread(beat.beat)
            if watch is not None and watch.due:
                await asyncio.to_thread(watch.look, looks.last)
        return final

    try:
        done = await await_until_final(
            is_final, lambda t: notifier.wait_done_async(job_id, t), deadline
        )
    except BaseException:
        if owned:
            # Not in a thread: the task is being cancelled, and the cancel must happen.
            cancel_owned(store, job_id)
        raise
    finally:
        notifier.forget(job_id)
    if done and looks.last is not None:
        return looks.last
    hint = watch.hint if watch else None
    raise await asyncio.to_thread(looks.give_up, started, cancel_on_timeout or owned, hint)
