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

# Ctrl-C: the shell's convention, 128 + SIGINT.
INTERRUPTED = 130

# A scan or probe that reached no host: the exit code of a connection error.
NO_HOST_ANSWERED = EXIT_CODES[LMStudioConnectionError]
# A scan or probe that a host refused for want of a valid token: the exit code of an auth error.
AUTH_REFUSED = EXIT_CODES[LMStudioAuthError]
# Ctrl-C: the shell's code for a command ended by SIGINT (128 + 2).
INTERRUPTED = 130

# A command over several items (`compare`'s models, `apply --all`'s files) that ran, where some
# items failed: the output reports each one.
SOME_FAILED = 11


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
    "INTERRUPTED",
    "NO_HOST_ANSWERED",
    "SOME_FAILED",
    "exit_code_for",
    "handle_errors",
]
