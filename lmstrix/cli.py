"""The ``lmstrix`` command: one click group whose commands are thin wrappers over the library.

Expected faults (every ``LMStrixError``) become one line on stderr and a non-zero exit code;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import click

from lmstrix import __version__
from lmstrix.cli_support import EXIT_CODES, echo_json, exit_code_for, handle_errors
from lmstrix.commands_batch import batch
from lmstrix.commands_jobs import COMMANDS as JOB_COMMANDS
from lmstrix.commands_models import demo, emulator, hosts, list_models, scan
from lmstrix.commands_registry import db, registry
from lmstrix.commands_test import test

__all__ = ["EXIT_CODES", "cli", "echo_json", "exit_code_for", "handle_errors", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lmstrix")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Registry, context-limit testing and a per-host job queue for LM Studio models."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


for _command in (
    scan,
    list_models,
    hosts,
    test,
    *JOB_COMMANDS,
    batch,
    emulator,
    demo,
    registry,
    db,
):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="lmstrix")


if __name__ == "__main__":
    main()
