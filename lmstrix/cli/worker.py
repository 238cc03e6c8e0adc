"""``lmstrix worker --host NAME``: run the worker of one host.

With Redis configured this process becomes a dramatiq worker for the host's queue; without, it
runs the host's queued jobs itself. Either way it first asks the host once whether it takes
lmstrix's token, and stops with exit 5 when it does not (rather than failing every job). Thin
over :class:`~lmstrix.core.jobs.JobManager`.
"""

from __future__ import annotations

import os

import click

from lmstrix.cli.errors import handle_errors
from lmstrix.core.config import HostConfig
from lmstrix.core.jobs import JobManager

# ``output.verbose_by_default`` as the environment sets it.
VERBOSE_ENV = "LMSTRIX_OUTPUT__VERBOSE_BY_DEFAULT"


@click.command()
@click.option("--host", "host_name", required=True, help="The configured host to serve.")
@click.option("--once", is_flag=True, help="Drain the host's queue in this process, then exit.")
@handle_errors
def worker(host_name: str, once: bool) -> None:
    """Run the worker of one host.

    With Redis configured this is `dramatiq lmstrix.workers --processes 1 --threads 1 --queues
    lmstudio.<host>`; without, it runs the host's SQL queue in this process. `--once` drains the
    queue here and exits, in both modes (waiters are told through Redis when it is configured).
    A host that refuses the token (LM_API_TOKEN or the host's `token`) stops it at once, exit 5.
    """
    with JobManager() as manager:
        manager.host(host_name)  # a clear error for an unknown host, before anything starts
        manager.check_token(host_name)
        if manager.distributed and not once:
            argv = manager.worker_argv(host_name)
            if (click.get_current_context().find_root().obj or {}).get("verbose"):
                # the dramatiq process reads the configuration, not this command line
                os.environ[VERBOSE_ENV] = "true"
            os.execv(argv[0], argv)

        def started(host: HostConfig) -> None:
            click.echo(
                f"worker for {host.name} ({host.url}): running its queued jobs here", err=True
            )

        ran = manager.run_worker(host_name, once=once, on_start=started)
    click.echo(f"ran {ran} job(s)", err=True)


__all__ = ["worker"]
