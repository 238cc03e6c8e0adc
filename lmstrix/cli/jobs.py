"""``lmstrix jobs``: look at and manage queued, running and finished jobs.

Thin wrappers over :class:`~lmstrix.core.jobs.JobManager`; job ids and results go to stdout,
notes to stderr.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime, timedelta
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from lmstrix.cli.cells import seconds_text
from lmstrix.cli.errors import confirm, handle_errors, yes_option
from lmstrix.cli.fields import field_lines
from lmstrix.cli.infer import echo_pieces
from lmstrix.cli.output import echo_json
from lmstrix.cli.tables import fitted_table, print_table, wide_option
from lmstrix.core.jobs import JobManager, JobView
from lmstrix.domain.clock import utcnow

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``30s``, ``10m``, ``12h``, ``7d``, ``2w`` (a bare number is seconds)."""
    m = _DURATION.match(text)
    if not m:
        raise click.BadParameter(f"{text!r} is not a duration like 30s, 10m, 12h, 7d or 2w")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


def _took(job: JobView, now: datetime) -> float | None:
    """How long the job ran: until it ended, or until now while it runs."""
    if job.started_at is None:
        return None
    return ((job.finished_at or now) - job.started_at).total_seconds()


def _job_line(job: JobView) -> str:
    """One line about a job, for stderr after ``wait`` and ``follow``."""
    took = _took(job, utcnow())
    err = f"  {job.error_type}" if job.error_type else ""
    return (
        f"{job.id}  {job.kind}  {job.status}  {job.host}  {job.model or '-'}"
        + (f"  {seconds_text(took)}" if took is not None else "")
        + err
    )


STATUS_STYLES = {"succeeded": "green", "failed": "red", "running": "yellow", "expired": "red"}
HEADERS = ("ID", "Kind", "Model", "Host", "Status", "Age", "Took")


def jobs_table(found: list[JobView], *, wide: bool) -> Table:
    now = utcnow()
    rows: list[list[str | Text]] = []
    for job in found:
        took = _took(job, now)
        rows.append(
            [
                job.id,
                job.kind,
                job.model or "-",
                job.host,
                Text(job.status, style=STATUS_STYLES.get(job.status, "")),
                seconds_text((now - job.created_at).total_seconds()),
                "-" if took is None else seconds_text(took),
            ]
        )
    return fitted_table(
        HEADERS, rows, shrink=("ID", "Model", "Host"), right=("Age", "Took"), wide=wide
    )


def show_fields(job: JobView) -> dict[str, Any]:
    """What ``jobs show`` prints, in reading order."""
    took = _took(job, utcnow())
    error = f"{job.error_type}: {job.error_message}" if job.error_type else None
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "host": job.host,
        "model": job.model,
        "priority": job.priority,
        "attempts": f"{job.attempts} of {job.max_attempts}",
        "created": job.created_at,
        "started": job.started_at,
        "finished": job.finished_at,
        "took": None if took is None else seconds_text(took),
        "cancel requested": job.cancel_requested_at,
        "worker": job.worker_id,
        "error": error,
        "request": job.request,
        "result": {k: v for k, v in (job.result or {}).items() if k != "error_details"},
    }


@click.group()
def jobs() -> None:
    """Look at and manage queued, running and finished jobs."""


@jobs.command(name="list")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled", "expired"]),
)
@click.option("--host")
@click.option("--model")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@wide_option
@handle_errors
def jobs_list(
    statuses: tuple[str, ...],
    host: str | None,
    model: str | None,
    limit: int,
    as_json: bool,
    wide: bool,
) -> None:
    """Newest jobs first: id, kind, model, host, status, age and how long each ran. An id
    prefix is enough wherever a job id is asked for."""
    with JobManager() as manager:
        if host is not None:
            manager.host(host)  # a clear error for an unknown host
        found = manager.list_jobs(status=statuses or None, host=host, model=model, limit=limit)
    if as_json:
        echo_json([j.to_dict() for j in found])
        return
    if not found:
        click.echo("no jobs", err=True)
        return
    print_table(jobs_table(found, wide=wide), wide=wide)


