"""``lmstrix emulator``: serve the LM Studio emulator, for trying lmstrix without LM Studio."""

from __future__ import annotations

import click

from lmstrix.cli.errors import handle_errors
from lmstrix.domain.errors import ValidationError


@click.command()
@click.option("--host", "bind", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=1234, show_default=True, help="Port (LM Studio's is 1234).")
@click.option(
    "--real-model",
    is_flag=True,
    help="Serve a real SmolLM2 model through llama.cpp (needs the `real` extra).",
)
@click.option(
    "--api",
    "api_generation",
    type=click.Choice(["0.3", "0.4"]),
    default="0.4",
    show_default=True,
    help="LM Studio API generation to emulate.",
)
@click.option("--token", "tokens", multiple=True, help="Require this API token (repeatable).")
@click.option("--no-jit", is_flag=True, help="Turn just-in-time loading off.")
@click.option("--auto-fit", is_flag=True, help="Reduce loads above the memory budget silently.")
@click.option("--real-clock", is_flag=True, help="Really sleep for loads and generation.")
@handle_errors
def emulator(
    bind: str,
    port: int,
    real_model: bool,
    api_generation: str,
    tokens: tuple[str, ...],
    no_jit: bool,
    auto_fit: bool,
    real_clock: bool,
) -> None:
    """Run the LM Studio emulator (for trying lmstrix without LM Studio, and for tests)."""
    from lmstrix.testing.emulator import serve

    if not 1 <= port <= 65535:
        raise ValidationError("--port", port, "must be a port number from 1 to 65535")
    models = None
    backend = None
    if real_model:
        from lmstrix.testing.real_model import (
            RealModelBackend,
            real_model_unavailable_reason,
            smollm2_model,
        )

        reason = real_model_unavailable_reason()
        if reason:
            raise click.ClickException(f"--real-model: {reason}")
        models, backend = [smollm2_model()], RealModelBackend()
    try:
        serve(
            bind,
            port,
            models=models,
            backend=backend,
            echo=lambda s: click.echo(s, err=True),
            api_generation=api_generation,
            require_auth=bool(tokens),
            api_tokens=frozenset(tokens),
            jit=not no_jit,
            auto_fit=auto_fit,
            clock="real" if real_clock else "simulated",
        )
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise ValidationError(
            "--port",
            port,
            f"cannot listen on {bind}:{port} ({exc.strerror or exc}); "
            "choose another with --port (or --host)",
        ) from None


__all__ = ["emulator"]
