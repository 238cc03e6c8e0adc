"""CLI commands for OpenAI-style batch files: ``lmstrix batch FILE.jsonl`` and friends.

    lmstrix batch requests.jsonl --wait --output results.jsonl
    lmstrix batch status batch_123
    lmstrix batch results batch_123 > results.jsonl
    lmstrix batch cancel batch_123
    lmstrix submit batch requests.jsonl      (registered in the ``submit`` group)

Thin wrappers over :class:`lmstrix.core.batch_processor.BatchProcessor`. Batch ids go to stdout
(scripts capture them), progress and hints to stderr.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import click
from rich.table import Table
from rich.text import Text

from lmstrix.cli.cells import one_line, seconds_text
from lmstrix.cli.errors import handle_errors
from lmstrix.cli.output import check_writable, echo_json
from lmstrix.cli.tables import fitted_table, print_table, wide_option
from lmstrix.core.batch_processor import BatchProcessor
from lmstrix.core.config import Config
from lmstrix.domain.errors import ValidationError
from lmstrix.domain.openai_batch import succeeded

HEADERS = ("Batch", "Status", "Model", "Done", "Failed", "Total", "Age", "Took")
STATUS_STYLES = {
    "completed": "green",
    "failed": "red",
    "expired": "red",
    "cancelled": "yellow",
    "in_progress": "yellow",
}
# The batch object's timestamps of an end, whichever it had.
ENDED = ("completed_at", "failed_at", "expired_at", "cancelled_at")


class _BatchGroup(click.Group):
    """``lmstrix batch FILE`` means ``lmstrix batch create FILE``: the common case stays short
    while ``status``/``results``/``cancel``/``list`` remain subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["create", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_BatchGroup)
def batch() -> None:
    """Run OpenAI Batch API files (JSONL of /v1/chat/completions requests) through the queue.

    `lmstrix batch FILE.jsonl` submits a file (same as `lmstrix batch create FILE.jsonl`).
    """


def _metadata(pairs: tuple[str, ...]) -> dict[str, str] | None:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--metadata")
        out[key] = value
    return out or None


def _summary(obj: dict[str, Any]) -> str:
    c = obj["request_counts"]
    return (
        f"{obj['id']}  {obj['status']:<11} {c['completed']}/{c['total']} completed, "
        f"{c['failed']} failed"
    )


def batch_table(found: list[dict[str, Any]], *, wide: bool) -> Table:
    """Batches one per line, fitted to the terminal: id, status, model, request counts, age and
    how long each ran (or has been running)."""
    now = time.time()
    rows: list[list[str | Text]] = []
    for obj in found:
        c = obj["request_counts"]
        start = obj.get("in_progress_at") or obj["created_at"]
        ended = next((obj[k] for k in ENDED if obj.get(k)), None)
        if ended is None and obj["status"] == "in_progress":
            ended = now
        took = None if ended is None else ended - start
        rows.append(
            [
                obj["id"],
                Text(obj["status"], style=STATUS_STYLES.get(obj["status"], "")),
                obj["model"] or "(several)",
                str(c["completed"]),
                str(c["failed"]),
                str(c["total"]),
                seconds_text(now - obj["created_at"]),
                "-" if took is None else seconds_text(took),
            ]
        )
    return fitted_table(HEADERS, rows, shrink=("Batch", "Model"), right=HEADERS[3:], wide=wide)


def _errors(obj: dict[str, Any]) -> None:
    """A batch's errors under its table, one line each."""
    for err in (obj.get("errors") or {}).get("data", []):
        click.echo(f"error: {obj['id']}: {one_line(err['message'])}", err=True)


