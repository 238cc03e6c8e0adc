"""``lmstrix workers``: which workers serve which hosts, and what they are doing.

Thin over :meth:`~lmstrix.core.jobs.JobManager.workers`; the table goes to stdout, a note to
stderr when no worker is live.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
from rich.text import Text

from lmstrix.cli.cells import seconds_text
from lmstrix.cli.errors import handle_errors
from lmstrix.cli.output import echo_json
from lmstrix.cli.tables import fitted_table, print_table, wide_option
from lmstrix.core.jobs import JobManager
from lmstrix.domain.clock import utcnow
from lmstrix.domain.heartbeats import start_worker_command

HEADERS = ("Host", "Machine", "PID", "Mode", "Up", "Seen", "Job", "Model")


def _row(worker: dict[str, Any], now: datetime) -> list[str]:
    seen = seconds_text((now - worker["seen_at"]).total_seconds()) + " ago"
    return [
        worker["host"],
        worker["hostname"],
        str(worker["pid"]),
        worker["mode"],
        seconds_text((now - worker["started_at"]).total_seconds()),
        seen + ("" if worker["live"] else " (gone)"),
        worker["current_job"] or "-",
        worker["loaded_model"] or "-",
    ]


@click.command()
@click.option("--host", help="Only the workers of this configured host.")
@click.option("--all", "include_stale", is_flag=True, help="Also workers that stopped beating.")
@click.option("--json", "as_json", is_flag=True, help="Print the workers as JSON.")
@wide_option
@handle_errors
def workers(host: str | None, include_stale: bool, as_json: bool, wide: bool) -> None:
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
    rows: list[list[str | Text]] = [list(_row(w, now)) for w in found]
    shrink = ("Host", "Machine", "Job", "Model")
    table = fitted_table(HEADERS, rows, shrink=shrink, right=("PID", "Up"), wide=wide)
    print_table(table, wide=wide)


__all__ = ["workers"]
