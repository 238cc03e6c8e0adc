"""The ``lmstrix`` command: one click group whose commands are thin wrappers over the library.

Expected faults (every ``LMStrixError``) become one line on stderr and a non-zero exit code;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from lmstrix import __version__
from lmstrix.api.exceptions import (
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lmstrix")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Registry, context-limit testing and a per-host job queue for LM Studio models."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _register_commands() -> None:
    # Imported here: the command modules import handle_errors/echo_json from this module.
    from lmstrix.commands_models import demo, emulator, hosts, list_models, scan
    from lmstrix.commands_registry import db, registry

    for command in (scan, list_models, hosts, emulator, demo, registry, db):
        cli.add_command(command)


_register_commands()


def main() -> None:
    cli(prog_name="lmstrix")


if __name__ == "__main__":
    main()
