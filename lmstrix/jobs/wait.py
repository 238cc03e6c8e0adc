"""Waiting for a job's row to be final: one loop, with a blocking and an awaitable entry point.

The waiter looks at the row, waits a slice for the done-notification, and looks again, until the
row is final or the deadline passes; then the job is cancelled (unless the caller keeps it
running) and :class:`InferenceTimeoutError` raised. Slices double while no notification comes
(polling with backoff, so a lost notification costs latency, never correctness) and start small
again after one did, since a notification means things are moving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from lmstrix.db import JobStatus
from lmstrix.domain.errors import InferenceTimeoutError
from lmstrix.jobs.notify import Notifier
from lmstrix.jobs.store import JobStore, JobView

FIRST_SLICE = 0.02
MAX_SLICE = 1.0
FOREVER = 10.0**9

#: Called after every look at the row (a live view reads what it shows there). When the look
#: found the row final, everything the job wrote is final too: the row is written last.
OnLook = Callable[[], None]


@dataclass(slots=True)
class _Slices:
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


#: The slice schedule, for other loops that wait on a job in slices (following its pieces).
Slices = _Slices


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
    slices = _Slices(first_slice, max_slice)
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
    slices = _Slices(first_slice, max_slice)
    while not await is_final():
        seconds = slices.next(deadline)
        if seconds is None:
            return False
        slices.after(await wait_slice(seconds))
    return True


class _Looks:
    """One waiter's looks at one job's row, and the latest row seen.

    A row the worker handed over with its notification needs no read. Otherwise the first look
    reads only the status (a job is rarely done that soon), or nothing at all when the notifier
    hands rows over: its notifications are never lost, so none yet means not done yet (and a read
    would only compete with the worker thread for the GIL).
    """

    def __init__(self, store: JobStore, notifier: Notifier, job_id: str) -> None:
        self.store = store
        self.notifier = notifier
        self.job_id = job_id
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
        return self.count > 1 or not self.notifier.hands_over_rows

    def read(self) -> bool:
        """Read the row; True when it is final."""
        if self.count == 1 and not JobStatus(self.store.status(self.job_id)).finished:
            return False
        self.last = self.store.get(self.job_id)
        return self.last.finished

    def give_up(self, started: float, cancel: bool) -> InferenceTimeoutError:
        """Cancel the job if asked, and the error that says where it now stands."""
        waited = time.monotonic() - started
        store = self.store
        status = store.cancel(self.job_id).status if cancel else store.status(self.job_id)
        model = self.last.model if self.last is not None else None
        return InferenceTimeoutError(
            self.job_id, waited, model_id=model, cancelled=cancel, status=status
        )


def wait_for_job(
    store: JobStore,
    notifier: Notifier,
    job_id: str,
    timeout: float | None,
    *,
    cancel_on_timeout: bool = True,
    on_look: OnLook | None = None,
    max_slice: float = MAX_SLICE,
) -> JobView:
    """Block until the job's row is final (``timeout`` None: no limit) and return it."""
    started = time.monotonic()
    deadline = started + (FOREVER if timeout is None else timeout)
    looks = _Looks(store, notifier, job_id)

    def is_final() -> bool:
        final = looks.handed() or (looks.needs_read and looks.read())
        if on_look is not None:
            on_look()
        return final

    try:
        done = wait_until_final(
            is_final, lambda t: notifier.wait_done(job_id, t), deadline, max_slice=max_slice
        )
    finally:
        notifier.forget(job_id)
    if done and looks.last is not None:
        return looks.last
    raise looks.give_up(started, cancel_on_timeout)


async def await_job(
    store: JobStore,
    notifier: Notifier,
    job_id: str,
    timeout: float | None,
    *,
    cancel_on_timeout: bool = True,
) -> JobView:
    """:func:`wait_for_job` for asyncio callers: database reads run in a thread, the waits
    between them hold none."""
    started = time.monotonic()
    deadline = started + (FOREVER if timeout is None else timeout)
    looks = _Looks(store, notifier, job_id)

    async def is_final() -> bool:
        return looks.handed() or (looks.needs_read and await asyncio.to_thread(looks.read))

    try:
        done = await await_until_final(
            is_final, lambda t: notifier.wait_done_async(job_id, t), deadline
        )
    finally:
        notifier.forget(job_id)
    if done and looks.last is not None:
        return looks.last
    raise await asyncio.to_thread(looks.give_up, started, cancel_on_timeout)