class _Progress:
    """Progress on stderr: one rewritten line on a terminal, a line per tenth of the batch
    otherwise (a log of a 50 000-request batch should not hold 50 000 lines)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last_step = -1
        self.last_status = ""

    def __call__(self, obj: dict[str, Any]) -> None:
        c = obj["request_counts"]
        done = c["completed"] + c["failed"]
        step = done * 10 // max(c["total"], 1)
        if self.tty:
            click.echo("\r" + _summary(obj), nl=False, err=True)
        elif step != self.last_step or obj["status"] != self.last_status:
            click.echo(_summary(obj), err=True)
        self.last_step, self.last_status = step, obj["status"]

    def close(self) -> None:
        if self.tty:
            click.echo("", err=True)


@contextmanager
def _opened(path: str | None) -> Iterator[IO[str] | None]:
    if path is None:
        yield None
        return
    with Path(path).open("w", encoding="utf-8") as f:
        yield f


def _write_results(
    bp: BatchProcessor, batch_id: str, output: str | None, errors: str | None
) -> tuple[int, int]:
    """Write output lines (failures to ``errors`` when given, as OpenAI splits them);
    returns (successes, failures). Without ``output`` the lines go to stdout."""
    ok = bad = 0
    with _opened(output) as out, _opened(errors) as err:
        for line in bp.batch_results(batch_id):
            good = succeeded(line)
            ok, bad = ok + good, bad + (not good)
            text = json.dumps(line, ensure_ascii=False)
            target = out if (good or err is None) else err
            if target is None:
                click.echo(text)
            else:
                target.write(text + "\n")
    return ok, bad


def _worker_hint(distributed: bool, batch_id: str) -> None:
    if not distributed:
        click.echo(
            f"queued; it runs when a worker does: `lmstrix worker --host <host>` for its hosts "
            f"(or `lmstrix batch status {batch_id}` later)",
            err=True,
        )


def submit_file(file: str, model: str | None, metadata: tuple[str, ...], as_json: bool) -> None:
    """Validate and queue FILE without waiting (``lmstrix submit batch``; ``batch create``)."""
    config = Config.load()
    with BatchProcessor(model, config=config) as bp:
        batch_id = bp.submit_jsonl(file, metadata=_metadata(metadata), start_worker=False)
        obj = bp.batch_status(batch_id)
        if as_json:
            echo_json(obj)
        else:
            click.echo(batch_id)
            click.echo(_summary(obj), err=True)
        _worker_hint(config.distributed, batch_id)


@batch.command(name="create")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--wait", is_flag=True, help="Run it now and wait, showing progress.")
@click.option("-o", "--output", help="With --wait: write the results (JSONL) to this file.")
@click.option("--errors", help="With --wait: failed requests go to this file instead.")
@click.option("-m", "--model", help="Model for requests whose body names none.")
@click.option("--metadata", multiple=True, help="KEY=VALUE stored on the batch (repeatable).")
@click.option("--timeout", type=float, help="With --wait: give up waiting after this many s.")
@click.option("--json", "as_json", is_flag=True, help="Print the batch object as JSON.")
@handle_errors
def batch_create(
    file: str,
    wait: bool,
    output: str | None,
    errors: str | None,
    model: str | None,
    metadata: tuple[str, ...],
    timeout: float | None,
    as_json: bool,
) -> None:
    """Submit FILE (OpenAI Batch JSONL); print the batch id."""
    if not wait:
        if output or errors or timeout:
            raise ValidationError("--output/--errors/--timeout", file, "need --wait")
        submit_file(file, model, metadata, as_json)
        return
    check_writable("--output", output)
    check_writable("--errors", errors)
    with BatchProcessor(model) as bp:
        batch_id = bp.submit_jsonl(file, metadata=_metadata(metadata))
        if not as_json:
            click.echo(batch_id)
        progress = _Progress()
        try:
            final = bp.wait_batch(batch_id, timeout=timeout, on_progress=progress)
        finally:
            progress.close()
        if output or errors:
            ok, bad = _write_results(bp, batch_id, output, errors)
            where = " and ".join(f for f in (output, errors) if f)
            click.echo(f"wrote {ok + bad} result line(s) to {where}", err=True)
        else:
            click.echo(f"results: `lmstrix batch results {batch_id}`", err=True)
    if as_json:
        echo_json(final)
    counts = final["request_counts"]
    if final["status"] != "completed" or counts["failed"]:
        click.echo(
            f"error: batch {final['status']}: {counts['failed']} of {counts['total']} "
            "requests failed",
            err=True,
        )
        sys.exit(1)


@batch.command(name="status")
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True, help="Print the OpenAI batch object.")
@wide_option
@handle_errors
def batch_status(batch_id: str, as_json: bool, wide: bool) -> None:
    """Status, request counts and times of a batch (its errors under the table)."""
    with BatchProcessor() as bp:
        obj = bp.batch_status(batch_id)
    if as_json:
        echo_json(obj)
        return
    print_table(batch_table([obj], wide=wide), wide=wide)
    _errors(obj)


@batch.command(name="results")
@click.argument("batch_id")
@click.option("-o", "--output", help="Write the results (JSONL) here instead of stdout.")
@click.option("--errors", help="Failed requests go to this file instead.")
@handle_errors
def batch_results(batch_id: str, output: str | None, errors: str | None) -> None:
    """Output lines (OpenAI's format) of the finished requests, in input order."""
    check_writable("--output", output)
    check_writable("--errors", errors)
    with BatchProcessor() as bp:
        obj = bp.batch_status(batch_id)
        ok, bad = _write_results(bp, batch_id, output, errors)
    c = obj["request_counts"]
    if obj["status"] not in ("completed", "cancelled", "expired", "failed"):
        click.echo(f"batch {obj['status']}: {ok + bad} of {c['total']} results so far", err=True)
    elif output or errors:
        click.echo(f"wrote {ok + bad} result line(s)", err=True)


@batch.command(name="cancel")
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def batch_cancel(batch_id: str, as_json: bool) -> None:
    """Cancel a batch: queued requests at once, a running one at its next chunk."""
    with BatchProcessor() as bp:
        obj = bp.cancel_batch(batch_id)
    if as_json:
        echo_json(obj)
    else:
        click.echo(_summary(obj))


@batch.command(name="list")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the OpenAI batch objects.")
@wide_option
@handle_errors
def batch_list(limit: int, as_json: bool, wide: bool) -> None:
    """Newest batches first: id, status, model, requests done and failed, age, time taken."""
    with BatchProcessor() as bp:
        found = bp.list_batches(limit)
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("no batches", err=True)
        return
    print_table(batch_table(found, wide=wide), wide=wide)


__all__ = ["batch", "submit_file"]
