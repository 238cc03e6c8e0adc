"""A context test as a job on the host's worker: the search of :mod:`lmstrix.core.context_search`
driven with real probes over HTTP, every probe persisted, the verdict written to the registry.

Why a job: a test loads and unloads models at will, so it must be the only thing touching the
host (rule 2), and it can take many minutes, so it must survive the caller going away, report
progress, be cancellable and resume after a crash. The worker's runner calls
:func:`run_context_test`; callers submit through ``JobService.submit_context_test`` after
:func:`plan_context_test` has refused bad input (no row is written for a test that cannot run).

Crash safety is the search's contract made durable: before a probe its row is inserted
``in_flight``; after it the row gets its outcome. A worker that dies mid-probe (the machine froze
at that size, the process was killed) leaves the row ``in_flight``; whoever tests the model next
(the same job re-queued by the reaper, or a new job) counts it as a failure at that size, marks
it ``failed``/"interrupted" and never probes that size again. Completed rows of earlier attempts
of the same job are replayed as facts, so a re-queued job does not repeat its work.

Pieces: :class:`ContextTestRequest` (the row's JSON), :func:`plan_context_test` (pure
validation), :class:`HttpProbe` (load and use probes over the client), persistence helpers,
:func:`search_verdict`/:func:`single_verdict` (pure: registry columns from a result) and the
driver :func:`run_context_test`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update

from lmstrix.api.client import LMStudioClient
from lmstrix.api.exceptions import (
    ContextLimitExceededError,
    InferenceError,
    ModelLoadError,
    ModelNotFoundError,
    ValidationError,
)
from lmstrix.core.context import TokenCalibration
from lmstrix.core.context_search import (
    DEFAULT_MAX_ITERATIONS,
    DEFAULT_MIN_CONTEXT,
    DEFAULT_THRESHOLD,
    LoadOutcome,
    Outcome,
    ProbeKind,
    ProbeOutcome,
    ProbeRequest,
    SearchConfig,
    SearchResult,
    SearchState,
    StopReason,
    TestPoint,
    UseOutcome,
    next_probe,
    record,
    result,
)
from lmstrix.core.models import Model
from lmstrix.core.needle import build_needle_prompt
from lmstrix.db import (
    ContextTestProbe,
    Host,
    Job,
    JobStatus,
    ModelRow,
    ProbePhase,
    TestStatus,
    read_session,
    utcnow,
    write_session,
)
from lmstrix.db import ProbeOutcome as RowOutcome
from lmstrix.jobs.requests import validate_request
from lmstrix.jobs.store import ClaimedJob, parse_job_id

if TYPE_CHECKING:
    from lmstrix.jobs.runner import JobRunner

log = logging.getLogger(__name__)

#: Tokens kept for the answer of a use probe. The needle answer is about 15 tokens; the rest is
#: slack for models that add a sentence. Small on purpose: the answer's positions are part of
#: what the probe proves, so a large unused budget would overstate the tested size.
DEFAULT_OUTPUT_TOKENS = 64
#: Reasoning models think before answering, and the thinking counts against ``max_tokens``.
REASONING_OUTPUT_TOKENS = 1024
#: The smallest size ``--ctx`` accepts: a needle prompt plus an answer must fit.
MIN_SINGLE_CONTEXT = 512
#: A use probe whose prompt came out this far from its target is re-sent with the calibration
#: it just improved (the first probe of a run starts from an uncalibrated estimate).
MAX_SIZING_ATTEMPTS = 3
INTERRUPTED_ERROR = "interrupted: the worker stopped during this probe (crash, kill or freeze)"


# -- the request ---------------------------------------------------------------------------------


class ContextTestRequest(BaseModel):
    """What a ``context_test`` job row asks for. ``ctx`` set: test exactly that one size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    declared: int = Field(ge=1)
    threshold: int = Field(DEFAULT_THRESHOLD, ge=1)
    min_context: int = Field(DEFAULT_MIN_CONTEXT, ge=1)
    max_iterations: int = Field(DEFAULT_MAX_ITERATIONS, ge=1)
    granularity: int | None = Field(None, ge=1)
    reset: bool = False
    ctx: int | None = Field(None, ge=1)
    question: str | None = Field(None, min_length=1)
    output_tokens: int = Field(DEFAULT_OUTPUT_TOKENS, ge=1)
    seed: int = 0

    def search_config(self) -> SearchConfig:
        """The search's parameters. A single size is a search whose range is that size."""
        if self.ctx is not None:
            return SearchConfig(
                declared=self.ctx,
                threshold=self.ctx,
                min_context=self.ctx,
                max_iterations=3,  # load, use, and one reload if the use lost its instance
                granularity=self.granularity,
            )
        return SearchConfig(
            declared=self.declared,
            threshold=self.threshold,
            min_context=self.min_context,
            max_iterations=self.max_iterations,
            granularity=self.granularity,
        )


