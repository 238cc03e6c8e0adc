"""``ContextTester``: find the largest context a model both loads and really uses, on its host.

A facade over ``context_test`` jobs (everything the queue does is a job row): each test is validated
here, queued for the model's host, run by that host's worker (:mod:`lmstrix.jobs.context_test`
drives the search of :mod:`lmstrix.domain.context_search` with real load and use probes) and
waited for. The registry is updated by the worker, so a test that outlives its caller still
records its verdict, and one interrupted by a crash resumes where it stopped.

``test_model_context`` returns exactly the keys of the public API (``RESULT_KEYS``);
``last_job_id`` names the job behind the latest result (``lmstrix jobs show``). Caller mistakes
(unknown model, threshold below the minimum, an embedding model) raise before anything is
queued; a test that ran and failed returns ``test_successful=False`` with ``error`` set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lmstrix.core.config import Config
from lmstrix.core.job_service import open_job_service
from lmstrix.domain.context_search import DEFAULT_MAX_ITERATIONS, DEFAULT_THRESHOLD
from lmstrix.domain.context_test_request import ContextTestRequest, plan_context_test
from lmstrix.domain.errors import LMStrixError, ValidationError
from lmstrix.domain.model import Model
from lmstrix.domain.needle import check_depths
from lmstrix.domain.payloads import ContextTestJobResult
from lmstrix.jobs.context_test import ProbeRow, check_min_context, read_probes
from lmstrix.jobs.service import SubmittedJob
from lmstrix.jobs.store import JobView

log = logging.getLogger(__name__)

RESULT_KEYS = (
    "model_id",
    "optimal_context",
    "test_successful",
    "iterations",
    "total_time",
    "error",
    "test_points",
    "final_working_size",
    "failure_point",
)

ProbeCallback = Callable[[ProbeRow], None]

# The longest a live view of a test's probes waits between two looks.
LIVE_VIEW_SLICE = 0.5


def job_result(job: JobView, probes: Sequence[ProbeRow], total_time: float) -> dict[str, Any]:
    """The public result of a finished ``context_test`` job.

    ``optimal_context``/``final_working_size`` are the largest size whose use probe passed (0
    when none did), ``failure_point`` the smallest size that failed above it (None: the cap
    works), ``iterations`` and ``test_points`` the job's probes (all attempts, in order).
    """
    r = ContextTestJobResult.from_row(job.result)
    optimal = r.optimal_context
    error: str | None = None
    if job.status == "cancelled":
        error = "cancelled"
    elif job.status != "succeeded":
        error = job.error_message or job.error_type or job.status
    elif optimal is None:
        error = (r.registry or {}).get("test_error") or "no working context size found"
    return {
        "model_id": job.model,
        "optimal_context": optimal or 0,
        "test_successful": job.status == "succeeded" and optimal is not None,
        "iterations": len(probes),
        "total_time": round(total_time, 3),
        "error": error,
        "test_points": [p.to_dict() for p in probes],
        "final_working_size": optimal or 0,
        "failure_point": r.failure_point,
    }


def _failed_before_running(model_id: str, exc: BaseException) -> dict[str, Any]:
    return {
        "model_id": model_id,
        "optimal_context": 0,
        "test_successful": False,
        "iterations": 0,
        "total_time": 0.0,
        "error": str(exc),
        "test_points": [],
        "final_working_size": 0,
        "failure_point": None,
    }


def size_order(models: Iterable[Model]) -> list[Model]:
    """Smallest models first (by size on disk, then declared context): they are quickest to
    load, so a run of many tests reports useful results early."""
    return sorted(models, key=lambda m: (m.size_bytes or 0, m.declared_context or 0, m.id))


class ContextTester:
    """Test context limits through the job queue.

    ``timeout`` bounds each LM Studio request of a probe (a load, a completion); a whole test
    runs as long as its probes need. ``safety_threshold`` caps every test: the size tested is
    at most ``min(threshold, safety_threshold, declared)``, so a caller raises both to go
    higher. ``output_tokens`` is the answer budget of a use probe (None: 64, or 1024 for
    reasoning models that think first). ``min_context`` is the smallest size a search goes down
    to (None: 2048; at least 256): lower it for small models that may fail even at 2048.
    ``depths`` are where a use probe's needles sit, as shares of the prompt (None: 0, 0.5 and 1,
    the start, the middle and the end); a probe passes when every needle is recalled.
    """

    def __init__(
        self,
        base_url: str | None = None,
        timeout: float = 300,
        max_iterations: int = DEFAULT_MAX_ITERATIONS,
        safety_threshold: int = DEFAULT_THRESHOLD,
        *,
        config: Config | None = None,
        database_url: str | None = None,
        output_tokens: int | None = None,
        min_context: int | None = None,
        depths: Sequence[float] | None = None,
    ) -> None:
        self.timeout = timeout
        # Refused here, before any host is asked (None: start, middle and end).
        self.depths = None if depths is None else check_depths(list(depths))
        self.max_iterations = max_iterations
        self.safety_threshold = safety_threshold
        self.output_tokens = output_tokens
        # Refused here, before any host is asked; the threshold is checked per test.
        self.min_context = None if min_context is None else check_min_context(min_context)
        self.service = open_job_service(
            config, database_url=database_url, base_url=base_url, timeout=timeout
        )
        self.last_job_id: str | None = None

    def close(self) -> None:
        self.service.close()

    def __enter__(self) -> ContextTester:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the steps (the CLI uses them one by one) -------------------------------------------

    def model(self, model_id: str) -> Model:
        """The registry entry a test of ``model_id`` would use (rescans an unknown id once)."""
        return self.service.context_test_model(model_id)

    def chat_models(self) -> list[Model]:
        """The registry's present chat models (embedding models have no context to test),
        after one rescan of the hosts when the registry has none."""
        registry = self.service.registry
        models = registry.list_models(include_missing=False)
        if not models:
            self.service.rescan()
            models = registry.list_models(include_missing=False)
        return [m for m in models if not m.type.startswith("embedding")]

    def cap(self, threshold: int) -> int:
        """The threshold a test really uses."""
        if threshold > self.safety_threshold:
            log.warning(
                "threshold %s capped at the safety threshold %s; raise safety_threshold to go "
                "higher",
                threshold,
                self.safety_threshold,
            )
        return min(threshold, self.safety_threshold)

    def plan(
        self,
        model: Model,
        threshold: int = DEFAULT_THRESHOLD,
        prompt: str | None = None,
        reset: bool = False,
        *,
        ctx: int | None = None,
        force: bool = False,
        min_context: int | None = None,
    ) -> ContextTestRequest:
        """What ``submit`` would queue for ``model`` (the range a search covers, the answer
        budget...), or the ``ValidationError`` it would raise; nothing is queued or probed."""
        if min_context is None and ctx is None:
            min_context = self.min_context
        return plan_context_test(
            model,
            threshold=self.cap(threshold),
            ctx=ctx,
            reset=reset,
            force=force,
            question=prompt,
            output_tokens=self.output_tokens,
            max_iterations=self.max_iterations,
            min_context=min_context,
            depths=self.depths,
        )

    def submit(
        self,
        model_id: str,
        threshold: int = DEFAULT_THRESHOLD,
        prompt: str | None = None,
        reset: bool = False,
        *,
        ctx: int | None = None,
        force: bool = False,
        start_worker: bool = True,
        min_context: int | None = None,
    ) -> SubmittedJob:
        """Validate and queue one test; returns at once (``wait`` gets the result).
        ``min_context`` None is the tester's own (see the class docstring), which a single-size
        test (``ctx``) has no use for."""
        if min_context is None and ctx is None:
            min_context = self.min_context
        job = self.service.submit_context_test(
            model_id,
            threshold=self.cap(threshold),
            ctx=ctx,
            reset=reset,
            force=force,
            question=prompt,
            output_tokens=self.output_tokens,
            max_iterations=self.max_iterations,
            min_context=min_context,
            start_worker=start_worker,
            depths=self.depths,
        )
        self.last_job_id = job.id
        return job

    def watch(
        self,
        job_id: str,
        on_probe: ProbeCallback | None = None,
        *,
        timeout: float | None = None,
    ) -> JobView:
        """Wait for the job to end; ``on_probe`` sees every probe row when it starts and when
        it gets its outcome (a live view). Without ``on_probe`` this is a plain notified wait.
        Past ``timeout`` (None: no limit) raises ``InferenceTimeoutError``, the job goes on."""
        if on_probe is None:
            return self.service.wait(job_id, timeout, cancel_on_timeout=False)
        url = self.service.database_url
        seen: dict[int, str] = {}

        def show_new_probes() -> None:
            for row in read_probes(url, job_id):
                if seen.get(row.id) != row.outcome:
                    seen[row.id] = row.outcome
                    on_probe(row)

        # Woken at once by the done-notification; looks in between are a live view's polling,
        # at most a few reads per second.
        return self.service.wait(
            job_id,
            timeout,
            cancel_on_timeout=False,
            on_look=show_new_probes,
            max_slice=LIVE_VIEW_SLICE,
        )

    def cancel(self, job_id: str) -> JobView:
        """Cancel a test: a queued one at once, a running one before its next probe."""
        return self.service.store.cancel(job_id)

    def result(self, job: JobView, total_time: float) -> dict[str, Any]:
        """The public result dict of a finished job."""
        return job_result(job, read_probes(self.service.database_url, job.id), total_time)

    # -- the public API ---------------------------------------------------------------------

    def test_model_context(
        self,
        model_id: str,
        threshold: int = DEFAULT_THRESHOLD,
        prompt: str | None = None,
        reset: bool = False,
        verbose: bool = False,
        min_context: int | None = None,
    ) -> dict[str, Any]:
        """Find the largest context ``model_id`` loads and uses, up to ``threshold`` tokens.

        ``prompt`` replaces the needle question (any non-empty answer then passes); ``reset``
        forgets earlier results (known good and bad sizes) first; ``verbose`` logs every probe;
        ``min_context`` is the smallest size searched (None: the tester's).
        """
        started = time.monotonic()
        job = self.submit(model_id, threshold, prompt, reset, min_context=min_context)
        on_probe = _log_probe(job.model) if verbose else None
        view = self.watch(job.id, on_probe)
        return self.result(view, time.monotonic() - started)

    def test_multiple_models(
        self,
        model_ids: Sequence[str],
        threshold: int = DEFAULT_THRESHOLD,
        parallel: bool = False,
        max_workers: int = 2,
    ) -> list[dict[str, Any]]:
        """Test several models, smallest first; one result per model, in that order.

        One test runs at a time per host (a host's worker runs one job at a time anyway; this
        also keeps one caller from flooding a queue). With ``parallel=True`` up to
        ``max_workers`` hosts are tested at once. A model that cannot be tested (unknown, an
        embedding model...) gets a result with ``error`` set; the others still run.
        """
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValidationError("max_workers", max_workers, "must be a positive integer")
        errors: list[dict[str, Any]] = []
        found: dict[str, Model] = {}
        for model_id in model_ids:
            try:
                m = self.model(model_id)
            except LMStrixError as exc:
                errors.append(_failed_before_running(model_id, exc))
                continue
            found.setdefault(m.qualified_id, m)
        ordered = size_order(found.values())
        by_host: dict[str, list[Model]] = {}
        for m in ordered:
            by_host.setdefault(m.host, []).append(m)
        results: dict[str, dict[str, Any]] = {}

        def run_host(models: list[Model]) -> None:
            for m in models:
                results[m.qualified_id] = self._test_one(m, threshold)

        if parallel and len(by_host) > 1:
            with ThreadPoolExecutor(max_workers=min(max_workers, len(by_host))) as pool:
                for future in [pool.submit(run_host, ms) for ms in by_host.values()]:
                    future.result()
        else:
            run_host(ordered)
        return [results[m.qualified_id] for m in ordered] + errors

    def _test_one(self, model: Model, threshold: int) -> dict[str, Any]:
        started = time.monotonic()
        try:
            job = self.submit(model.qualified_id, threshold)
            view = self.watch(job.id)
        except LMStrixError as exc:
            return _failed_before_running(model.id, exc)
        return self.result(view, time.monotonic() - started)


def _log_probe(model: str) -> ProbeCallback:
    def show(row: ProbeRow) -> None:
        if row.outcome == "in_flight":
            log.info("%s: %s probe at %s ...", model, row.kind, row.size)
        else:
            extra = f" ({row.error})" if row.error else ""
            log.info("%s: %s probe at %s: %s%s", model, row.kind, row.size, row.outcome, extra)

    return show


__all__ = [
    "RESULT_KEYS",
    "ContextTestRequest",
    "ContextTester",
    "JobView",
    "ProbeRow",
    "job_result",
    "size_order",
]
