"""``lmstrix infer`` (run a prompt through the queue and wait) and ``lmstrix submit infer`` (only
queue it): thin wrappers over :class:`~lmstrix.core.inference_manager.InferenceManager`."""

from __future__ import annotations

import sys
from typing import Any

import click

from lmstrix.cli.errors import INTERRUPTED, handle_errors
from lmstrix.cli.output import echo_json, echo_submitted
from lmstrix.core.config import Config
from lmstrix.core.inference_manager import InferenceManager, InferenceResult, InferenceStream
from lmstrix.domain.errors import ValidationError
from lmstrix.domain.scheduler import PRIORITY_BATCH
from lmstrix.loaders.context_loader import ContextLoader


def _out_ctx(value: str) -> int | str:
    try:
        return int(value)
    except ValueError:
        return value


def _options(
    out_ctx: str,
    temperature: float,
    top_p: float,
    top_k: int,
    max_tokens: int | None,
    system_prompt: str | None,
) -> tuple[int | str, float, float, int, int | None, str | None]:
    """The sampling options, in the order ``submit()`` and ``stream()`` take them."""
    return (_out_ctx(out_ctx), temperature, top_p, top_k, max_tokens, system_prompt)


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


def read_prompt(prompt: str | None, file: str | None = None) -> str:
    """PROMPT as given; the text of ``--file``; or standard input when PROMPT is ``-`` or left
    out and input is piped in (``echo "..." | lmstrix infer -m M``)."""
    if file is not None:
        if prompt is not None:
            raise ValidationError("prompt", prompt, "give PROMPT or --file, not both")
        return ContextLoader().load_text_file(file)
    if prompt is not None and prompt != "-":
        return prompt
    if prompt is None and sys.stdin.isatty():
        raise ValidationError(
            "prompt", None, "give PROMPT as an argument, or pipe it in (PROMPT '-' reads stdin)"
        )
    text = sys.stdin.read()
    if not text.strip():
        raise ValidationError("prompt", text, "standard input was empty; pipe the prompt in")
    return text


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
            click.option(
                "--file",
                "prompt_file",
                type=click.Path(dir_okay=False),
                help="Read the prompt from this text file (instead of PROMPT).",
            ),
        ]
    ):
        fn = option(fn)
    return fn


@click.command()
@click.argument("prompt", required=False)
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
    "--stream", is_flag=True, help="Print the response piece by piece as the model writes it."
)
@handle_errors
def infer(
    prompt: str | None,
    model_id: str,
    out_ctx: str,
    max_tokens: int | None,
    temperature: float,
    top_p: float,
    top_k: int,
    system_prompt: str | None,
    host: str | None,
    prompt_file: str | None,
    timeout: float,
    as_json: bool,
    stream: bool,
) -> None:
    """Run PROMPT through the queue and print the response (stats on stderr).

    PROMPT ``-`` (or none, with input piped in) reads the prompt from standard input. Ctrl-C
    cancels the job (exit 130); so does this process's death: it is never run again."""
    text = read_prompt(prompt, prompt_file)
    options = _options(out_ctx, temperature, top_p, top_k, max_tokens, system_prompt)
    manager = InferenceManager(timeout=timeout)
    job_id: str | None = None
    try:
        if stream and not as_json:
            with manager.stream(model_id, text, *options, host=host) as pieces:
                job_id = pieces.job_id
                result = echo_pieces(pieces)
        else:
            job = manager.submit(model_id, text, *options, host=host, waiter=True)
            job_id = job.id
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
@click.argument("prompt", required=False)
@_sampling_options
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@handle_errors
def submit_infer(
    prompt: str | None,
    model_id: str,
    out_ctx: str,
    max_tokens: int | None,
    temperature: float,
    top_p: float,
    top_k: int,
    system_prompt: str | None,
    host: str | None,
    prompt_file: str | None,
    as_json: bool,
) -> None:
    """Queue one inference (batch priority) and print its job id; PROMPT ``-`` reads stdin."""
    text = read_prompt(prompt, prompt_file)
    config = Config.load()
    manager = InferenceManager(config=config)
    try:
        job = manager.submit(
            model_id,
            text,
            *_options(out_ctx, temperature, top_p, top_k, max_tokens, system_prompt),
            host=host,
            priority=PRIORITY_BATCH,
            start_worker=False,
        )
    finally:
        manager.close()
    echo_submitted(
        job,
        distributed=config.distributed,
        as_json=as_json,
        also=" (or any infer() call to that host)",
    )


__all__ = ["infer", "submit_infer"]