def plan_context_test(
    model: Model,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    ctx: int | None = None,
    reset: bool = False,
    force: bool = False,
    question: str | None = None,
    output_tokens: int | None = None,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    min_context: int = DEFAULT_MIN_CONTEXT,
) -> ContextTestRequest:
    """The request for testing ``model``, or a ``ValidationError`` saying why it cannot be tested.

    Refused: an embedding model (no chat, nothing to recall), a threshold below the minimum
    context, ``ctx`` above the declared size or at/above the last known bad size (that size
    already failed; ``force=True`` tests it anyway, ``reset=True`` forgets it), and an answer
    budget that leaves no room for a prompt.
    """
    if model.type.startswith("embedding"):
        raise ValidationError(
            "model_id", model.id, "is an embedding model; context tests need a chat model"
        )
    if question is not None and not question.strip():
        raise ValidationError("prompt", question, "must not be empty")
    budget = output_tokens
    if budget is None:
        reasons = "reasoning" in model.capabilities
        budget = REASONING_OUTPUT_TOKENS if reasons else DEFAULT_OUTPUT_TOKENS
    if ctx is not None:
        if isinstance(ctx, bool) or not isinstance(ctx, int) or ctx < MIN_SINGLE_CONTEXT:
            raise ValidationError("ctx", ctx, f"must be an integer >= {MIN_SINGLE_CONTEXT}")
        if model.declared_context and ctx > model.declared_context:
            raise ValidationError(
                "ctx", ctx, f"is above the {model.declared_context} tokens {model.id} declares"
            )
        bad = model.last_known_bad_context
        if bad is not None and ctx >= bad and not (force or reset):
            raise ValidationError(
                "ctx",
                ctx,
                f"is at or above {bad}, where {model.id} already failed on {model.host}; "
                "use --force to test it anyway (or --reset to forget earlier results)",
            )
    fields = {
        "declared": model.declared_context or threshold,
        "threshold": threshold,
        "min_context": min_context,
        "max_iterations": max_iterations,
        "reset": reset,
        "ctx": ctx,
        "question": question,
        "output_tokens": budget,
    }
    request = validate_request(ContextTestRequest, fields)
    assert isinstance(request, ContextTestRequest)
    lower = request.search_config().lower  # SearchConfig refuses a threshold below the minimum
    if lower - budget < MIN_SINGLE_CONTEXT // 2:
        raise ValidationError(
            "output_tokens", budget, f"leaves too little room for a prompt at {lower} tokens"
        )
    return request


def parse_request(data: dict[str, Any]) -> ContextTestRequest:
    """The job row's request, validated again on the worker (rows can be written by hand)."""
    req = validate_request(ContextTestRequest, data)
    assert isinstance(req, ContextTestRequest)
    return req


# -- probes over HTTP ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Speed:
    """What a passing use probe measured (the registry keeps it for the tested size)."""

    time_to_first_token: float | None
    tokens_per_second: float | None


