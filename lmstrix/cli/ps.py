"""``lmstrix ps`` and ``lmstrix stats``: each host at a glance.

Both read one :meth:`~lmstrix.core.jobs.JobManager.snapshot` (the figures of ``/metrics`` and
the dashboard) and print one line per configured host: ``ps`` what runs now (workers, loaded
model and its context, current job, queue), ``stats`` the last hour (succeeded, failed, loads,
swaps, mean load time, tokens per second). ``--json`` prints the same hosts with every figure,
timestamps in the one format.
"""

from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from lmstrix.cli.cells import seconds_text
from lmstrix.cli.errors import handle_errors
from lmstrix.cli.output import echo_json
from lmstrix.cli.tables import fitted_table, print_table, wide_option
from lmstrix.core.jobs import JobManager
from lmstrix.domain.clock import iso_utc

PS_HEADERS = ("Host", "Workers", "Model", "Context", "Job", "Queued", "Oldest")
STATS_HEADERS = ("Host", "Queued", "OK", "Failed", "Cancel", "Loads", "Swaps", "Load s", "Tok/s")


def _hosts() -> dict[str, Any]:
    with JobManager() as manager:
        snap = manager.snapshot()
        return {"taken_at": iso_utc(snap.taken_at), "hosts": manager.host_rows(snap)}


def _number(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def _workers(host: dict[str, Any]) -> str:
    modes = sorted({w["mode"][0] for w in host["workers"]})  # e: embedded, d: distributed
    return f"{len(host['workers'])} {''.join(modes)}".strip() if host["workers"] else "none"


def ps_row(host: dict[str, Any]) -> list[str | Text]:
    oldest = host["oldest_wait"]
    return [
        host["host"],
        _workers(host),
        host["loaded_model"] or "-",
        _number(host["loaded_context"]),
        host["current_job"] or "-",
        str(host["queue_depth"]),
        "-" if oldest is None else seconds_text(oldest),
    ]


def stats_row(host: dict[str, Any]) -> list[str | Text]:
    return [
        host["host"],
        str(host["queue_depth"]),
        str(host["succeeded"]),
        str(host["failed"]),
        str(host["cancelled"]),
        str(host["loads"]),
        str(host["swaps"]),
        _number(host["mean_load_seconds"]),
        _number(host["tokens_per_second"]),
    ]


def _no_worker_note(hosts: list[dict[str, Any]]) -> None:
    for host in hosts:
        if not host["worker_alive"]:
            click.echo(
                f"{host['host']}: no live worker; start one with "
                f"`lmstrix worker --host {host['host']}`",
                err=True,
            )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print every host's figures as JSON.")
@wide_option
@handle_errors
def ps(as_json: bool, wide: bool) -> None:
    """What each host is doing now: its live workers (e embedded, d distributed), the model
    loaded and its context, the job it runs, and its queue (depth, oldest wait)."""
    data = _hosts()
    if as_json:
        echo_json(data)
        return
    rows = [ps_row(h) for h in data["hosts"]]
    table = fitted_table(
        PS_HEADERS,
        rows,
        shrink=("Host", "Model", "Job"),
        right=("Context", "Queued", "Oldest"),
        wide=wide,
    )
    print_table(table, wide=wide)
    _no_worker_note(data["hosts"])


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print every host's figures as JSON.")
@wide_option
@handle_errors
def stats(as_json: bool, wide: bool) -> None:
    """Each host over the last hour: jobs queued now, succeeded, failed and cancelled, model
    loads and swaps, mean load seconds and mean tokens per second."""
    data = _hosts()
    if as_json:
        echo_json(data)
        return
    rows = [stats_row(h) for h in data["hosts"]]
    table = fitted_table(STATS_HEADERS, rows, shrink=("Host",), right=STATS_HEADERS[1:], wide=wide)
    print_table(table, wide=wide)


__all__ = ["ps", "stats"]
