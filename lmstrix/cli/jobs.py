"""``lmstrix jobs``: look at and manage queued, running and finished jobs.

Thin wrappers over :class:`~lmstrix.core.jobs.JobManager`; job ids and results go to stdout,
notes to stderr.
"""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from typing import Any

import click

from lmstrix.cli.errors import handle_errors
from lmstrix.cli.infer import echo_pieces
from lmstrix.cli.output import echo_json
from lmstrix.core.jobs import JobManager, JobView

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``30s``, ``10m``, ``12h``, ``7d``, ``2w`` (a bare number is seconds)."""
    m = _DURATION.match(text)
    if not m:
        raise click.BadParameter(f"{text!r} is not a duration like 30s, 10m, 12h, 7d or 2w")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


def _job_line(job: JobView) -> str:
    took = ""
    if job.started_at and job.finished_at:
        took = f" {(job.finished_at - job.started_at).total_seconds():.2f}s"
    err = f"  {job.error_type}" if job.error_type else ""
    created = job.created_at.strftime("%Y-%m-%d %H:%M:%S")
    return f"{job.id}  {job.status:<9} {job.host:<12} {job.model or '-':<32} {created}{took}{err}"


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
@handle_errors
def jobs_list(
    statuses: tuple[str, ...], host: str | None, model: str | None, limit: int, as_json: bool
) -> None:
    """Newest jobs first."""
    with JobManager() as manager:
        found = manager.list_jobs(status=statuses or None, host=host, model=model, limit=limit)
    if as_json:
        echo_json([j.to_dict() for j in found])
        return
    for job in found:
        click.echo(_job_line(job))
    if not found:
        click.echo("no jobs", err=True)


@jobs.command(name="show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def jobs_show(job_id: str, as_json: bool) -> None:
    """One job with its request and result."""
    with JobManager() as manager:
        job = manager.get_job(job_id)
    if as_json:
        echo_json(job.to_dict())
        return
    for key, value in job.to_dict().items():
        if value is not None:
            click.echo(f"{key}: {value}")


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
@handle_errors
def jobs_prune(older_than: str, statuses: tuple[str, ...]) -> None:
    """Delete finished jobs (their results too)."""
    with JobManager() as manager:
        kwargs: dict[str, Any] = {"statuses": statuses} if statuses else {}
        n = manager.prune_jobs(parse_duration(older_than), **kwargs)
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