class HttpProbe:
    """The search's two probes over one host's client.

    ``load``: every instance of the model is unloaded (and every other model: one model per
    host), then the model is loaded at N and the applied size read back. ``use``: a needle prompt
    of about ``N - output_tokens`` tokens on the instance of the last load; its size is learnt
    from the server's own ``usage.prompt_tokens`` (see :meth:`use`).
    """

    def __init__(
        self,
        client: LMStudioClient,
        model: str,
        *,
        output_tokens: int = DEFAULT_OUTPUT_TOKENS,
        question: str | None = None,
        seed: int = 0,
    ) -> None:
        self.client = client
        self.model = model
        self.output_tokens = output_tokens
        self.question = question
        self.seed = seed
        # Until the first real count: the shared default (pessimistic, so the first prompt
        # rather falls short than overflows).
        self.calibration = TokenCalibration(prior_weight=1)
        self.instance_id: str | None = None
        self.last_speed: Speed | None = None
        self.last_answer: str | None = None

    def ready(self) -> None:
        """Raise ``LMStudioConnectionError`` unless the host answers (a cheap model list)."""
        self.client.list_models()

    def load(self, size: int) -> LoadOutcome:
        started = time.perf_counter()
        self.instance_id = None
        try:
            loaded = self.client.load(self.model, size, reuse=False, unload_others=True)
        except ModelLoadError as exc:
            return LoadOutcome(False, error=exc.reason or str(exc), seconds=_since(started))
        self.instance_id = loaded.instance_id
        seconds = loaded.load_time_seconds
        return LoadOutcome(
            True,
            applied=loaded.context_length,
            seconds=seconds if seconds is not None else _since(started),
        )

    def use(self, size: int, context: int) -> UseOutcome:
        """Ask the needle question with the context filled to about ``size`` tokens.

        Token counts are only known after the fact, so the prompt is re-sent (at most
        ``MAX_SIZING_ATTEMPTS`` times in all) when its real size makes the answer
        inconclusive: a pass with a prompt clearly shorter than the target, or a failure with one
        clearly longer. A failure with a short prompt, or a pass with a long one, already
        decides the probe. Prompts are nested, so a re-send mostly hits the server's cache.
        """
        self.last_speed = None
        self.last_answer = None
        instance = self.instance_id or self.model
        target = size - self.output_tokens
        slack = max(16, target // 1000)
        seconds = 0.0
        tokens: int | None = None
        for attempt in range(1, MAX_SIZING_ATTEMPTS + 1):
            prompt = build_needle_prompt(
                target, self.calibration.estimate, seed=self.seed, question=self.question
            )
            started = time.perf_counter()
            try:
                chat = self.client.chat_completion(
                    instance,
                    prompt.messages(),
                    max_tokens=self.output_tokens,
                    temperature=0.0,
                )
            except ContextLimitExceededError as exc:
                seconds += _since(started)
                tokens = exc.prompt_tokens
                if tokens:
                    self._observe(prompt.text, tokens)
                    if attempt < MAX_SIZING_ATTEMPTS:
                        continue
                return UseOutcome(False, prompt_tokens=tokens, error=str(exc), seconds=seconds)
            except (InferenceError, ModelLoadError, ModelNotFoundError) as exc:
                # The instance crashed or vanished: a failure at this size, and it is gone.
                return UseOutcome(False, error=str(exc), seconds=seconds + _since(started))
            timed = chat.timing_source == "server" and chat.time_to_first_token is not None
            seconds += (
                (chat.time_to_first_token or 0.0) + (chat.generation_time or 0.0)
                if timed
                else chat.wall_time
            )
            tokens = chat.prompt_tokens
            if tokens:
                self._observe(prompt.text, tokens)
            passed = prompt.passed(chat.content)
            short = tokens is not None and tokens < target - slack
            long = tokens is not None and tokens > target + slack
            if attempt < MAX_SIZING_ATTEMPTS and ((passed and short) or (not passed and long)):
                continue
            self.last_answer = chat.content
            self.last_speed = Speed(chat.time_to_first_token, chat.tokens_per_second)
            return UseOutcome(passed, prompt_tokens=tokens, answer=chat.content, seconds=seconds)
        raise AssertionError("unreachable")

    def _observe(self, text: str, tokens: int) -> None:
        # The latest count alone: the next prompt is a longer or shorter cut of the same text,
        # so its ratio is the best predictor, and one odd observation cannot linger.
        self.calibration = TokenCalibration(prior_weight=1).observe(len(text), tokens)


def _since(started: float) -> float:
    return time.perf_counter() - started


# -- persistence ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeRow:
    """One persisted probe, as the CLI and the facade show it."""

    id: int
    job_id: str | None
    kind: str
    size: int
    outcome: str
    applied_context: int | None
    prompt_tokens: int | None
    error: str | None
    time_to_first_token: float | None
    tokens_per_second: float | None
    started_at: datetime
    finished_at: datetime | None

    @property
    def seconds(self) -> float | None:
        """Wall time of the probe (None while it runs)."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {
            "context_size": self.size,
            "phase": self.kind,
            "outcome": self.outcome,
            "applied_context": self.applied_context,
            "prompt_tokens": self.prompt_tokens,
            "error": self.error,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "time_to_first_token": self.time_to_first_token,
            "tokens_per_second": self.tokens_per_second,
        }


def _probe_row(r: ContextTestProbe) -> ProbeRow:
    return ProbeRow(
        id=r.id,
        job_id=None if r.job_id is None else str(r.job_id),
        kind=r.phase,
        size=r.context_size,
        outcome=r.outcome,
        applied_context=r.applied_context,
        prompt_tokens=r.prompt_tokens,
        error=r.error,
        time_to_first_token=r.time_to_first_token,
        tokens_per_second=r.tokens_per_second,
        started_at=r.started_at,
        finished_at=r.finished_at,
    )


def read_probes(database_url: str, job_id: str | uuid.UUID) -> list[ProbeRow]:
    """The probe rows of one job, in the order they were started."""
    jid = parse_job_id(job_id)
    with read_session(database_url) as s:
        rows = s.scalars(
            select(ContextTestProbe)
            .where(ContextTestProbe.job_id == jid)
            .order_by(ContextTestProbe.id)
        ).all()
        return [_probe_row(r) for r in rows]


def read_progress(database_url: str, job_id: str | uuid.UUID) -> dict[str, Any] | None:
    """The progress JSON the worker writes on the job row after every probe."""
    jid = parse_job_id(job_id)
    with read_session(database_url) as s:
        return s.scalar(select(Job.progress).where(Job.id == jid))


def _point_of(row: ProbeRow) -> TestPoint:
    kind = ProbeKind(row.kind)
    if row.outcome == RowOutcome.OK.value:
        outcome = Outcome.OK
    elif row.outcome == RowOutcome.REDUCED.value:
        outcome = Outcome.REDUCED
    else:
        outcome = Outcome.FAILED
    return TestPoint(
        kind,
        row.size,
        outcome,
        applied=row.applied_context if kind is ProbeKind.LOAD else None,
        context=row.applied_context if kind is ProbeKind.USE else None,
        prompt_tokens=row.prompt_tokens,
        error=row.error,
    )


def _row_outcome(point: TestPoint) -> str:
    if point.outcome is Outcome.OK:
        return RowOutcome.OK.value
    if point.outcome is Outcome.REDUCED:
        return RowOutcome.REDUCED.value
    return RowOutcome.FAILED.value


def _row_error(point: TestPoint, answer: str | None) -> str | None:
    if point.outcome is Outcome.WRONG:
        shown = (answer or "").strip().replace("\n", " ")
        return f"wrong answer: {shown[:120]!r}"
    if point.outcome is Outcome.REDUCED:
        return f"LM Studio applied {point.applied} instead of {point.size}"
    if point.outcome is Outcome.INTERRUPTED:
        return INTERRUPTED_ERROR
    return point.error


@dataclass(frozen=True, slots=True)
class Known:
    """The registry's test columns of one model before a test (what a verdict builds on)."""

    row_id: int
    tested: int | None = None
    good: int | None = None
    bad: int | None = None
    status: str = TestStatus.UNTESTED.value
    error: str | None = None
    ttft: float | None = None
    tps: float | None = None

    @property
    def settled_status(self) -> str:
        """The status to go back to when a test stops without a verdict."""
        if self.status != TestStatus.TESTING.value:
            return self.status
        return TestStatus.TESTED.value if self.tested else TestStatus.UNTESTED.value


def _known(row: ModelRow) -> Known:
    return Known(
        row_id=row.id,
        tested=row.tested_context,
        good=row.last_known_good_context,
        bad=row.last_known_bad_context,
        status=row.test_status,
        error=row.test_error,
        ttft=row.time_to_first_token,
        tps=row.tokens_per_second,
    )


def _model_row(s: Any, host: str, key: str, *, lock: bool = False) -> ModelRow:
    q = (
        select(ModelRow)
        .join(Host, ModelRow.host_id == Host.id)
        .where(Host.name == host, ModelRow.key == key)
    )
    row = s.scalars(q.with_for_update() if lock else q).first()
    if row is None:
        raise ModelNotFoundError(key, reason=f"not in the registry on host {host!r}")
    assert isinstance(row, ModelRow)
    return row


@dataclass(frozen=True, slots=True)
class Resume:
    """What earlier runs left: this job's own probes (from attempts that died or were retried),
    and the sizes other tests left in flight."""

    known: Known
    history: tuple[TestPoint, ...] = ()  # this job's completed probes
    in_flight: tuple[int, ...] = ()  # this job's probes that never finished
    others_in_flight: tuple[int, ...] = ()  # other jobs' probes that never finished
    speeds: tuple[tuple[int, Speed], ...] = ()  # what this job's passing use probes measured

    @property
    def job_probes(self) -> int:
        """Probes this job already ran (they count against its ``max_iterations``)."""
        return len(self.history) + len(self.in_flight)


def start_test(database_url: str, host: str, key: str, job_id: uuid.UUID) -> Resume:
    """Mark the model ``testing`` and collect what a resumed search needs, in one transaction.

    Rows still ``in_flight`` belong to a dead worker (one worker per host, so no other test of
    this model runs now): they become failures "interrupted" here, and their sizes are returned
    so the search counts them as failures. Completed rows of this job's earlier attempts are
    returned as history.
    """
    now = utcnow()
    with write_session(database_url) as s:
        row = _model_row(s, host, key, lock=True)
        known = _known(row)
        rows = s.scalars(
            select(ContextTestProbe)
            .where(
                ContextTestProbe.model_id == row.id,
                (ContextTestProbe.outcome == RowOutcome.IN_FLIGHT.value)
                | (ContextTestProbe.job_id == job_id),
            )
            .order_by(ContextTestProbe.id)
        ).all()
        history: list[TestPoint] = []
        own: list[int] = []
        others: list[int] = []
        speeds: list[tuple[int, Speed]] = []
        for r in rows:
            if r.outcome == RowOutcome.IN_FLIGHT.value:
                (own if r.job_id == job_id else others).append(r.context_size)
                r.outcome = RowOutcome.FAILED.value
                r.error = INTERRUPTED_ERROR if not r.error else f"{INTERRUPTED_ERROR}; {r.error}"
                r.finished_at = now
            else:
                history.append(_point_of(_probe_row(r)))
                if r.phase == ProbePhase.USE.value and r.outcome == RowOutcome.OK.value:
                    speeds.append(
                        (r.context_size, Speed(r.time_to_first_token, r.tokens_per_second))
                    )
        row.test_status = TestStatus.TESTING.value
    return Resume(known, tuple(history), tuple(own), tuple(others), tuple(speeds))


def insert_probe(
    database_url: str, job_id: uuid.UUID, model_row_id: int, request: ProbeRequest
) -> int:
    """The ``in_flight`` row of a probe about to run; returns its id."""
    with write_session(database_url) as s:
        row = ContextTestProbe(
            job_id=job_id,
            model_id=model_row_id,
            context_size=request.size,
            phase=ProbePhase(request.kind.value).value,
            outcome=RowOutcome.IN_FLIGHT.value,
            applied_context=request.context,
            started_at=utcnow(),
        )
        s.add(row)
        s.flush()
        return row.id


def finish_probe(
    database_url: str,
    probe_id: int,
    point: TestPoint,
    *,
    answer: str | None = None,
    speed: Speed | None = None,
) -> None:
    """Give a probe row its outcome."""
    values: dict[str, Any] = {
        "outcome": _row_outcome(point),
        "error": _row_error(point, answer),
        "prompt_tokens": point.prompt_tokens,
        "finished_at": utcnow(),
    }
    if point.kind is ProbeKind.LOAD:
        values["applied_context"] = point.applied
    if speed is not None:
        values["time_to_first_token"] = speed.time_to_first_token
        values["tokens_per_second"] = speed.tokens_per_second
    with write_session(database_url) as s:
        s.execute(update(ContextTestProbe).where(ContextTestProbe.id == probe_id).values(values))


def note_probe_error(database_url: str, probe_id: int, error: str) -> None:
    """Leave a probe ``in_flight`` (it failed to finish: counts as a failure on resume) but say
    what stopped it, for whoever looks at the rows."""
    with write_session(database_url) as s:
        s.execute(
            update(ContextTestProbe)
            .where(ContextTestProbe.id == probe_id)
            .values(error=error[:2000])
        )


def write_progress(database_url: str, job: ClaimedJob, progress: dict[str, Any]) -> None:
    """The job row's progress JSON (only while this attempt still owns the row)."""
    with write_session(database_url) as s:
        s.execute(
            update(Job)
            .where(
                Job.id == job.id,
                Job.attempts == job.attempt,
                Job.status == JobStatus.RUNNING.value,
            )
            .values(progress=progress)
        )


def write_registry(database_url: str, row_id: int, columns: dict[str, Any]) -> None:
    """One transaction on the model's row (locked, so a concurrent scan cannot interleave)."""
    with write_session(database_url) as s:
        row = s.scalars(select(ModelRow).where(ModelRow.id == row_id).with_for_update()).first()
        if row is None:  # removed meanwhile: nothing to record
            return
        for column, value in columns.items():
            setattr(row, column, value)


# -- verdicts (pure) -----------------------------------------------------------------------------


def search_verdict(
    res: SearchResult, known: Known, speed: Speed | None, *, reset: bool = False
) -> dict[str, Any]:
    """The registry columns after a finished search.

    ``tested_context`` and the last known good are the verified size; the last known bad is the
    smallest failure. A search that stopped at the cap keeps a larger size found earlier with a
    higher threshold (a lower cap confirms less, it does not disprove more). ``speed`` is what
    the use probe at the verified size measured in this run; without one (the size was known
    from before) the stored figures stay.
    """
    prev = Known(known.row_id) if reset else known
    good, bad = res.optimal, res.failure_point
    if res.stop_reason is StopReason.AT_CAP and good is not None:
        if prev.good is not None and prev.good > good:
            good = prev.good
        if prev.bad is not None and good is not None and prev.bad > good:
            bad = prev.bad
    ttft, tps = (
        (speed.time_to_first_token, speed.tokens_per_second)
        if speed is not None
        else (prev.ttft, prev.tps)
        if good is not None and good == prev.good
        else (None, None)
    )
    error = None
    if good is None:
        if res.iterations == 0 and bad is not None and bad <= res.lower:
            error = (
                f"already failed at {bad}, at or below the smallest size tested ({res.lower}); "
                "test again with reset to forget earlier results"
            )
        elif res.stop_reason is StopReason.NO_WORKING_SIZE:
            error = f"no context size works: {res.lower} already fails"
        else:
            error = f"no working size found within {res.iterations} probes"
    return {
        "tested_context": good,
        "last_known_good_context": good,
        "last_known_bad_context": bad,
        "test_status": (TestStatus.TESTED if good is not None else TestStatus.FAILED).value,
        "test_error": error,
        "time_to_first_token": ttft,
        "tokens_per_second": tps,
        "last_tested_at": utcnow(),
    }


def single_verdict(
    size: int, passed: bool, error: str | None, known: Known, speed: Speed | None
) -> dict[str, Any]:
    """The registry columns after testing exactly one size.

    A pass raises the tested size if it is larger (and clears a known bad size at or below
    it: the model just worked there). A failure lowers the known bad size, and withdraws a tested
    size at or above it: the registry must never claim a size that just failed.
    """
    tested, good, bad = known.tested, known.good, known.bad
    ttft, tps = known.ttft, known.tps
    if passed:
        if tested is None or size >= tested:
            tested = size
            if speed is not None:
                ttft, tps = speed.time_to_first_token, speed.tokens_per_second
        good = max(good or 0, size)
        if bad is not None and bad <= size:
            bad = None
    else:
        bad = size if bad is None else min(bad, size)
        if tested is not None and tested >= size:
            tested, ttft, tps = None, None, None
        if good is not None and good >= size:
            good = None
    return {
        "tested_context": tested,
        "last_known_good_context": good,
        "last_known_bad_context": bad,
        "test_status": (TestStatus.TESTED if tested else TestStatus.FAILED).value,
        "test_error": None if passed else f"failed at {size}: {error or 'probe failed'}",
        "time_to_first_token": ttft,
        "tokens_per_second": tps,
        "last_tested_at": utcnow(),
    }


def partial_columns(
    state: SearchState, known: Known, *, error: str | None, reset: bool = False
) -> dict[str, Any]:
    """What a stopped (cancelled or failed) test leaves: the facts it learnt merged into the
    last known good and bad sizes, so the next run resumes from them, and the status it found.
    ``tested_context`` stays: only a finished test sets it."""
    good = state.use_good
    bad = state.bound if state.bound <= state.config.upper else None
    if not reset:
        if known.good is not None and (good is None or known.good > good):
            good = known.good
        if known.bad is not None and (bad is None or known.bad < bad):
            bad = known.bad
        if good is not None and bad is not None and good >= bad:
            good = state.use_good  # this run failed below the old good size
    columns: dict[str, Any] = {
        "test_status": known.settled_status,
        "last_known_good_context": good,
        "last_known_bad_context": bad,
    }
    if error is not None:
        columns["test_error"] = error
    return columns


# -- the driver ----------------------------------------------------------------------------------


def _progress(
    req: ContextTestRequest,
    state: SearchState,
    job: ClaimedJob,
    *,
    probe: ProbeRequest | None = None,
    done: StopReason | None = None,
) -> dict[str, Any]:
    config = state.config
    bound = state.bound
    last = state.points[-1] if state.points else None
    return {
        "model": job.model,
        "host": job.host,
        "attempt": job.attempt,
        "single_size": req.ctx,
        "lower": config.lower,
        "upper": config.upper,
        "max_iterations": config.max_iterations,
        "iterations": state.iterations,
        "good": state.use_good,
        "bad": bound if bound <= config.upper else None,
        "loadable": state.loadable,
        "probe": None
        if probe is None
        else {
            "kind": probe.kind.value,
            "size": probe.size,
            "reason": probe.reason,
            "started_at": utcnow().isoformat(),
        },
        "last": None
        if last is None
        else {"kind": last.kind.value, "size": last.size, "outcome": last.outcome.value},
        "stop_reason": None if done is None else done.value,
        "updated_at": utcnow().isoformat(),
    }


def _point_dict(p: TestPoint) -> dict[str, Any]:
    return {
        "kind": p.kind.value,
        "size": p.size,
        "outcome": p.outcome.value,
        "applied": p.applied,
        "context": p.context,
        "prompt_tokens": p.prompt_tokens,
        "error": p.error,
        "seconds": round(p.seconds, 3),
        "reason": p.reason,
    }


def _summary(
    job: ClaimedJob,
    req: ContextTestRequest,
    state: SearchState,
    resume: Resume,
    speed: Speed | None,
    *,
    stopped: str | None = None,
) -> dict[str, Any]:
    res = result(state)
    fresh = req.reset or req.ctx is not None
    return {
        "model_id": job.model,
        "host": job.host,
        "optimal_context": res.optimal,
        "failure_point": res.failure_point,
        "loadable_context": res.loadable,
        "stop_reason": stopped or res.stop_reason.value,
        "converged": stopped is None and res.converged,
        "single_size": req.ctx,
        "lower": res.lower,
        "upper": res.upper,
        "granularity": res.granularity,
        "iterations": res.iterations,
        "load_probes": res.load_probes,
        "use_probes": res.use_probes,
        "probe_seconds": round(res.seconds, 3),
        "time_to_first_token": None if speed is None else speed.time_to_first_token,
        "tokens_per_second": None if speed is None else speed.tokens_per_second,
        "test_points": [_point_dict(p) for p in res.points],
        "resumed": {
            "known_good": None if fresh else resume.known.good,
            "known_bad": None if fresh else resume.known.bad,
            "in_flight": list(resume.in_flight),
            "history": len(resume.history),
        },
    }


def _initial_state(req: ContextTestRequest, resume: Resume) -> SearchState:
    """The search state to start from.

    The job's own earlier probes always count: a job re-queued after its worker died must not
    repeat the probe that killed it, whatever it was asked to forget. ``reset`` and a single
    ``ctx`` ignore everything else (registry sizes, other tests' rows).
    """
    config = req.search_config()
    known = resume.known
    fresh = req.reset or req.ctx is not None
    state = SearchState.start(
        config,
        # Working at a size above the cap means working at the cap (usable is monotonic).
        known_good=None if fresh or known.good is None else min(known.good, config.upper),
        known_bad=None if fresh else known.bad,
        history=resume.history,
        in_flight=resume.in_flight if fresh else resume.in_flight + resume.others_in_flight,
    )
    return replace(state, iterations=resume.job_probes)


@dataclass(slots=True)
class _Run:
    """The mutable part of one run: the state and what the probes measured."""

    state: SearchState
    speeds: dict[int, Speed]
    last_failure: str | None = None


def _probe_once(
    url: str,
    job: ClaimedJob,
    req: ContextTestRequest,
    run: _Run,
    probe: HttpProbe,
    request: ProbeRequest,
    model_row_id: int,
) -> None:
    """One probe with its row: in flight before, outcome after (left in flight if it raised).

    The host must answer first: a probe that could not even be sent is no evidence about the
    size, while one the host stopped answering during is (it may have frozen there).
    """
    probe.ready()
    probe_id = insert_probe(url, job.id, model_row_id, request)
    write_progress(url, job, _progress(req, run.state, job, probe=request))
    try:
        outcome: ProbeOutcome = (
            probe.load(request.size)
            if request.kind is ProbeKind.LOAD
            else probe.use(request.size, request.context or request.size)
        )
    except Exception as exc:
        note_probe_error(url, probe_id, f"{type(exc).__name__}: {exc}")
        raise
    run.state = record(run.state, request, outcome)
    point = run.state.points[-1]
    use = request.kind is ProbeKind.USE
    speed = probe.last_speed if use else None
    answer = probe.last_answer if use else None
    if speed is not None and point.outcome is Outcome.OK:
        run.speeds[point.size] = speed
    if point.failed:
        run.last_failure = _row_error(point, answer)
    finish_probe(url, probe_id, point, answer=answer, speed=speed)
    log.info(
        "context test of %s on %s: %s at %s -> %s",
        job.model,
        job.host,
        point.kind.value,
        point.size,
        point.outcome.value,
    )


def _stop_quietly(
    url: str, known: Known, state: SearchState, error: str | None, *, reset: bool
) -> None:
    try:
        columns = partial_columns(state, known, error=error, reset=reset)
        write_registry(url, known.row_id, columns)
    except Exception:  # the original failure matters more than this bookkeeping
        log.exception("could not record the stopped test of model row %s", known.row_id)


def run_context_test(
    runner: JobRunner,
    job: ClaimedJob,
    *,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Run the context test ``job`` on ``runner``'s host; returns the job's result dict.

    Cancellation is looked at before every probe (the lease keeper's flag, then the row itself,
    since a probe can outlast the keeper's last look). A cancelled test returns
    ``{"cancelled": True, ...}`` with what it learnt; LM Studio becoming unreachable raises (the
    runner retries or fails the job) and leaves the probe in flight, to count as a failure at
    that size when the test resumes.
    """
    url = runner.store.url
    req = parse_request(job.request)
    resume = start_test(url, job.host, job.model, job.id)
    known = resume.known
    run = _Run(_initial_state(req, resume), dict(resume.speeds))
    stop = should_stop or (lambda: runner.keeper.should_stop or runner.store.cancel_requested(job))
    probe = HttpProbe(
        runner.client,
        job.model,
        output_tokens=req.output_tokens,
        question=req.question,
        seed=req.seed,
    )
    write_progress(url, job, _progress(req, run.state, job))
    try:
        while (request := next_probe(run.state)) is not None:
            if stop():
                _stop_quietly(url, known, run.state, None, reset=req.reset)
                write_progress(url, job, _progress(req, run.state, job))
                speed = run.speeds.get(run.state.use_good or -1)
                summary = _summary(job, req, run.state, resume, speed, stopped="cancelled")
                return {**summary, "cancelled": True}
            _probe_once(url, job, req, run, probe, request, known.row_id)
    except Exception as exc:
        _stop_quietly(url, known, run.state, f"test stopped: {exc}", reset=req.reset)
        raise
    res = result(run.state)
    speed = run.speeds.get(res.optimal) if res.optimal is not None else None
    if req.ctx is not None:
        passed = res.optimal == req.ctx
        before = Known(known.row_id) if req.reset else known
        columns = single_verdict(req.ctx, passed, run.last_failure, before, speed)
    else:
        columns = search_verdict(res, known, speed, reset=req.reset)
    write_registry(url, known.row_id, columns)
    write_progress(url, job, _progress(req, run.state, job, done=res.stop_reason))
    registry = {k: columns[k] for k in _REGISTRY_KEYS}
    return {**_summary(job, req, run.state, resume, speed), "registry": registry}


_REGISTRY_KEYS = (
    "tested_context",
    "last_known_good_context",
    "last_known_bad_context",
    "test_status",
    "test_error",
)


__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "MIN_SINGLE_CONTEXT",
    "REASONING_OUTPUT_TOKENS",
    "ContextTestRequest",
    "HttpProbe",
    "Known",
    "ProbeRow",
    "Speed",
    "parse_request",
    "partial_columns",
    "plan_context_test",
    "read_probes",
    "read_progress",
    "run_context_test",
    "search_verdict",
    "single_verdict",
]
