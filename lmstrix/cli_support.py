"""Shared plumbing of the CLI commands: one-line errors with distinct exit codes, JSON output.

Kept apart from ``cli.py`` so command modules can import it while ``cli.py`` imports them.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from lmstrix.domain.errors import (
    ConfigurationError,
    ContextLimitExceededError,
    InferenceTimeoutError,
    JobNotFound,
    LMStrixError,
    LMStudioAuthError,
    LMStudioConnectionError,
    ModelLoadError,
    ModelNotFoundError,
    ValidationError,
)

F = TypeVar("F", bound=Callable[..., Any])

# One exit code per kind of fault, so scripts can tell them apart.
EXIT_CODES: dict[type[LMStrixError], int] = {
    ValidationError: 2,
    ConfigurationError: 3,
    LMStudioConnectionError: 4,
    LMStudioAuthError: 5,
    ModelNotFoundError: 6,
    ContextLimitExceededError: 7,
    ModelLoadError: 8,
    InferenceTimeoutError: 9,
    JobNotFound: 10,
}


def exit_code_for(exc: LMStrixError) -> int:
    for kind in type(exc).__mro__:
        if kind in EXIT_CODES:
            return EXIT_CODES[kind]
    return 1


def handle_errors(fn: F) -> F:
    """Turn lmstrix errors into one line on stderr and a distinct exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LMStrixError as exc:
            ctx = click.get_current_context(silent=True)
            if ctx is not None and ctx.find_root().obj and ctx.find_root().obj.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(exit_code_for(exc))

    return wrapper  # type: ignore[return-value]


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def echo_submitted(job: Any, *, distributed: bool, as_json: bool, also: str = "") -> None:
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
