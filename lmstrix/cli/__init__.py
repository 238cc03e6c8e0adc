"""The ``lmstrix`` command: one click group whose commands are thin wrappers over the library.

One module per command group; what several of them share lives in :mod:`.errors` (exit codes)
and :mod:`.output` (JSON, queued-job lines). Expected faults (every ``LMStrixError``) become one
line on stderr and a non-zero exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import click

from lmstrix import __version__
from lmstrix.cli.apply import apply
from lmstrix.cli.batch import batch
from lmstrix.cli.compare import compare
from lmstrix.cli.demo import demo
from lmstrix.cli.emulator import emulator
from lmstrix.cli.infer import infer
from lmstrix.cli.jobs import jobs
from lmstrix.cli.models import hosts, list_models, scan
from lmstrix.cli.output import show_warnings
from lmstrix.cli.ps import ps, stats
from lmstrix.cli.registry import db, registry
from lmstrix.cli.serve import serve
from lmstrix.cli.submit import submit
from lmstrix.cli.test import test
from lmstrix.cli.worker import worker
from lmstrix.cli.workers import workers

__all__ = ["cli", "main"]


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
    infer,
    compare,
    apply,
    submit,
    jobs,
    worker,
    workers,
    ps,
    stats,
    batch,
    emulator,
    demo,
    registry,
    db,
    serve,
):
    cli.add_command(_command)


def main() -> None:
    show_warnings()
    cli(prog_name="lmstrix")
