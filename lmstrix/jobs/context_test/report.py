"""What a context test tells its watchers: the job row's progress after every probe, and the
job's result (pure: dicts from the search state).

Why JSON in rows: a test outlives its caller and may run on another machine, so the only way to
follow it (``lmstrix jobs show``, the CLI's live view, the facade's result) is through the job
row; these dicts are that row's documented shape.
"""

from __future__ import annotations

from typing import Any

from lmstrix.db import utcnow
from lmstrix.domain.clock import iso_utc
from lmstrix.domain.context_search import (
    ProbeKind,
    ProbeRequest,
    SearchState,
    StopReason,
    TestPoint,
    result,
)
from lmstrix.domain.context_test_request import ContextTestRequest
from lmstrix.domain.payloads import ContextTestJobResult, ContextTestResumed
from lmstrix.domain.search_resume import Resume
from lmstrix.domain.verdicts import Speed
from lmstrix.jobs.store import ClaimedJob


def progress(
    req: ContextTestRequest,
    state: SearchState,
    job: ClaimedJob,
    *,
    probe: ProbeRequest | None = None,
    done: StopReason | None = None,
) -> dict[str, Any]:
    """The progress JSON: the range, what is known so far, the probe running now, the last one."""
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
            "started_at": iso_utc(utcnow()),
        },
        "last": None
        if last is None
        else {"kind": last.kind.value, "size": last.size, "outcome": last.outcome.value},
        "stop_reason": None if done is None else done.value,
        "updated_at": iso_utc(utcnow()),
    }


def point_dict(p: TestPoint) -> dict[str, Any]:
    """One probe of this run as the job's result lists it."""
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
        "failed_depths": list(p.failed_depths),
        "disturbed": p.disturbed,
    }


def failed_depths(state: SearchState) -> list[float] | None:
    """The depths whose needles were not recalled at the failure point (the smallest size that
    failed its use probe at its own load), or None when no use probe failed there."""
    bound = state.bound
    for p in reversed(state.all_points):
        if p.kind is ProbeKind.USE and p.failed and p.bad_size == bound and p.failed_depths:
            return list(p.failed_depths)
    return None


def summary(
    job: ClaimedJob,
    req: ContextTestRequest,
    state: SearchState,
    resume: Resume,
    speed: Speed | None,
    *,
    stopped: str | None = None,
) -> ContextTestJobResult:
    """The job's result: the verdict, how it was reached and what it resumed from."""
    res = result(state)
    fresh = req.reset or req.ctx is not None
    return ContextTestJobResult(
        model_id=job.model,
        host=job.host,
        optimal_context=res.optimal,
        failure_point=res.failure_point,
        loadable_context=res.loadable,
        stop_reason=stopped or res.stop_reason.value,
        converged=stopped is None and res.converged,
        single_size=req.ctx,
        lower=res.lower,
        upper=res.upper,
        granularity=res.granularity,
        iterations=res.iterations,
        load_probes=res.load_probes,
        use_probes=res.use_probes,
        probe_seconds=round(res.seconds, 3),
        time_to_first_token=None if speed is None else speed.time_to_first_token,
        tokens_per_second=None if speed is None else speed.tokens_per_second,
        test_points=[point_dict(p) for p in res.points],
        failed_depths=failed_depths(state),
        disturbed=any(p.disturbed for p in res.points),
        resumed=ContextTestResumed(
            known_good=None if fresh else resume.known.good,
            known_bad=None if fresh else resume.known.bad,
            in_flight=list(resume.in_flight),
            history=len(resume.history),
        ),
    )


__all__ = ["failed_depths", "point_dict", "progress", "summary"]
