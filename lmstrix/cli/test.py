"""``lmstrix test``: find each model's real context limit, with a live view of every probe; and
``lmstrix submit test``, which only queues the test.

Thin over :class:`~lmstrix.core.context_tester.ContextTester`: bad input is refused by the same
planning code the API uses (no job, no probe), the test runs as a ``context_test`` job on the
model's host, and the view follows its probe rows. Exit codes: 0 when every test ran to a verdict
(a small limit is a verdict, not an error), 1 when a test could not run or was cancelled, and
the usual error codes for bad input.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from lmstrix.cli.errors import handle_errors
from lmstrix.cli.output import echo_json, echo_submitted
from lmstrix.cli.probe_view import ProbeView
from lmstrix.core.config import Config
from lmstrix.core.context_tester import ContextTester, ContextTestRequest, JobView, size_order
from lmstrix.domain.context_search import DEFAULT_THRESHOLD
from lmstrix.domain.errors import LMStrixError, ValidationError
from lmstrix.domain.model import Model
from lmstrix.domain.needle import check_depths
from lmstrix.domain.payloads import ContextTestJobResult


def _test_options(fn: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--threshold",
                type=int,
                help="Never test above this many tokens "
                f"[default: safety.max_context_threshold, {DEFAULT_THRESHOLD}].",
            ),
            click.option("--ctx", type=int, help="Test exactly this context size."),
            click.option(
                "--min-context",
                type=int,
                help="Search no lower than this many tokens (at least 256) [default: 2048].",
            ),
            click.option("--reset", is_flag=True, help="Forget earlier results first."),
            click.option(
                "--force", is_flag=True, help="Test a --ctx at or above the last known bad size."
            ),
            click.option(
                "--depths",
                help="Where the needles sit, as shares of the prompt, e.g. 0,0.25,0.5,0.75,1 "
                "[default: 0,0.5,1: start, middle, end]; a probe passes when all are recalled.",
            ),
            click.option("--prompt", help="Custom question (any non-empty answer passes)."),
            click.option(
                "--file-prompt",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                help="Read the custom question from this file.",
            ),
            click.option("--json", "as_json", is_flag=True, help="Print JSON."),
        ]
    ):
        fn = option(fn)
    return fn


def read_question(prompt: str | None, file_prompt: Path | None) -> str | None:
    """The custom question from ``--prompt`` or ``--file-prompt`` (not both, not empty)."""
    if prompt is not None and file_prompt is not None:
        raise ValidationError("prompt", prompt, "give --prompt or --file-prompt, not both")
    if file_prompt is not None:
        prompt = file_prompt.read_text(encoding="utf-8").strip()
    if prompt is not None and not prompt.strip():
        raise ValidationError("prompt", prompt, "must not be empty")
    return prompt


# -- text ----------------------------------------------------------------------------------------


def plan_dict(model: Model, request: ContextTestRequest) -> dict[str, Any]:
    """What a dry run reports: the model, its host, and the range the search would cover."""
    config = request.search_config()
    fresh = request.reset or request.ctx is not None
    return {
        "model_id": model.id,
        "host": model.host,
        "host_url": model.host_url,
        "declared_context": model.declared_context,
        "threshold": request.threshold,
        "ctx": request.ctx,
        "lower": config.lower,
        "upper": config.upper,
        "known_good": None if fresh else model.last_known_good_context,
        "known_bad": None if fresh else model.last_known_bad_context,
        "output_tokens": request.output_tokens,
        "custom_prompt": request.question is not None,
    }


def plan_line(plan: dict[str, Any]) -> str:
    """One line per model for ``--dry-run``."""
    where = f"{plan['model_id']} on {plan['host']} ({plan['host_url']})"
    if plan["ctx"] is not None:
        return f"would test {where} at exactly {plan['ctx']} tokens"
    text = (
        f"would test {where}: sizes {plan['lower']} to {plan['upper']} tokens "
        f"(declared {plan['declared_context'] or '?'}, threshold {plan['threshold']})"
    )
    known = [f"{k} {plan[f'known_{k}']}" for k in ("good", "bad") if plan[f"known_{k}"]]
    if known:
        text += f"; known {', '.join(known)} (--reset to forget)"
    return text


# What a test that reused earlier results says (its line, and "hint" in --json).
RETEST_HINT = "nothing was probed (--reset tests it again)"
CONFIRMED_HINT = "confirmed now (--reset searches again)"


def retest_hint(job: JobView, result: dict[str, Any]) -> str | None:
    """For a test of a model tested before: ``RETEST_HINT`` when it probed nothing,
    ``CONFIRMED_HINT`` when it only confirmed the size found before; None otherwise (a test at
    one size, --ctx, always probes and says what it found)."""
    if job.status != "succeeded" or not result["test_successful"]:
        return None
    stored = ContextTestJobResult.from_row(job.result)
    if stored.single_size:
        return None
    if not result["iterations"]:
        return RETEST_HINT
    known = stored.resumed.known_good if stored.resumed is not None else None
    return CONFIRMED_HINT if known == result["optimal_context"] else None


def verdict_line(model: str, host: str, job: JobView, result: dict[str, Any]) -> str:
    """The last line of a test: what the model handles, or why the test did not finish."""
    where = f"{model} on {host}"
    took = f"{result['iterations']} probes, {result['total_time']:.1f}s"
    if job.status != "succeeded":
        return f"✗ {where}: the test did not finish ({result['error']}); job {job.id}"
    stored = ContextTestJobResult.from_row(job.result)
    single_size = stored.single_size
    optimal = result["optimal_context"]
    if single_size:
        if result["test_successful"]:
            return f"✓ {where}: works at {optimal} tokens ({took})"
        return f"✗ {where}: fails at {single_size} tokens: {result['error']} ({took})"
    if not result["test_successful"]:
        return f"✗ {where}: {result['error']} ({took})"
    hint = retest_hint(job, result)
    if hint is not None:
        return f"✓ {where}: works at {optimal} tokens, as tested before; {hint} ({took})"
    if result["failure_point"] is None:
        return f"✓ {where}: works at {optimal} tokens, the top of the range tested ({took})"
    loads = stored.loadable_context
    also = f", loads up to {loads}" if loads and loads > optimal else ""
    if stored.failed_depths:
        also += ", misses depth " + ", ".join(f"{d:g}" for d in stored.failed_depths)
    if stored.disturbed:
        also += "; another client used the host meanwhile, the figures may be disturbed"
    return (
        f"✓ {where}: uses up to {optimal} tokens (fails at {result['failure_point']}{also}; {took})"
    )


def parse_depths(text: str | None) -> tuple[float, ...] | None:
    """``--depths 0,0.5,1`` as a tuple (None: the default start, middle and end)."""
    if text is None:
        return None
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValidationError(
            "depths", text, "must be numbers from 0 to 1 separated by commas, e.g. 0,0.5,1"
        ) from None
    return check_depths(values)


# -- the commands --------------------------------------------------------------------------------


def _run_one(
    tester: ContextTester,
    model: Model,
    request: ContextTestRequest,
    *,
    force: bool,
    console: Console | None,
    heading: str = "",
) -> tuple[JobView, dict[str, Any]]:
    """Queue one planned test and follow it; Ctrl-C cancels the job."""
    started = time.monotonic()
    job = tester.submit(
        model.qualified_id,
        request.threshold,
        request.question,
        request.reset,
        ctx=request.ctx,
        force=force,
        min_context=None if request.ctx is not None else request.min_context,
    )
    try:
        if console is None:
            view = tester.watch(job.id)
        else:
            title = f"{heading}{model.id} on {model.host}"
            with ProbeView(console, title) as live:
                view = tester.watch(job.id, live.update)
    except KeyboardInterrupt:
        tester.cancel(job.id)
        click.echo(f"\ncancelled job {job.id}", err=True)
        sys.exit(130)
    return view, tester.result(view, time.monotonic() - started)


def _candidates(tester: ContextTester, reset: bool) -> tuple[list[Model], list[str]]:
    """``--all``: present chat models, smallest first; tested ones only with ``reset``."""
    chat = tester.chat_models()
    skipped = [
        f"{m.qualified_id}: already tested ({m.tested_context}); --reset to test again"
        for m in chat
        if m.test_status == "tested" and not reset
    ]
    todo = [m for m in chat if reset or m.test_status != "tested"]
    return size_order(todo), skipped


@click.command(name="test")
@click.argument("model_id", required=False)
@click.option("--all", "test_all", is_flag=True, help="Test every chat model, smallest first.")
@_test_options
@click.option("--dry-run", is_flag=True, help="Say what would be tested and where; no probe.")
@handle_errors
def test(
    model_id: str | None,
    test_all: bool,
    threshold: int | None,
    ctx: int | None,
    min_context: int | None,
    reset: bool,
    force: bool,
    depths: str | None,
    prompt: str | None,
    file_prompt: Path | None,
    as_json: bool,
    dry_run: bool,
) -> None:
    """Find the largest context MODEL_ID (or every model) both loads and really uses.

    Load probes find the largest size that loads; use probes fill the context with text,
    facts at its start, middle and end and the questions last, and check the answer. A size is
    only judged on the model loaded at exactly that size. Every probe is saved before it runs,
    so an interrupted test resumes where it stopped.
    """
    if bool(model_id) == test_all:
        raise ValidationError(
            "MODEL_ID",
            model_id or "",
            "give one MODEL_ID or --all, not both"
            if test_all
            else "give one MODEL_ID or --all (`lmstrix list` shows the ids)",
        )
    question = read_question(prompt, file_prompt)
    config = Config.load()
    if threshold is None:
        threshold = config.settings.safety.max_context_threshold
    tester = ContextTester(config=config, safety_threshold=threshold, depths=parse_depths(depths))
    try:
        if test_all:
            models, skipped = _candidates(tester, reset)
        else:
            assert model_id is not None
            models, skipped = [tester.model(model_id)], []
        plans: list[tuple[Model, ContextTestRequest]] = []
        for m in models:
            try:
                request = tester.plan(
                    m, threshold, question, reset, ctx=ctx, force=force, min_context=min_context
                )
            except ValidationError as exc:
                if not test_all:
                    raise
                skipped.append(f"{m.qualified_id}: {exc.reason}")
                continue
            plans.append((m, request))
        for note in skipped:
            click.echo(f"skipped {note}", err=True)
        if dry_run:
            _dry_run(plans, as_json)
            return
        failures = _run_all(tester, plans, force=force, as_json=as_json)
    finally:
        tester.close()
    if failures:
        sys.exit(1)


def _dry_run(plans: list[tuple[Model, ContextTestRequest]], as_json: bool) -> None:
    found = [plan_dict(m, r) for m, r in plans]
    if as_json:
        echo_json(found)
        return
    click.echo(f"dry run: {len(found)} model(s) would be tested, nothing is probed")
    for plan in found:
        click.echo(plan_line(plan))


def _run_all(
    tester: ContextTester,
    plans: list[tuple[Model, ContextTestRequest]],
    *,
    force: bool,
    as_json: bool,
) -> int:
    """Run the planned tests one after the other; returns how many did not finish."""
    console = None if as_json else Console()
    out: list[dict[str, Any]] = []
    failures = 0
    for i, (m, request) in enumerate(plans, 1):
        heading = f"[{i}/{len(plans)}] " if len(plans) > 1 else ""
        bad = m.last_known_bad_context
        if force and request.ctx is not None and bad is not None and request.ctx >= bad:
            click.echo(f"force: testing {request.ctx}, at or above the known bad {bad}", err=True)
        try:
            view, result = _run_one(
                tester, m, request, force=force, console=console, heading=heading
            )
        except LMStrixError as exc:  # e.g. the host went away between planning and queueing
            if len(plans) == 1:
                raise
            click.echo(f"error: {m.qualified_id}: {exc}", err=True)
            failures += 1
            out.append(
                {"host": m.host, "job_id": None, "job_status": "not queued", "error": str(exc)}
            )
            continue
        if view.status != "succeeded":
            failures += 1
        if as_json:
            out.append(
                {
                    **result,
                    "host": m.host,
                    "job_id": view.id,
                    "job_status": view.status,
                    "hint": retest_hint(view, result),
                }
            )
        else:
            click.echo(verdict_line(m.id, m.host, view, result))
    if as_json:
        echo_json(out[0] if len(plans) == 1 else out)
    elif len(plans) > 1:
        click.echo(f"{len(plans) - failures}/{len(plans)} test(s) finished", err=True)
    return failures


@click.command(name="test")
@click.argument("model_id")
@_test_options
@handle_errors
def submit_test(
    model_id: str,
    threshold: int | None,
    ctx: int | None,
    min_context: int | None,
    reset: bool,
    force: bool,
    depths: str | None,
    prompt: str | None,
    file_prompt: Path | None,
    as_json: bool,
) -> None:
    """Queue a context test of MODEL_ID and print its job id (`lmstrix jobs wait` follows it)."""
    question = read_question(prompt, file_prompt)
    config = Config.load()
    if threshold is None:
        threshold = config.settings.safety.max_context_threshold
    tester = ContextTester(config=config, safety_threshold=threshold, depths=parse_depths(depths))
    try:
        job = tester.submit(
            model_id,
            threshold,
            question,
            reset,
            ctx=ctx,
            force=force,
            start_worker=False,
            min_context=min_context,
        )
    finally:
        tester.close()
    echo_submitted(job, distributed=config.distributed, as_json=as_json)


__all__ = [
    "CONFIRMED_HINT",
    "RETEST_HINT",
    "parse_depths",
    "plan_line",
    "retest_hint",
    "submit_test",
    "test",
    "verdict_line",
]
