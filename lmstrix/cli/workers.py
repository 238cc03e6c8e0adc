"""``lmstrix workers``: which workers serve which hosts, and what they are doing.

Thin over :meth:`~lmstrix.core.jobs.JobManager.workers`; the table goes to stdout, a note to
stderr when no worker is live.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from lmstrix.cli.errors import handle_errors
from lmstrix.cli.output import echo_json
from lmstrix.core.jobs import JobManager
from lmstrix.domain.clock import utcnow
from lmstrix.domain.heartbeats import start_worker_command

_HEADER = ("host", "machine", "pid", "mode", "since", "seen", "current job", "loaded model")


def _ago(when: datetime, now: datetime) -> str:
    seconds = max(0.0, (now - when).total_seconds())
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _row(worker: dict[str, Any], now: datetime) -> tuple[str, ...]:
    return (
        worker["host"],
        worker["hostname"],
        str(worker["pid"]),
        worker["mode"],
        worker["started_at"].strftime("%Y-%m-%d %H:%M:%S"),
        _ago(worker["seen_at"], now) + ("" if worker["live"] else " (gone)"),
        worker["current_job"] or "-",
        worker["loaded_model"] or "-",
    )


@click.command()
@click.option("--host", help="Only the workers of this configured host.")
@click.option("--all", "include_stale", is_flag=True, help="Also workers that stopped beating.")
@click.option("--json", "as_json", is_flag=True, help="Print the workers as JSON.")
@handle_errors
def workers(host: str | None, include_stale: bool, as_json: bool) -> None:
    """List the workers serving the hosts: machine, pid, mode, since, last heard from, the job
    they run and the model they have loaded."""
    with JobManager() as manager:
        if host is not None:
            manager.host(host)  # a clear error for an unknown host
        found = manager.workers(host, include_stale=include_stale)
    if as_json:
        echo_json(found)
        return
    if not found:
        where = f"host {host}" if host else "any host"
        hint = start_worker_command(host or "NAME")
        click.echo(f"no live worker serves {where}; start one with `{hint}`", err=True)
        return
    now = utcnow()
    rows = [_HEADER, *(_row(w, now) for w in found)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER))]
    for r in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)))


__all__ = ["workers"]
