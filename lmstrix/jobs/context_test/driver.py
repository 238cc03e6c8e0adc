"""The context test as a job on the host's worker: the search of
:mod:`lmstrix.domain.context_search` driven with real probes, every probe persisted, the verdict
written to the registry.

Why this module ties everything together: the loop and the order of its steps (cancellation
looked at before every probe, row before the probe, outcome after) belong to
:class:`~lmstrix.domain.context_search.SearchLoop`, the same loop the search's tests and benchmark
run; this module fills its hooks with the job's I/O and decides what the end means (the registry
written once at the end, or merged on a stop). Everything it calls is either pure or one kind of
I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmstrix.domain.context_search import (
    Outcome,
    ProbeKind,
    ProbeRequest,
    SearchLoop,
    SearchState,
    TestPoint,
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
from lmstrix.jobs.context_test.served_probe import probe_for
from lmstrix.jobs.store import ClaimedJob

if TYPE_CHECKING:
    from lmstrix.jobs.runner import JobRunner

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _ProbeRows:
    """The job's side of each probe of the search loop: its row in flight before, its outcome
    after, the job's progress, and what the use probes measured.

    The host must answer before the row is written: a probe that could not even be sent is no
    evidence about the size, while one the host stopped answering during is (it may have frozen
    there), so that one's row stays in flight.
    """

    url: str
    job: ClaimedJob
    req: ContextTestRequest
    probe: HttpProbe
    model_row_id: int
    speeds: dict[int, Speed]
    probe_id: int | None = None
    last_failure: str | None = None

    def before(self, state: SearchState, request: ProbeRequest) -> None:
        self.probe.ready()
        self.probe_id = insert_probe(self.url, self.job.id, self.model_row_id, request)
        write_progress(self.url, self.job, progress(self.req, state, self.job, probe=request))

    def on_error(self, _request: ProbeRequest, exc: Exception) -> None:
        assert self.probe_id is not None  # before() ran for this probe
        note_probe_error(self.url, self.probe_id, f"{type(exc).__name__}: {exc}")

    def after(self, _state: SearchState, point: TestPoint) -> None:
        assert self.probe_id is not None  # before() ran for this probe
        use = point.kind is ProbeKind.USE
        speed = self.probe.last_speed if use else None
        answer = self.probe.last_answer if use else None
        if speed is not None and point.outcome is Outcome.OK:
            self.speeds[point.size] = speed
        if point.failed:
            self.last_failure = row_error(point, answer)
        finish_probe(self.url, self.probe_id, point, answer=answer, speed=speed)
        log.info(
            "context test of %s on %s: %s at %s -> %s",
            self.job.model,
            self.job.host,
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
    req, probe, note = probe_for(runner.client, job.model, req)
    if note:
        log.warning("context test of %s on %s: %s", job.model, job.host, note)
    rows = _ProbeRows(url, job, req, probe, known.row_id, dict(resume.speeds))
    search = SearchLoop(
        probe,
        initial_state(req, resume),
        before=rows.before,
        after=rows.after,
        on_error=rows.on_error,
        should_stop=should_stop
        or (lambda: runner.keeper.should_stop or runner.cancel_requested(job)),
    )
    write_progress(url, job, progress(req, search.state, job))
    try:
        res = search.run()
    except Exception as exc:
        _stop_quietly(url, known, search.state, f"test stopped: {exc}", reset=req.reset)
        raise
    state = search.state
    if search.cancelled:
        _stop_quietly(url, known, state, None, reset=req.reset)
        write_progress(url, job, progress(req, state, job))
        speed = rows.speeds.get(state.use_good or -1)
        stopped = summary(job, req, state, resume, speed, stopped="cancelled")
        return stopped.model_copy(update={"cancelled": True, "note": note}).to_row()
    speed = rows.speeds.get(res.optimal) if res.optimal is not None else None
    if req.ctx is not None:
        passed = res.optimal == req.ctx
        before = Known(known.row_id) if req.reset else known
        columns = single_verdict(req.ctx, passed, rows.last_failure, before, speed)
    else:
        columns = search_verdict(res, known, speed, reset=req.reset)
    write_registry(url, known.row_id, columns)
    write_progress(url, job, progress(req, state, job, done=res.stop_reason))
    registry = {k: columns[k] for k in REGISTRY_KEYS}
    return (
        summary(job, req, state, resume, speed)
        .model_copy(update={"registry": registry, "note": note})
        .to_row()
    )


__all__ = ["run_context_test"]
