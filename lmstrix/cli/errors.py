"""Expected faults of the CLI's commands: one line on stderr and a distinct exit code each.

Every ``LMStrixError`` becomes ``error: <message>`` and the exit code of its kind, so scripts can
tell a down host from a typo; ``lmstrix --debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from lmstrix.domain.errors import (
    ConfigurationError,
    ContextLimitExceededError,
    DatabaseUnavailableError,
    InferenceTimeoutError,
    JobDeadlineError,
    JobNotFound,
    LMStrixError,
    LMStudioAuthError,
    LMStudioConnectionError,
    LMStudioTimeoutError,
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
    LMStudioTimeoutError: 12,
    DatabaseUnavailableError: 13,
    JobDeadlineError: 12,
}

# A scan or probe that reached no host: the exit code of a connection error.
NO_HOST_ANSWERED = EXIT_CODES[LMStudioConnectionError]
# A scan or probe that a host refused for want of a valid token: the exit code of an auth error.
AUTH_REFUSED = EXIT_CODES[LMStudioAuthError]
# Ctrl-C: the shell's code for a command ended by SIGINT (128 + 2).
INTERRUPTED = 130

# A command over several items (`compare`'s models, `apply --all`'s files) that ran, where some
# items failed: the output reports each one.
SOME_FAILED = 11

# A failed job (`infer`, `jobs wait`, a batch with failed requests, a test that did not finish),
# or a question answered no: the generic failure.
FAILED = 1
# Bad usage: click's own code for a wrong option, and lmstrix's for bad input (ValidationError)
# and for a destructive command run without a terminal to ask on and without --yes.
USAGE = 2


def yes_option(fn: F) -> F:
    return click.option("--yes", "-y", is_flag=True, help="Do it without asking.")(fn)


def confirm(question: str, *, yes: bool) -> None:
    """Ask ``question`` before a destructive step, unless ``yes``. Without a terminal to ask on,
    refuse with a one-line hint (exit 2); a "no" exits 1 having changed nothing."""
    if yes:
        return
    if not sys.stdin.isatty():
        click.echo(f"error: {question} Pass --yes to confirm (no terminal to ask on)", err=True)
        sys.exit(USAGE)
    if not click.confirm(question, default=False, err=True):
        click.echo("nothing was changed", err=True)
        sys.exit(FAILED)


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
        except KeyboardInterrupt:
            # What the interrupted call owned (an infer's job) was cancelled on the way out.
            click.echo("interrupted", err=True)
            sys.exit(INTERRUPTED)

    return wrapper  # type: ignore[return-value]


__all__ = [
    "AUTH_REFUSED",
    "EXIT_CODES",
    "FAILED",
    "INTERRUPTED",
    "NO_HOST_ANSWERED",
    "SOME_FAILED",
    "USAGE",
    "confirm",
    "exit_code_for",
    "handle_errors",
    "yes_option",
]
