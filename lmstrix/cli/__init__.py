"""The ``lmstrix`` command: one click group whose commands are thin wrappers over the library.

One module per command group; what several of them share lives in :mod:`.errors` (exit codes)
and :mod:`.output` (JSON, queued-job lines). Expected faults (every ``LMStrixError``) become one
line on stderr and a non-zero exit code; ``--debug`` shows the traceback instead. ``-v`` shows
lmstrix's log and the INFO lines of alembic and httpx, which are quiet otherwise; ``-q`` hides the
library's warnings.
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
from lmstrix.cli.output import log_to_stderr, show_warnings
from lmstrix.cli.ps import ps, stats
from lmstrix.cli.registry import db, registry
from lmstrix.cli.serve import serve
from lmstrix.cli.submit import submit
from lmstrix.cli.test import test
from lmstrix.cli.worker import worker
from lmstrix.cli.workers import workers
from lmstrix.core.config import Config
from lmstrix.domain.errors import LMStrixError

__all__ = ["cli", "main"]


def verbose_by_default() -> bool:
    """``output.verbose_by_default`` of the configuration; a configuration that cannot be read
    is the command's to report (as one line), not this option's."""
    try:
        return Config.load().settings.output.verbose_by_default
    except LMStrixError:
        return False


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lmstrix")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Log on stderr: lmstrix's debug lines, database migrations, HTTP requests.",
)
@click.option("-q", "--quiet", is_flag=True, help="Hide warnings; errors still show.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool, quiet: bool) -> None:
    """Registry, context-limit testing and a per-host job queue for LM Studio models."""
    if verbose and quiet:
        raise click.UsageError("-v/--verbose and -q/--quiet contradict each other; give one")
    verbose = verbose or (not quiet and verbose_by_default())
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    ctx.obj["verbose"] = verbose
    log_to_stderr(verbose=verbose, quiet=quiet)


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
