"""``lmstrix infer`` (run a prompt through the queue and wait) and ``lmstrix submit infer`` (only
queue it): thin wrappers over :class:`~lmstrix.core.inference_manager.InferenceManager`."""

from __future__ import annotations

import sys
from typing import Any

import click

from lmstrix.cli.errors import INTERRUPTED, handle_errors
from lmstrix.cli.output import echo_json, echo_submitted
from lmstrix.cli.prompt_input import PromptSource, prompt_options
from lmstrix.cli.sampling import sampling_options, warn_not_sent
from lmstrix.core.config import Config
from lmstrix.core.inference_manager import InferenceManager, InferenceResult, InferenceStream
from lmstrix.domain.scheduler import PRIORITY_BATCH


def _stats_line(result: dict[str, Any]) -> str:
    tps = result.get("tokens_per_second")
    return (
        f"[{result['model_info'].get('id')} on {result['model_info'].get('host')}] "
        f"{result['prompt_tokens']} prompt + {result['response_tokens']} response tokens, "
        f"{result['inference_time']:.2f}s"
        + (f", {tps:.1f} tok/s" if tps else "")
        + f", job {result['job_id']}"
    )


def echo_pieces(pieces: InferenceStream) -> InferenceResult:
    """Print each piece the moment it arrives (``click.echo`` flushes), then a newline; the
    stream's result."""
    for piece in pieces:
        click.echo(piece, nl=False)
    click.echo()
    assert pieces.result is not None
    return pieces.result


def _common_options(fn: Any) -> Any:
    fn = sampling_options(fn)
    fn = click.option("--host", help="Run on this configured host (default: any with it).")(fn)
    fn = click.option("-m", "--model", "model_id", required=True, help="Model id.")(fn)
    return prompt_options(fn)


@click.command()
@_common_options
@click.option(
    "--timeout",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds to wait; then the job is cancelled.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@click.option(
    "--stream", is_flag=True, help="Print the response piece by piece as the model writes it."
)
@handle_errors
def infer(
    source: PromptSource,
    model_id: str,
    sampling: dict[str, Any],
    host: str | None,
    timeout: float,
    as_json: bool,
    stream: bool,
) -> None:
    """Run PROMPT through the queue and print the response (stats on stderr).

    PROMPT ``-`` (or none, with input piped in) reads the prompt from standard input. Ctrl-C
    cancels the job (exit 130); so does this process's death: it is never run again."""
    text = source.read()
    manager = InferenceManager(timeout=timeout)
    job_id: str | None = None
    try:
        if stream and not as_json:
            with manager.stream(model_id, text, host=host, **sampling) as pieces:
                job_id = pieces.job_id
                warn_not_sent(sampling)
                result = echo_pieces(pieces)
        else:
            job = manager.submit(model_id, text, host=host, waiter=True, **sampling)
            job_id = job.id
            warn_not_sent(sampling)
            result = manager.wait(job.id, owned=True)
    except KeyboardInterrupt:
        click.echo(f"interrupted; job {job_id} cancelled" if job_id else "interrupted", err=True)
        sys.exit(INTERRUPTED)
    finally:
        manager.close()
    if as_json:
        echo_json(dict(result))
    elif not stream:
        click.echo(result["response"])
    if not as_json:
        click.echo(_stats_line(result), err=True)
    if not result["succeeded"]:
        click.echo(f"error: {result['error']}", err=True)
        sys.exit(1)


@click.command(name="infer")
@_common_options
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@handle_errors
def submit_infer(
    source: PromptSource,
    model_id: str,
    sampling: dict[str, Any],
    host: str | None,
    as_json: bool,
) -> None:
    """Queue one inference (batch priority) and print its job id; PROMPT ``-`` reads stdin."""
    text = source.read()
    config = Config.load()
    manager = InferenceManager(config=config)
    try:
        job = manager.submit(
            model_id,
            text,
            host=host,
            priority=PRIORITY_BATCH,
            start_worker=False,
            **sampling,
        )
    finally:
        manager.close()
    warn_not_sent(sampling)
    echo_submitted(
        job,
        distributed=config.distributed,
        as_json=as_json,
        also=" (or any infer() call to that host)",
    )


__all__ = ["echo_pieces", "infer", "submit_infer"]
