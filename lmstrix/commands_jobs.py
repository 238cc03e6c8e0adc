"""CLI commands of the queue: ``infer``, ``submit infer``, ``jobs ...`` and ``worker``.

Thin wrappers over :mod:`lmstrix.jobs` and the facade; ``cli.py`` registers them.
"""

from __future__ import annotations

import os
import re
import sys
import time
from datetime import timedelta
from typing import Any

import click

from lmstrix.cli_support import echo_json, echo_submitted, handle_errors
from lmstrix.commands_test import submit_test
from lmstrix.core.inference_manager import InferenceManager
from lmstrix.core.job_service import open_job_service
from lmstrix.domain.scheduler import PRIORITY_BATCH
from lmstrix.jobs.doorbell import queue_name
from lmstrix.jobs.store import JobView
from lmstrix.utils.config import Config

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``30s``, ``10m``, ``12h``, ``7d``, ``2w`` (a bare number is seconds)."""
    m = _DURATION.match(text)
    if not m:
        raise click.BadParameter(f"{text!r} is not a duration like 30s, 10m, 12h, 7d or 2w")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


def _out_ctx(value: str) -> int | str:
    try:
        return int(value)
    except ValueError:
        return value


def _job_dict(job: JobView) -> dict[str, Any]:
    return job.to_dict()


def _job_line(job: JobView) -> str:
    took = ""
    if job.started_at and job.finished_at:
        took = f" {(job.finished_at - job.started_at).total_seconds():.2f}s"
    err = f"  {job.error_type}" if job.error_type else ""
    created = job.created_at.strftime("%Y-%m-%d %H:%M:%S")
    return f"{job.id}  {job.status:<9} {job.host:<12} {job.model or '-':<32} {created}{took}{err}"


def _stats_line(result: dict[str, Any]) -> str:
    tps = result.get("tokens_per_second")
    return (
        f"[{result['model_info'].get('id')} on {result['model_info'].get('host')}] "
        f"{result['prompt_tokens']} prompt + {result['response_tokens']} response tokens, "
        f"{result['inference_time']:.2f}s"
        + (f", {tps:.1f} tok/s" if tps else "")
        + f", job {result['job_id']}"
    )


def _sampling_options(fn: Any) -> Any:
    for option in reversed(
        [
            click.option("-m", "--model", "model_id", required=True, help="Model id."),
            click.option(
                "--out-ctx",
                default="auto",
                show_default=True,
                help='Output tokens: N, -1 (no limit), "auto" or "N%".',
            ),
            click.option("--max-tokens", type=int, help="Max output tokens (wins over --out-ctx)."),
            click.option("--temperature", type=float, default=0.7, show_default=True),
            click.option("--top-p", type=float, default=1.0, show_default=True),
            click.option("--top-k", type=int, default=-1, show_default=True),
            click.option("--system", "system_prompt", help="System prompt."),
            click.option("--host", help="Run on this configured host (default: any with it)."),
        ]
    ):
        fn = option(fn)
    return fn


@click.command()
@click.argument("prompt")
@_sampling_options
@click.option(
    "--timeout",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds to wait; then the job is cancelled.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@click.option(
    "--stream",
    is_flag=True,
    help="Print the response as soon as it is there (the queue delivers it whole).",
)
@handle_errors
def infer(
    prompt: str,
    model_id: str,
    out_ctx: str,
    max_tokens: int | None,
    temperature: float,
    top_p: float,
    top_k: int,
    system_prompt: str | None,
    host: str | None,
    timeout: float,
    as_json: bool,
    stream: bool,
) -> None:
    """Run PROMPT through the queue and print the response (stats on stderr)."""
    manager = InferenceManager(timeout=timeout)
    try:
        job = manager.submit(
            model_id,
            prompt,
            _out_ctx(out_ctx),
            temperature,
            top_p,
            top_k,
            max_tokens,
            system_prompt,
            host=host,
        )
        result = manager.wait(job.id)
    finally:
        manager.close()
    if as_json:
        echo_json(dict(result))
    else:
        click.echo(result["response"])
        click.echo(_stats_line(result), err=True)
    if not result["succeeded"]:
        click.echo(f"error: {result['error']}", err=True)
        sys.exit(1)


@click.group()
def submit() -> None:
    """Queue work and return at once with the job id."""


@submit.command(name="infer")
@click.argument("prompt")
@_sampling_options
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@handle_errors
def submit_infer(
    prompt: str,
    model_id: str,
    out_ctx: str,
    max_tokens: int | None,
    temperature: float,
    top_p: float,
    top_k: int,
    system_prompt: str | None,
    host: str | None,
    as_json: bool,
) -> None:
    """Queue one inference (batch priority) and print its job id."""
    manager = InferenceManager()
    try:
        job = manager.submit(
            model_id,
            prompt,
            _out_ctx(out_ctx),
            temperature,
            top_p,
            top_k,
            max_tokens,
            system_prompt,
            host=host,
            priority=PRIORITY_BATCH,
            start_worker=False,
        )
        distributed = manager.service.distributed
    finally:
        manager.close()
    echo_submitted(
        job, distributed=distributed, as_json=as_json, also=" (or any infer() call to that host)"
    )


submit.add_command(submit_test)


@submit.command(name="batch")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-m", "--model", help="Model for requests whose body names none.")
@click.option("--metadata", multiple=True, help="KEY=VALUE stored on the batch (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the batch object as JSON.")
@handle_errors
def submit_batch(file: str, model: str | None, metadata: tuple[str, ...], as_json: bool) -> None:
    """Queue an OpenAI Batch file (JSONL) and print its batch id (see `lmstrix batch`)."""
    from lmstrix.commands_batch import submit_file

    submit_file(file, model, metadata, as_json)


@click.group()
def jobs() -> None:
    """Look at and manage queued, running and finished jobs."""


@jobs.command(name="list")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled", "expired"]),
)
@click.option("--host")
@click.option("--model")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def jobs_list(
    statuses: tuple[str, ...], host: str | None, model: str | None, limit: int, as_json: bool
) -> None:
    """Newest jobs first."""
    service = open_job_service()
    found = service.store.list_jobs(status=statuses or None, host=host, model=model, limit=limit)
    if as_json:
        echo_json([_job_dict(j) for j in found])
        return
    for job in found:
        click.echo(_job_line(job))
    if not found:
        click.echo("no jobs", err=True)


@jobs.command(name="show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def jobs_show(job_id: str, as_json: bool) -> None:
    """One job with its request and result."""
    job = open_job_service().store.get(job_id)
    if as_json:
        echo_json(_job_dict(job))
        return
    for key, value in _job_dict(job).items():
        if value is not None:
            click.echo(f"{key}: {value}")


@jobs.command(name="wait")
@click.argument("job_id")
@click.option("--timeout", type=float, default=300.0, show_default=True)
@click.option("--cancel-on-timeout", is_flag=True, help="Cancel the job if it is not done.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def jobs_wait(job_id: str, timeout: float, cancel_on_timeout: bool, as_json: bool) -> None:
    """Wait until a job is finished; exit 1 unless it succeeded."""
    service = open_job_service()
    try:
        job = service.wait(job_id, timeout, cancel_on_timeout=cancel_on_timeout)
    finally:
        service.close()
    if as_json:
        echo_json(_job_dict(job))
    elif job.result and "response" in job.result:
        click.echo(job.result["response"])
    click.echo(_job_line(job), err=True)
    if job.status != "succeeded":
        sys.exit(1)


@jobs.command(name="cancel")
@click.argument("job_ids", nargs=-1, required=True)
@handle_errors
def jobs_cancel(job_ids: tuple[str, ...]) -> None:
    """Cancel jobs: queued ones at once, running ones at their next chunk."""
    store = open_job_service().store
    for job_id in job_ids:
        job = store.cancel(job_id)
        state = job.status if job.status != "running" else "cancel requested"
        click.echo(f"{job.id}  {state}")


@jobs.command(name="retry")
@click.argument("job_ids", nargs=-1, required=True)
@handle_errors
def jobs_retry(job_ids: tuple[str, ...]) -> None:
    """Queue failed, cancelled or expired jobs again."""
    service = open_job_service()
    try:
        for job_id in job_ids:
            job = service.store.retry(job_id)
            service.ring(job.id, service.host_config(job.host), start_worker=False)
            click.echo(f"{job.id}  queued on {job.host}")
    finally:
        service.close()


@jobs.command(name="prune")
@click.option(
    "--older-than",
    default="7d",
    show_default=True,
    help="Finished more than this long ago (30m, 12h, 7d, 2w).",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["succeeded", "failed", "cancelled", "expired"]),
)
@handle_errors
def jobs_prune(older_than: str, statuses: tuple[str, ...]) -> None:
    """Delete finished jobs (their results too)."""
    store = open_job_service().store
    kwargs: dict[str, Any] = {"statuses": statuses} if statuses else {}
    n = store.prune(parse_duration(older_than), **kwargs)
    click.echo(f"pruned {n} job(s)")


@jobs.command(name="reap")
@handle_errors
def jobs_reap() -> None:
    """Re-queue running jobs whose worker died (lease expired) and ring their hosts."""
    from lmstrix.jobs.reaper import reap

    service = open_job_service()
    try:
        reaped = reap(service.store, service.doorbell)
    finally:
        service.close()
    for job in reaped:
        click.echo(f"{job.id}  {'queued again' if job.requeued else 'failed'} on {job.host}")
    click.echo(f"reaped {len(reaped)} job(s)", err=True)


@click.command()
@click.option("--host", "host_name", required=True, help="The configured host to serve.")
@click.option("--once", is_flag=True, help="Embedded mode: drain the queue, then exit.")
@handle_errors
def worker(host_name: str, once: bool) -> None:
    """Run the worker of one host.

    With Redis configured this is `dramatiq lmstrix.workers --processes 1 --threads 1 --queues
    lmstudio.<host>`; without, it drains the host's SQL queue in this process.
    """
    config = Config.load()
    config.host(host_name)  # a clear error for an unknown host, before anything starts
    if config.distributed:
        args = [
            sys.executable,
            "-m",
            "dramatiq",
            "lmstrix.workers",
            "--processes",
            "1",
            "--threads",
            "1",
            "--queues",
            queue_name(host_name),
        ]
        os.execv(sys.executable, args)
    _embedded_worker(config, host_name, once)


def _embedded_worker(config: Config, host_name: str, once: bool) -> None:
    from lmstrix.jobs.embedded import EmbeddedWorker
    from lmstrix.jobs.notify import local_notifier
    from lmstrix.jobs.reaper import reap
    from lmstrix.jobs.runner import JobRunner

    service = open_job_service(config)
    hc = service.host_config(host_name)
    service.store.host_id(host_name, hc.url)
    click.echo(f"worker for {host_name} ({hc.url}): running its queued jobs here", err=True)
    if once:
        reap(service.store, None)
        with service.client_for(hc) as client:
            runner = JobRunner(
                service.store, host_name, client, local_notifier(), settings=service.settings
            )
            try:
                ran = runner.drain()
            finally:
                runner.close()
        click.echo(f"ran {ran} job(s)", err=True)
        return
    w = EmbeddedWorker(
        service.store, host_name, lambda: service.client_for(hc), settings=service.settings
    )
    w.start()
    try:
        while True:
            # Other processes cannot ring an in-process doorbell: look at the queue every second.
            time.sleep(1.0)
            w.wake()
    except KeyboardInterrupt:
        pass
    finally:
        w.stop()
    click.echo(f"ran {w.runner.jobs_run if w.runner else 0} job(s)", err=True)


COMMANDS = (infer, submit, jobs, worker)
