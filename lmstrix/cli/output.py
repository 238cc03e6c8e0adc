"""What several commands print the same way: JSON for scripts, and the id of a queued job.

Results go to stdout (scripts capture them); hints and progress go to stderr.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import click


class Submitted(Protocol):
    """A queued job as the facades return it."""

    @property
    def id(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def model(self) -> str: ...


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def echo_submitted(job: Submitted, *, distributed: bool, as_json: bool, also: str = "") -> None:
    """Print a queued job's id (or JSON) and, in embedded mode, who will run it."""
    if as_json:
        echo_json({"job_id": job.id, "host": job.host, "model": job.model})
    else:
        click.echo(job.id)
    if not distributed:
        click.echo(
            f"queued for host {job.host}; it runs when a worker does: "
            f"`lmstrix worker --host {job.host}`{also}",
            err=True,
        )


__all__ = ["echo_json", "echo_submitted"]
