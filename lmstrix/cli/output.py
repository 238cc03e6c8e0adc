"""What several commands print the same way: JSON for scripts, and the id of a queued job.

Results go to stdout (scripts capture them); hints, progress and the library's warnings go to
stderr.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import click

from lmstrix.domain.clock import iso_utc
from lmstrix.domain.errors import ValidationError
from lmstrix.domain.heartbeats import start_worker_command
from lmstrix.utils.logging import RedactingFilter, set_verbosity, setup_logging


class Submitted(Protocol):
    """A queued job as the facades return it."""

    @property
    def id(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def model(self) -> str: ...


def _json_value(value: Any) -> Any:
    """What ``json`` cannot write itself: timestamps in the one format (``iso_utc``), anything
    else (ids, paths) as its text."""
    if isinstance(value, datetime):
        return iso_utc(value)
    return str(value)


def echo_json(data: Any) -> None:
    """``data`` as indented JSON on stdout; every timestamp as ``iso_utc`` writes it."""
    click.echo(json.dumps(data, indent=2, default=_json_value))


def check_writable(option: str, path: str | Path | None) -> None:
    """Refuse an output file whose directory does not exist, before any work is done (a batch
    that ran for an hour must not fail at its last step)."""
    if path is None:
        return
    parent = Path(path).expanduser().parent
    if not parent.is_dir():
        raise ValidationError(
            option, str(path), f"its directory {parent} does not exist; create it or choose another"
        )
    if Path(path).is_dir():
        raise ValidationError(option, str(path), "is a directory; give a file name")


def echo_submitted(job: Submitted, *, distributed: bool, as_json: bool, also: str = "") -> None:
    """Print a queued job's id (or JSON) and, in embedded mode, who will run it."""
    if as_json:
        echo_json({"job_id": job.id, "host": job.host, "model": job.model})
    else:
        click.echo(job.id)
    if not distributed:
        click.echo(
            f"queued for host {job.host}; it runs when a worker does: "
            f"`{start_worker_command(job.host)}`{also}",
            err=True,
        )


class _StderrLines(logging.Handler):
    """A warning or error of the library as one ``warning: ...`` line on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(f"{record.levelname.lower()}: {self.format(record)}", err=True)
        except Exception:
            self.handleError(record)


def show_warnings() -> None:
    """Print the library's warnings (a job nobody serves, a host that did not answer) as
    ``warning: ...`` lines on stderr, secrets masked; once per process."""
    logger = logging.getLogger("lmstrix")
    if any(isinstance(h, _StderrLines) for h in logger.handlers):
        return
    handler = _StderrLines(logging.WARNING)
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)


def log_to_stderr(*, verbose: bool, quiet: bool) -> None:
    """What of the logs a command prints on stderr. By default the library's warnings (see
    :func:`show_warnings`), alembic and httpx held quiet; ``quiet``: errors only; ``verbose``:
    lmstrix's records down to DEBUG and alembic's and httpx's INFO lines, timestamped."""
    lines = [h for h in logging.getLogger("lmstrix").handlers if isinstance(h, _StderrLines)]
    if verbose:
        for handler in lines:  # the timestamped handler shows warnings too: not twice
            logging.getLogger("lmstrix").removeHandler(handler)
        setup_logging(verbose=True, libraries=True)
        return
    set_verbosity(False)
    for handler in lines:
        handler.setLevel(logging.ERROR if quiet else logging.WARNING)


__all__ = ["check_writable", "echo_json", "echo_submitted", "log_to_stderr", "show_warnings"]
