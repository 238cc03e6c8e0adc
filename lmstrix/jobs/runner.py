"""Running jobs on one host: claim (scheduler policy), load, generate, store, notify.

One ``JobRunner`` per host and process, used by one thread at a time: it is the only code that
loads, unloads or calls models on its host, so it can remember what it loaded and skip
the load call when the next job wants the same model at the same size.

Both modes call :meth:`JobRunner.drain`; only what calls it differs (a dramatiq doorbell, or the
embedded worker thread).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmstrix.api.client import LMStudioClient
from lmstrix.db import JobKind, JobStatus
from lmstrix.domain.budget import empty_answer_overflow
from lmstrix.domain.context import TokenCalibration
from lmstrix.domain.enums import WorkerMode
from lmstrix.domain.errors import (
    DatabaseUnavailableError,
    ErrorPayload,
    InferenceError,
    JobDeadlineError,
    LMStrixError,
    LMStudioConnectionError,
    LMStudioServerError,
    LMStudioTimeoutError,
    ModelLoadError,
    ModelNotFoundError,
)
from lmstrix.domain.host_capabilities import LLAMA_CPP
from lmstrix.domain.host_types import ChatResult
from lmstrix.domain.load_sizing import load_context_for
from lmstrix.domain.payloads import InferenceJobResult, LoadedModelInfo
from lmstrix.domain.queue_settings import QueueSettings
from lmstrix.domain.requests import InferenceRequest, inference_request
from lmstrix.domain.scheduler import HostState, QueuedJob, next_state
from lmstrix.domain.slots import SlotHost, slot_count
from lmstrix.jobs.host_down import HostDownCheck, suggests_host_down
from lmstrix.jobs.notify import Notifier
from lmstrix.jobs.slot_pool import SlotPool
from lmstrix.jobs.store import Claim, ClaimedJob, JobStore, JobView
from lmstrix.jobs.workers import WorkerInfo, WorkerPresence, WorkerRegistry

log = logging.getLogger(__name__)

#: Retrying the write of a job's end while the database is away: first and longest wait.
END_RETRY_FIRST = 0.1
END_RETRY_MOST = 2.0


def default_worker_id(host: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{host}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a job's row ends: the status and the columns to write."""

    status: JobStatus
    row: dict[str, Any]
    #: the failure may mean the host is down: look before running the next job
    host_fault: bool = False

    @classmethod
    def failed(
        cls,
        error_type: str,
        message: str,
        result: dict[str, Any] | None = None,
        *,
        host_fault: bool = False,
    ) -> Outcome:
        return cls(
            JobStatus.FAILED,
            {"result": result, "error_type": error_type, "error_message": message},
            host_fault,
        )


@dataclass(slots=True)
class _Loaded:
    model: str
    instance_id: str
    context_length: int | None
    requested: int | None
    # How long the load took, and whether it replaced another model (a swap).
    load_seconds: float | None = None
    swapped: bool = False
    #: the instance's parallel slots, where the host reports them
    parallel: int | None = None


@dataclass(slots=True)
class _Watched:
    job: ClaimedJob
    since: float
    renewed: float
    stop: threading.Event


