"""Running several jobs of the loaded model at once, one per parallel slot of the host.

The runner's thread stays the only one that claims: it asks the scheduler for the next job
(only of the running model while jobs run, :func:`~lmstrix.domain.slots.choose_joining`), checks
that it may join the running ones (:func:`~lmstrix.domain.slots.admits`: same load, budgets,
context tests alone) and hands it to a thread of its own. Each job keeps its whole lifecycle:
its lease renewed and its cancel flag watched by the runner's lease keeper, its end stored and
its waiter told by its own thread, and a job claimed but not started handed back at once.

Loads stay one at a time (the runner's load lock) and happen only when nothing else runs here:
a job for another model is not claimed while jobs run; once they have ended it is, and its load
swaps the model. A job that could not join (another load size, over budget, a context test) is
handed back and waits, in its old place, until a running job ends.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lmstrix.db import JobKind
from lmstrix.domain.context import TokenCalibration
from lmstrix.domain.load_sizing import load_context_for
from lmstrix.domain.requests import inference_request
from lmstrix.domain.slots import SlotJob, admits
from lmstrix.jobs.store import ClaimedJob, JobView

if TYPE_CHECKING:
    from lmstrix.jobs.runner import JobRunner, Outcome

log = logging.getLogger(__name__)

#: How often the claiming thread looks again while it waits for a slot (a wake-up normally
#: comes first: every job end and every finished load notifies it).
WAIT_TICK = 0.5


def slot_job(job: ClaimedJob) -> SlotJob:
    """What admission needs to know of ``job``: its load, its token budget, whether it wants
    the host to itself."""
    if job.kind == JobKind.CONTEXT_TEST:
        return SlotJob(job.model, None, 0, 0, exclusive=True)
    try:
        req = inference_request(**job.request)
    except Exception:  # a bad request fails at once when it runs; it occupies nothing
        return SlotJob(job.model, load_context_for(None), 0, 0)
    text = req.prompt + (req.system_prompt or "")
    text += "".join(t.content for t in req.history or ())
    return SlotJob(
        job.model,
        load_context_for(req.context_length),
        TokenCalibration().estimate(text),
        req.max_tokens,
    )


@dataclass(slots=True)
class _Running:
    job: ClaimedJob
    need: SlotJob
    loaded: bool = False  # past its load: the host's slots are known


class SlotPool:
    """The slot threads of one runner (see the module)."""

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner
        self._cond = threading.Condition()
        self._running: dict[uuid.UUID, _Running] = {}
        self._ended = 0  # jobs ended so far (a wake-up for the claiming thread)
        self._fault: str | None = None  # why a job's failure suggests the host is down
        self._error: BaseException | None = None  # a slot could not store its job's end
        # The last claim found nothing to run (a job queued since then rang the doorbell, which
        # makes the worker drain again): once the running jobs end, the drain ends unclaimed.
        self._queue_seen_empty = False
        #: the highest number of jobs that ran here at once
        self.most_at_once = 0

    def close(self) -> None:
        self._wait(lambda: not self._running, None)

    # -- the claiming thread --------------------------------------------------------------

    def drain(self, should_continue: Callable[[], bool]) -> int:
        """Claim and run this host's queued jobs, up to a slot's worth at once, until none is
        left (or ``should_continue`` says stop); returns how many ended."""
        with self._cond:
            ended_before = self._ended
            self._fault = None
        self._queue_seen_empty = False  # a drain starts because something may be queued
        try:
            while self._fill(should_continue):
                pass
        finally:
            self._wait(lambda: not self._running, None)
        with self._cond:
            error, self._error = self._error, None
            ran = self._ended - ended_before
        if error is not None:
            raise error
        return ran

    def _fill(self, should_continue: Callable[[], bool]) -> bool:
        """Start one more job, or wait until one may start; False when the drain is over."""
        runner = self.runner
        with self._cond:
            busy, fault, error = bool(self._running), self._fault, self._error
            first_loading = busy and not any(r.loaded for r in self._running.values())
            full = busy and len(self._running) >= runner.slot_host().slots
            running_model = next(iter(self._running.values())).job.model if busy else None
            ended = self._ended
        if error is not None or not should_continue():
            return False
        if fault is not None:
            if busy:  # the host is looked at once the running jobs have ended
                self._wait(lambda: not self._running, None)
                return True
            self._fault = None
            return runner.host_check.host_answers(fault, should_continue)
        if first_loading or full:
            self._wait_for_change(ended)
            return True
        if not busy and self._queue_seen_empty:
            return False
        job, self._queue_seen_empty = runner._claim_or_empty(running_model)
        if job is None:
            if not busy:
                return False
            self._wait_for_change(ended)  # another model's turn, or nothing queued yet
            return True
        try:
            need = slot_job(job)
            with self._cond:
                running = [r.need for r in self._running.values()]
                ok = admits(running, need, runner.slot_host())
                if ok:
                    self._running[job.id] = _Running(job, need)
                    self.most_at_once = max(self.most_at_once, len(self._running))
            if not ok:
                runner.release_claim(job)
                self._wait_for_change(ended)
                return True
            threading.Thread(
                target=self._run, args=(job,), name=f"lmstrix-slot-{job.id}", daemon=True
            ).start()
        except BaseException:
            with self._cond:
                self._running.pop(job.id, None)
            runner.release_claim(job)
            raise
        return True

    def _wait_for_change(self, ended: int) -> None:
        """Until a job ends or passes its load (or the drain should look again)."""
        loaded = self._loaded_count()
        self._wait(lambda: self._ended != ended or self._loaded_count() != loaded, WAIT_TICK)

    def _loaded_count(self) -> int:
        return sum(1 for r in self._running.values() if r.loaded)

    def _wait(self, done: Callable[[], bool], timeout: float | None) -> None:
        with self._cond:
            if timeout is None:
                while not done():
                    self._cond.wait(WAIT_TICK)
            else:
                self._cond.wait_for(done, timeout)

    # -- one slot ------------------------------------------------------------------------

    def passed_load(self, job: ClaimedJob) -> None:
        """``job`` has its model loaded: the claiming thread may fill the other slots."""
        with self._cond:
            running = self._running.get(job.id)
            if running is not None and not running.loaded:
                running.loaded = True
                self._cond.notify_all()

    def _run(self, job: ClaimedJob) -> None:
        runner = self.runner
        runner.keeper.add(job)
        final: JobView | None = None
        outcome: Outcome | None = None
        try:
            outcome = runner._execute(job)
            final, _ = runner._store_end(job, outcome, None)
        except BaseException as exc:  # its end was not stored: back to the queue at once
            log.exception("job %s: its end could not be stored; handing it back", job.id)
            runner.release_claim(job)
            with self._cond:
                self._error = self._error or exc
        finally:
            runner.keeper.discard(job)
            runner.count_run()
            if outcome is not None:
                runner._notify_done(str(job.id), final)
            with self._cond:
                self._running.pop(job.id, None)
                self._ended += 1
                if outcome is not None and outcome.host_fault and self._fault is None:
                    self._fault = f"job {job.id} failed with {outcome.row['error_type']}"
                self._cond.notify_all()
