"""``lmstrix apply``: write tested contexts into this machine's LM Studio per-model defaults.

A thin wrapper over :class:`~lmstrix.core.lmstudio_defaults.LMStudioDefaults`. One model that
cannot be applied (never tested, not on this machine, no file path) is a one-line error with exit
code 2; a default-config file that is not valid JSON, or LM Studio's home not found, exit 3.
``--all`` reports the models it skipped and exits 0, or ``SOME_FAILED`` (11) when a file could
not be read or written (the others are still written).
"""

from __future__ import annotations

import sys

import click

from lmstrix.cli.errors import SOME_FAILED, handle_errors
from lmstrix.cli.output import echo_json
from lmstrix.core.lmstudio_defaults import LMStudioDefaults
from lmstrix.domain.errors import ValidationError
from lmstrix.domain.lmstudio_defaults import (
    CONTEXT_LENGTH_KEY,
    AppliedContext,
    ApplyReport,
    ContextCap,
)

_VERBS = {
    "created": ("created", "would create"),
    "updated": ("updated", "would update"),
    "unchanged": ("unchanged", "unchanged"),
}


def _describe(done: AppliedContext, cap: ContextCap | None) -> list[str]:
    verb = _VERBS[done.action][done.dry_run]
    how = f"tested {done.tested_context}" + (f", limit {cap}" if cap else "")
    if done.action == "unchanged":
        change = f"already {done.context_length}"
    elif done.previous is None:
        change = f"{done.context_length}"
    else:
        change = f"{done.previous} -> {done.context_length}"
    lines = [f"{verb} {done.model_id}: {CONTEXT_LENGTH_KEY} {change} ({how})", f"  {done.file}"]
    if done.backup:
        lines.append(f"  old file kept as {done.backup}")
    return lines


def _print_report(report: ApplyReport, cap: ContextCap | None) -> None:
    for done in report.applied:
        for line in _describe(done, cap):
            click.echo(line)
    for skipped in report.skipped:
        click.echo(f"skipped {skipped.model_id} on {skipped.host}: {skipped.reason}")
    for failed in report.failed:
        click.echo(f"error: {failed.model_id} on {failed.host}: {failed.reason}", err=True)
    if not (report.applied or report.skipped or report.failed):
        click.echo("no models in the registry; run `lmstrix scan`, then `lmstrix test`", err=True)
    if report.dry_run:
        click.echo("dry run: nothing was written", err=True)


@click.command()
@click.argument("model_id", metavar="[MODEL]", required=False)
@click.option("--all", "all_models", is_flag=True, help="Every tested model on this machine.")
@click.option(
    "--limit",
    metavar="N|N%",
    help="Write at most N tokens, or N% (1-100) of the tested context. Default: all of it.",
)
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option(
    "--host",
    help="Only this host's models; it vouches that the host's LM Studio is this machine's.",
)
@click.option(
    "--path",
    "model_path",
    help="The model's file path as `lms ls --json` shows it, when the registry has none.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@handle_errors
def apply(
    model_id: str | None,
    all_models: bool,
    limit: str | None,
    dry_run: bool,
    host: str | None,
    model_path: str | None,
    as_json: bool,
) -> None:
    """Write MODEL's tested context into LM Studio's default load settings for it.

    LM Studio then loads the model at that context. The value goes into the
    llm.load.contextLength load field of the model's file under LM Studio's home:

    \b
      <home>/.internal/user-concrete-model-default-config/<model path>.json

    The rest of the file is kept, and the old file is kept as <file>.bak. LM Studio's home
    is found on its own, or set with LMSTRIX_LMSTUDIO__HOME. Exit codes: 2 for a model that
    cannot be applied (never tested, not on this machine, no path), 3 for a file that is not
    valid JSON or no LM Studio home, 11 when --all could not write some files.
    """
    if bool(model_id) == all_models:
        raise ValidationError("MODEL", model_id, "give one MODEL or --all, not both or neither")
    if all_models and model_path:
        raise ValidationError("--path", model_path, "names one model's file; use it with MODEL")
    cap = ContextCap.parse(limit, field="--limit")
    defaults = LMStudioDefaults()
    if model_id:
        done = defaults.apply(model_id, limit=limit, dry_run=dry_run, host=host, path=model_path)
        report = ApplyReport(home=str(defaults.home), dry_run=dry_run, applied=[done])
    else:
        report = defaults.apply_all(limit=limit, dry_run=dry_run, host=host)
    if as_json:
        echo_json(report.to_dict())
        for failed in report.failed:
            click.echo(f"error: {failed.model_id} on {failed.host}: {failed.reason}", err=True)
    else:
        _print_report(report, cap)
    if report.failed:
        sys.exit(SOME_FAILED)


__all__ = ["apply"]