class LeaseKeeper:
    """Renews the leases of the jobs being run and watches their cancel flags (and whether their
    interactive callers are still there), off the hot path; it also beats the worker's
    ``presence`` row, so no other thread is needed for that.

    One job (:meth:`watch`, the serial path) or several at once (:meth:`add` and
    :meth:`discard`, one per slot thread). Each thread sees the stop flag of the job it watches
    as :attr:`should_stop`.

    Jobs shorter than one tick never touch the database here, which keeps the per-job cost of a
    busy worker at the claim and the finish.
    """

    def __init__(
        self,
        store: JobStore,
        settings: QueueSettings,
        tick: float = 0.2,
        presence: WorkerPresence | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.tick = tick
        self.presence = presence
        self._jobs: dict[uuid.UUID, _Watched] = {}
        self._mine = threading.local()  # the job the current thread runs
        self._wake = threading.Event()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="lmstrix-lease", daemon=True)
        self._thread.start()

    def watch(self, job: ClaimedJob | None) -> None:
        """Watch ``job`` alone (None: nothing), for the calling thread."""
        with self._lock:
            self._jobs.clear()
        if job is not None:
            self.add(job)
        else:
            self._mine.job = None

    def add(self, job: ClaimedJob) -> None:
        """Watch ``job`` too; the calling thread runs it."""
        now = time.monotonic()
        with self._lock:
            self._jobs[job.id] = _Watched(job, now, now, threading.Event())
        self._mine.job = job.id

    def discard(self, job: ClaimedJob) -> None:
        with self._lock:
            self._jobs.pop(job.id, None)
        if getattr(self._mine, "job", None) == job.id:
            self._mine.job = None

    def watching(self) -> list[ClaimedJob]:
        with self._lock:
            return [w.job for w in self._jobs.values()]

    @property
    def should_stop(self) -> bool:
        """Whether the job of the calling thread should stop (cancelled, abandoned, reaped)."""
        with self._lock:
            w = self._jobs.get(getattr(self._mine, "job", None))  # type: ignore[arg-type]
        return w is not None and w.stop.is_set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)
        if self.presence is not None:
            self.presence.stop()

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(self.tick)
            with self._lock:
                watched = list(self._jobs.values())
            now = time.monotonic()
            if self.presence is not None and not self._closed:
                first = min(watched, key=lambda w: w.since, default=None)
                self.presence.beat(None if first is None else str(first.job.id), now)
            for w in watched:
                self._look(w, now)

    def _look(self, w: _Watched, now: float) -> None:
        if now - w.since < self.tick or w.stop.is_set():
            return
        job, grace = w.job, self.settings.waiter_grace
        try:
            if now - w.renewed >= self.settings.lease_seconds / 3:
                stop = self.store.renew_lease(job, self.settings.lease_seconds, waiter_grace=grace)
                w.renewed = now
            else:
                stop = self.store.cancel_requested(job, waiter_grace=grace)
        except Exception:  # the database hiccupped: try again next tick
            log.exception("lease renewal of job %s failed", job.id)
            return
        if stop:
            w.stop.set()