@jobs.command(name="show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def jobs_show(job_id: str, as_json: bool) -> None:
    """One job with its request and result (JOB_ID or a prefix of it)."""
    with JobManager() as manager:
        job = manager.get_job(job_id)
    if as_json:
        echo_json(job.to_dict())
        return
    for line in field_lines(show_fields(job)):
        click.echo(line)


@jobs.command(name="wait")
@click.argument("job_id")
@click.option("--timeout", type=float, default=300.0, show_default=True)
@click.option("--cancel-on-timeout", is_flag=True, help="Cancel the job if it is not done.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def jobs_wait(job_id: str, timeout: float, cancel_on_timeout: bool, as_json: bool) -> None:
    """Wait until a job is finished; exit 1 unless it succeeded."""
    with JobManager() as manager:
        job = manager.wait_job(job_id, timeout, cancel_on_timeout=cancel_on_timeout)
    if as_json:
        echo_json(job.to_dict())
    elif job.result and "response" in job.result:
        click.echo(job.result["response"])
    click.echo(_job_line(job), err=True)
    if job.status != "succeeded":
        sys.exit(1)


@jobs.command(name="follow")
@click.argument("job_id")
@click.option("--timeout", type=float, default=None, help="Seconds to follow (default: no limit).")
@handle_errors
def jobs_follow(job_id: str, timeout: float | None) -> None:
    """Print an inference job's answer as it is written, from its start; exit 1 unless it
    succeeded. Ctrl-C stops following and leaves the job running."""
    with JobManager() as manager:
        stream = manager.follow_job(job_id, timeout)
        try:
            result = echo_pieces(stream)
        except KeyboardInterrupt:
            click.echo(f"stopped following; job {job_id} goes on", err=True)
            sys.exit(130)
        job = manager.get_job(stream.job_id)
    click.echo(_job_line(job), err=True)
    if not result["succeeded"]:
        if result["error"]:
            click.echo(f"error: {result['error']}", err=True)
        sys.exit(1)


@jobs.command(name="cancel")
@click.argument("job_ids", nargs=-1, required=True)
@handle_errors
def jobs_cancel(job_ids: tuple[str, ...]) -> None:
    """Cancel jobs: queued ones at once, running ones at their next chunk."""
    with JobManager() as manager:
        for job_id in job_ids:
            job = manager.cancel_job(job_id)
            state = job.status if job.status != "running" else "cancel requested"
            click.echo(f"{job.id}  {state}")


@jobs.command(name="retry")
@click.argument("job_ids", nargs=-1, required=True)
@handle_errors
def jobs_retry(job_ids: tuple[str, ...]) -> None:
    """Queue failed, cancelled or expired jobs again."""
    with JobManager() as manager:
        for job_id in job_ids:
            job = manager.retry_job(job_id)
            click.echo(f"{job.id}  queued on {job.host}")


@jobs.command(name="prune")
@click.option(
    "--older-than",
    default="7d",
    show_default=True,
    help="Finished more than this long ago (30m, 12h, 7d, 2w).",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["succeeded", "failed", "cancelled", "expired"]),
)
@yes_option
@handle_errors
def jobs_prune(older_than: str, statuses: tuple[str, ...], yes: bool) -> None:
    """Delete finished jobs (their results too); asks first unless --yes."""
    age = parse_duration(older_than)
    which = "/".join(statuses) if statuses else "finished"
    confirm(f"delete every {which} job that ended more than {older_than} ago?", yes=yes)
    with JobManager() as manager:
        kwargs: dict[str, Any] = {"statuses": statuses} if statuses else {}
        n = manager.prune_jobs(age, **kwargs)
    click.echo(f"pruned {n} job(s)")


@jobs.command(name="reap")
@handle_errors
def jobs_reap() -> None:
    """Re-queue running jobs whose worker died (lease expired) and ring their hosts."""
    with JobManager() as manager:
        reaped = manager.reap()
    for job in reaped:
        state = "cancelled" if job.cancelled else "queued again" if job.requeued else "failed"
        click.echo(f"{job.id}  {state} on {job.host}")
    click.echo(f"reaped {len(reaped)} job(s)", err=True)


__all__ = ["jobs", "parse_duration"]
