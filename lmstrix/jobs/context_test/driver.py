"""The context test as a job on the host's worker: the search of
:mod:`lmstrix.domain.context_search` driven with real probes, every probe persisted, the verdict
written to the registry.

Why this is the only module that does everything: it is the one place where the order of the
steps is decided (row before probe, outcome after, cancellation looked at before every probe,
registry written once at the end or merged on a stop), and that order is what crash safety and
resumption rely on. Everything it calls is either pure or one kind of I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmstrix.domain.context_search import (
    Outcome,
    ProbeKind,
    ProbeOutcome,
    ProbeRequest,
    SearchState,
    next_probe,
    record,
    result,
)
from lmstrix.domain.context_test_request import ContextTestRequest, parse_request
from lmstrix.domain.search_resume import initial_state
from lmstrix.domain.verdicts import (
    REGISTRY_KEYS,
    Known,
    Speed,
    partial_columns,
    search_verdict,
    single_verdict,
)
from lmstrix.jobs.context_test.http_probe import HttpProbe
from lmstrix.jobs.context_test.probe_rows import (
    finish_probe,
    insert_probe,
    note_probe_error,
    row_error,
    start_test,
)
from lmstrix.jobs.context_test.records import write_progress, write_registry
from lmstrix.jobs.context_test.report import progress, summary
from lmstrix.jobs.store import ClaimedJob

if TYPE_CHECKING:
    from lmstrix.jobs.runner import JobRunner

log = logging.getLogger(__name__)


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
    write_progress(url, job, progress(req, run.state, job, probe=request))
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
        run.last_failure = row_error(point, answer)
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
    run = _Run(initial_state(req, resume), dict(resume.speeds))
    stop = should_stop or (lambda: runner.keeper.should_stop or runner.store.cancel_requested(job))
    probe = HttpProbe(
        runner.client,
        job.model,
        output_tokens=req.output_tokens,
        question=req.question,
        seed=req.seed,
    )
    write_progress(url, job, progress(req, run.state, job))
    try:
        while (request := next_probe(run.state)) is not None:
            if stop():
                _stop_quietly(url, known, run.state, None, reset=req.reset)
                write_progress(url, job, progress(req, run.state, job))
                speed = run.speeds.get(run.state.use_good or -1)
                stopped = summary(job, req, run.state, resume, speed, stopped="cancelled")
                return {**stopped, "cancelled": True}
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
    write_progress(url, job, progress(req, run.state, job, done=res.stop_reason))
    registry = {k: columns[k] for k in REGISTRY_KEYS}
    return {**summary(job, req, run.state, resume, speed), "registry": registry}


__all__ = ["run_context_test"]