class JobRunner:
    """Claims and runs the jobs of one host."""

    def __init__(
        self,
        store: JobStore,
        host: str,
        client: LMStudioClient,
        notifier: Notifier,
        *,
        settings: QueueSettings | None = None,
        worker_id: str | None = None,
        retry_delays: tuple[float, ...] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        mode: WorkerMode = WorkerMode.EMBEDDED,
    ) -> None:
        """``mode``: how this worker is woken, as the workers table shows it."""
        self.store = store
        self.host = host
        self.client = client
        self.notifier = notifier
        self.settings = settings or QueueSettings()
        self.worker_id = worker_id or default_worker_id(host)
        # Only connection failures (LM Studio restarting, a sleeping laptop) are retried: a bad
        # request would fail the same way again.
        self.retry_delays = self.settings.retry_delays if retry_delays is None else retry_delays
        self._sleep = sleep
        self._clock = clock
        self.state = HostState()
        self._loaded: _Loaded | None = None
        # Slot threads share the runner: one load at a time, and the host state kept whole.
        self._load_lock = threading.RLock()
        self._state_lock = threading.Lock()
        self._slots: SlotPool | None = None
        self.presence = WorkerPresence(
            WorkerRegistry(store.url),
            WorkerInfo.here(self.worker_id, host, mode),
            loaded_model=self.loaded_model,
        )
        self.keeper = LeaseKeeper(store, self.settings, presence=self.presence)
        self.jobs_run = 0
        self.host_check = HostDownCheck(store, host, client, self.settings, self._notify_done)
        self._host_fault: str | None = None  # why the last job suggests the host is down
        # a claim may have reached the database unheard of: see _release_lost_claims
        self._claims_unsure = False

    def close(self) -> None:
        if self._slots is not None:
            self._slots.close()
        self.host_check.close()
        self.keeper.close()

    def forget_loaded(self) -> None:
        """Someone else may have changed what the host holds: load before the next job."""
        self._loaded = None

    def loaded_model(self) -> str | None:
        """The model this worker last loaded and still holds, as far as it knows."""
        loaded = self._loaded
        return None if loaded is None else loaded.model

    # -- the loop -------------------------------------------------------------------------

    def drain(self, should_continue: Callable[[], bool] = lambda: True) -> int:
        """Run queued jobs of this host until none is left; returns how many ran.

        Ending one job and claiming the next share a transaction; the done-notification still
        follows the commit that made the row final. A job claimed here always runs, or goes
        back to the queue at once (:meth:`_release`) when something stops the loop first.
        After a job failed in a way that may mean the host is down, the host is probed before
        anything else is claimed (:class:`~lmstrix.jobs.host_down.HostDownCheck`).
        """
        self._release_lost_claims()
        if self._uses_slots():
            if self._slots is None:
                self._slots = SlotPool(self)
            return self._slots.drain(should_continue)
        ran = 0
        self._host_fault = None
        job = self._claim_next()
        while job is not None:
            try:
                claim = self._claim() if should_continue() else None
            except BaseException:
                self._release(job)
                raise
            job = self._run(job, claim)
            ran += 1
            why, self._host_fault = self._host_fault, None
            # after a failure that may mean the host is gone nothing was claimed: look first
            if (
                why is not None
                and should_continue()
                and self.host_check.host_answers(why, should_continue)
            ):
                job = self._claim_next()
        return ran

    def _uses_slots(self) -> bool:
        """Whether jobs may run side by side here: not when configured to one at a time, nor
        on a host that serves as loaded and reports no more than one slot."""
        if self.settings.max_parallel == 1:
            return False
        try:
            caps = self.client.capabilities
        except LMStrixError:  # the host cannot say now: one at a time, the job meets the fault
            return False
        return caps.load_control or (caps.parallel or 1) > 1

    def slot_host(self) -> SlotHost:
        """The slots of what is loaded now, as many as are used, and how they share the
        context (LM Studio: one KV cache for all; llama.cpp: the context split between them)."""
        loaded = self._loaded
        caps = self.client.capabilities
        reported = loaded.parallel if loaded is not None and loaded.parallel else caps.parallel
        return SlotHost(
            slots=slot_count(reported, self.settings.max_parallel),
            context=None if loaded is None else loaded.context_length,
            shared_cache=caps.server != LLAMA_CPP,
        )

    def note_ran(self, job: ClaimedJob) -> None:
        """The host state after ``job`` took its turn (a different model means a swap)."""
        with self._state_lock:
            self.state = next_state(self.state, QueuedJob(str(job.id), job.model, 0.0))

    def _release_lost_claims(self) -> None:
        """After a claim the database may have committed without this worker hearing of it
        (the connection broke in between), hand back what it holds but is not running: at the
        start of a drain, when nothing runs here. A database still away leaves it for the next
        drain."""
        if not self._claims_unsure:
            return
        try:
            lost = self.store.release_lost_claims(self.worker_id)
        except DatabaseUnavailableError:
            return
        self._claims_unsure = False
        for job_id in lost:
            log.warning("job %s: claimed while the database was away; queued again", job_id)

    def _claim_next(self, running_model: str | None = None) -> ClaimedJob | None:
        return self._claim_or_empty(running_model)[0]

    def _claim_or_empty(self, running_model: str | None = None) -> tuple[ClaimedJob | None, bool]:
        """The next job (or None), and whether nothing claimable was queued."""
        try:
            return self._claim_next_now(running_model)
        except DatabaseUnavailableError:
            self._claims_unsure = True
            raise

    def _claim_next_now(self, running_model: str | None) -> tuple[ClaimedJob | None, bool]:
        return self.store.claim_or_empty(
            self.host,
            self.worker_id,
            self.state,
            lease_seconds=self.settings.lease_seconds,
            policy=self.settings.policy,
            waiter_grace=self.settings.waiter_grace,
            running_model=running_model,
        )

    def run_next(self) -> bool:
        """Claim and run one job; False when nothing is queued."""
        job = self.store.claim_next(
            self.host,
            self.worker_id,
            self.state,
            lease_seconds=self.settings.lease_seconds,
            policy=self.settings.policy,
            waiter_grace=self.settings.waiter_grace,
        )
        if job is None:
            return False
        self._run(job, None)
        return True

    def _claim(self) -> Claim:
        return Claim(
            self.host,
            self.worker_id,
            self.state,
            self.settings.lease_seconds,
            self.settings.policy,
            self.settings.waiter_grace,
        )

    def _run(self, job: ClaimedJob, claim: Claim | None) -> ClaimedJob | None:
        """Run ``job``, end it (claiming the next one if ``claim``), notify; returns the next."""
        self.keeper.watch(job)
        final: JobView | None = None
        nxt: ClaimedJob | None = None
        try:
            outcome = self._execute(job)
            if outcome.host_fault:  # claim nothing before the host has been looked at
                claim = None
                self._host_fault = f"job {job.id} failed with {outcome.row['error_type']}"
            elif claim is not None:
                # the claim must see the model this job left loaded
                claim = self._claim()
            final, nxt = self._store_end(job, outcome, claim)
        except BaseException:  # stopped before its end was stored: back to the queue at once
            self._release(job)
            raise
        finally:
            self.keeper.watch(nxt)
            self.jobs_run += 1
            try:
                self._notify_done(str(job.id), final)
            except BaseException:  # interrupted: the next job must not stay claimed unrun
                if nxt is not None:
                    self._release(nxt)
                raise
        return nxt

    def _store_end(
        self, job: ClaimedJob, outcome: Outcome, claim: Claim | None
    ) -> tuple[JobView | None, ClaimedJob | None]:
        """Write the job's end (and claim the next). The answer is in hand, so a database that
        is away for a moment (a PostgreSQL restart) is waited for, within the job's lease,
        rather than losing the answer and running the job again."""
        deadline = time.monotonic() + self.settings.lease_seconds
        delay = END_RETRY_FIRST
        while True:
            try:
                return self.store.end_and_claim(job, outcome.status, **outcome.row, claim=claim)
            except DatabaseUnavailableError as exc:
                if claim is not None:  # the next job may have been claimed unheard of
                    self._claims_unsure = True
                if time.monotonic() + delay > deadline:
                    raise
                log.warning(
                    "job %s: storing its end failed (%s); retrying in %.1fs", job.id, exc, delay
                )
                self._sleep(delay)
                delay = min(delay * 2, END_RETRY_MOST)

    def _notify_done(self, job_id: str, final: JobView | None) -> None:
        """Tell the job's waiter its row is final. The row is committed already, so a failed
        notification (Redis down) only costs the waiter its next look at the row: it is logged,
        never allowed to stop the loop with the next job claimed and not run."""
        try:
            self.notifier.notify_done(job_id, final)
        except Exception as exc:
            log.warning(
                "job %s ended but its waiter could not be told (%s: %s); it will read the row",
                job_id,
                type(exc).__name__,
                exc,
            )

    def count_run(self) -> None:
        with self._state_lock:
            self.jobs_run += 1

    def release_claim(self, job: ClaimedJob) -> None:
        """Hand back a job claimed but not run: queued again, its attempt not counted."""
        self._release(job)

    def _release(self, job: ClaimedJob) -> None:
        self.keeper.discard(job)
        try:
            self.store.release(job)
        except Exception:  # the database is away too: the lease runs out and the reaper requeues
            log.exception(
                "could not hand back job %s; it is requeued when its lease runs out", job.id
            )

    # -- one job --------------------------------------------------------------------------

    def _execute(self, job: ClaimedJob) -> Outcome:
        """Run the job; returns how its row should end."""
        handler = HANDLERS.get(job.kind)
        if handler is None:
            return Outcome.failed("ValidationError", f"this worker cannot run {job.kind} jobs")
        delays = list(self.retry_delays)
        started = self._clock()
        tries = 0
        while True:
            tries += 1
            try:
                result = handler(self, job)
            except LMStudioConnectionError as exc:
                self._loaded = None  # a restarted LM Studio has nothing loaded
                # Only a request that never reached the host is tried again: nothing is sent
                # twice. A try that could not finish before the job's deadline is not made.
                if exc.request_sent or not delays or self.keeper.should_stop:
                    return self._fail(job, exc, host_fault=True)
                delay = delays.pop(0)
                late = self._past_deadline(job, started, delay, tries, exc)
                if late is not None:
                    return self._fail(job, late, host_fault=True)
                log.warning(
                    "%s unreachable (%s); retrying job %s in %ss", self.host, exc, job.id, delay
                )
                self._sleep(delay)
                continue
            except LMStrixError as exc:
                host_fault = suggests_host_down(exc)
                self._loaded = None if host_fault or _load_related(exc) else self._loaded
                return self._fail(job, exc, host_fault=host_fault)
            except Exception as exc:  # a bug or an unexpected answer: fail the job, keep serving
                log.exception("job %s failed unexpectedly", job.id)
                return self._fail(job, exc)
            if result.pop("cancelled", False) or (
                result.get("stop_reason") == "userStopped" and self.keeper.should_stop
            ):
                return Outcome(JobStatus.CANCELLED, {"result": result, "error_type": "cancelled"})
            return Outcome(JobStatus.SUCCEEDED, {"result": result})

    def _context_test(self, job: ClaimedJob) -> dict[str, Any]:
        """A context test loads and unloads at will: afterwards nothing is known to be loaded
        (the next job loads what it needs), though the model it tested is the likeliest."""
        from lmstrix.jobs.context_test.driver import run_context_test

        try:
            return run_context_test(self, job)
        finally:
            self._loaded = None
            self.note_ran(job)

    def _fail(self, job: ClaimedJob, exc: BaseException, *, host_fault: bool = False) -> Outcome:
        if self.keeper.should_stop and self.cancel_requested(job):
            return Outcome(JobStatus.CANCELLED, {"error_type": "cancelled"})
        payload = ErrorPayload.of(exc)
        result = {"error_details": payload.details} if payload.details else None
        return Outcome.failed(payload.error_type, payload.message, result, host_fault=host_fault)

    def _past_deadline(
        self, job: ClaimedJob, started: float, delay: float, tries: int, last: LMStrixError
    ) -> JobDeadlineError | None:
        """The error that ends ``job`` when one more try, ``delay`` seconds from now and as long
        as one whole request (``lmstudio.timeout``), would end past the job's deadline."""
        elapsed = self._clock() - started
        deadline = self.settings.job_deadline
        if elapsed + delay + self.client.timeout <= deadline:
            return None
        return JobDeadlineError(
            str(job.id), deadline, elapsed_seconds=elapsed, tries=tries, last_error=str(last)
        )

    def _ensure_loaded(self, model: str, context_length: int | None) -> _Loaded:
        """The instance to run ``model`` on. Where the host has load control: loaded at
        ``context_length`` (kept from the last job when another client has not unloaded it
        since). Where it has none (LM Studio 0.3 JIT, llama.cpp, Ollama, vLLM): whatever the
        host serves for that id, never loaded or unloaded here, at the context it reports."""
        with self._load_lock:
            return self._ensure_loaded_locked(model, context_length)

    def _ensure_loaded_locked(self, model: str, context_length: int | None) -> _Loaded:
        if not self.client.capabilities.load_control:
            now = _Loaded(
                model,
                model,
                self.client.served_context(model),
                context_length,
                parallel=self.client.capabilities.parallel,
            )
            if now != self._loaded:
                self._loaded = now
            return self._loaded
        cur = self._loaded
        if (
            cur is not None
            and cur.model == model
            and cur.requested == context_length
            and self._still_loaded(cur)
        ):
            return cur
        began = time.monotonic()
        res = self.client.load(model, context_length, unload_others=True)
        self._loaded = _Loaded(
            model,
            res.instance_id,
            res.context_length,
            context_length,
            load_seconds=time.monotonic() - began,
            swapped=cur is not None and cur.model != model,
            parallel=self._parallel_of(model, res.instance_id),
        )
        return self._loaded

    def _parallel_of(self, model: str, instance_id: str) -> int | None:
        """The parallel slots of the instance just loaded, where the host says."""
        try:
            instances = self.client.loaded_instances(model)
        except (LMStudioConnectionError, LMStudioTimeoutError, LMStudioServerError):
            return None
        return next((i.parallel for i in instances if i.id == instance_id), None)

    def _still_loaded(self, cur: _Loaded) -> bool:
        """Whether the instance this worker loaded is still there at its size: other clients
        of the host (a chat UI, an IDE plugin) unload and swap models at any moment. A host
        that cannot say (it hangs, it restarts) is taken at its word: the chat request itself
        meets the fault then, and a vanished instance there is loaded again."""
        try:
            instances = self.client.loaded_instances(cur.model)
        except (LMStudioConnectionError, LMStudioTimeoutError, LMStudioServerError):
            return True
        for inst in instances:
            if inst.id == cur.instance_id and inst.context_length == cur.context_length:
                return True
        log.info("%s: %s was unloaded or changed by another client", self.host, cur.instance_id)
        return False

    def _chat_checked(
        self, req: InferenceRequest, loaded: _Loaded, on_token: Callable[[str], None]
    ) -> ChatResult:
        """One streamed chat on ``loaded``; an empty answer to a prompt that fills the served
        context is the overflow it stands for (some LM Studio builds answer so)."""
        said: list[dict[str, Any]] | str = req.prompt
        if req.history:
            said = [*(t.model_dump() for t in req.history), {"role": "user", "content": req.prompt}]
        try:
            chat = self.client.chat_completion(
                loaded.instance_id,
                said,
                max_tokens=req.max_tokens,
                temperature=req.temperature,
                top_p=req.top_p,
                top_k=req.top_k,
                repeat_penalty=req.repeat_penalty,
                min_p=req.min_p,
                stop=req.stop,
                seed=req.seed,
                system_prompt=req.system_prompt,
                stream=True,
                on_token=on_token,
                should_stop=lambda: self.keeper.should_stop,
            )
        except InferenceError as exc:
            if type(exc) is not InferenceError:
                raise
            overflow = empty_answer_overflow(
                loaded.model, _prompt_estimate(req), loaded.context_length
            )
            if overflow is None or "after 0 pieces" not in str(exc):
                raise
            raise overflow from None
        if not chat.content and not chat.completion_tokens:
            overflow = empty_answer_overflow(
                loaded.model, _prompt_estimate(req), loaded.context_length
            )
            if overflow is not None:
                raise overflow
        return chat

    def cancel_requested(self, job: ClaimedJob) -> bool:
        """The cancel flag, read now; a database that is away for the moment says no (the job
        goes on, and the lease keeper sees a cancel once it answers again)."""
        try:
            return self.store.cancel_requested(job, waiter_grace=self.settings.waiter_grace)
        except DatabaseUnavailableError as exc:
            log.warning("job %s: could not read its cancel flag (%s); going on", job.id, exc)
            return False

    def _infer(self, job: ClaimedJob) -> dict[str, Any]:
        req = inference_request(**job.request)
        ctx = load_context_for(req.context_length)
        before = self._loaded
        loaded = self._ensure_loaded(job.model, ctx)
        self.note_ran(job)
        if self._slots is not None:
            self._slots.passed_load(job)
        # A load can take minutes: look at the cancel flag itself before generating, not only at
        # what the lease keeper last saw.
        if self.keeper.should_stop or (loaded is not before and self.cancel_requested(job)):
            return {"stop_reason": "userStopped", "response": "", "cancelled": True}
        # Inference jobs publish their pieces for stream() and `jobs follow`; batch items have
        # no reader waiting on them, so they skip it.
        pieces = (
            self.notifier.pieces.writer(str(job.id), job.attempt)
            if job.kind == JobKind.INFERENCE
            else None
        )
        generated = [0]

        def on_token(piece: str) -> None:
            generated[0] += 1
            if pieces is not None:
                pieces.write(piece)

        def chat_on(target: _Loaded) -> ChatResult:
            return self._chat_checked(req, target, on_token)

        try:
            chat = chat_on(loaded)
        except (ModelNotFoundError, ModelLoadError) as exc:
            # Another client unloaded or swapped the model under this request: load it again
            # and run the request once more, unless part of an answer went out already.
            if generated[0] or not self.client.capabilities.load_control:
                raise
            log.warning(
                "%s: %s went away during job %s (%s); loading it again",
                self.host,
                loaded.instance_id,
                job.id,
                exc,
            )
            with self._load_lock:
                if self._loaded is loaded:  # not loaded again by another slot meanwhile
                    self._loaded = None
                loaded = self._ensure_loaded(job.model, ctx)
            chat = chat_on(loaded)
        if loaded.context_length is None and not self.client.capabilities.load_control:
            loaded = self._ensure_loaded(job.model, ctx)  # a JIT load served it: now it says
        prompt_tokens = chat.prompt_tokens or 0
        response_tokens = chat.completion_tokens or 0
        return InferenceJobResult(
            response=chat.content,
            prompt_tokens=prompt_tokens,
            response_tokens=response_tokens,
            tokens_used=chat.total_tokens or prompt_tokens + response_tokens,
            inference_time=chat.generation_time or chat.wall_time,
            time_to_first_token=chat.time_to_first_token,
            tokens_per_second=chat.tokens_per_second,
            stop_reason=chat.stop_reason,
            finish_reason=chat.finish_reason,
            wall_time=chat.wall_time,
            model_info=LoadedModelInfo(
                id=job.model,
                host=self.host,
                instance_id=loaded.instance_id,
                context_length=loaded.context_length,
                requested_context_length=loaded.requested,
                reduced=loaded.requested is not None
                and loaded.context_length is not None
                and loaded.context_length < loaded.requested,
                # Only the job that made the load carries its facts (metrics count loads so).
                **(
                    {"load_seconds": loaded.load_seconds, "swapped": loaded.swapped}
                    if loaded is not before
                    else {}
                ),
            ),
        ).to_row()


def _prompt_estimate(req: InferenceRequest) -> int:
    text = req.prompt + (req.system_prompt or "")
    return TokenCalibration().estimate(text)


Handler = Callable[[JobRunner, ClaimedJob], dict[str, Any]]

# What runs a job of each kind; a batch item is an inference request that belongs to a batch.
HANDLERS: dict[str, Handler] = {
    JobKind.INFERENCE: JobRunner._infer,
    JobKind.BATCH_ITEM: JobRunner._infer,
    JobKind.CONTEXT_TEST: JobRunner._context_test,
}


def _load_related(exc: LMStrixError) -> bool:
    # After a failed load or a "model not loaded" answer we no longer know what the host holds.
    return type(exc).__name__ in ("ModelLoadError", "ModelNotFoundError", "InferenceError")
