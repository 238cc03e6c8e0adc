"""``lmstrix serve``: the OpenAI-compatible API, the dashboard and the metrics, over the queue.

Thin: it checks the address against the auth rule and runs :mod:`lmstrix.serve`'s app on
uvicorn. In embedded mode this process runs the hosts' jobs; in distributed mode it only queues
them and waits, and the dramatiq workers run them.
"""

from __future__ import annotations

import click

from lmstrix.cli.errors import handle_errors
from lmstrix.core.config import Config
from lmstrix.domain.errors import ConfigurationError
from lmstrix.domain.serve_settings import DEFAULT_PORT


@click.command()
@click.option("--host", "bind", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int, help="Port to bind.")
@click.option(
    "--insecure",
    is_flag=True,
    help="Listen on a non-loopback address without API keys (anyone who reaches it may use it).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@handle_errors
def serve(bind: str, port: int, insecure: bool, log_level: str) -> None:
    """Serve the queue as an OpenAI-compatible API (/v1/...), a dashboard (/) and /metrics.

    Without [serve] api_keys (or LMSTRIX_SERVE__API_KEYS) it listens on loopback only.
    """
    import uvicorn

    from lmstrix.serve.app import create_app
    from lmstrix.serve.auth import bind_refusal

    config = Config.load()
    refusal = bind_refusal(bind, config.settings.serve, insecure)
    if refusal is not None:
        raise ConfigurationError(refusal, key="serve.api_keys")
    app = create_app(config)
    mode = "distributed (dramatiq workers run the jobs)" if config.distributed else "embedded"
    keys = "API keys required" if config.settings.serve.api_keys else "no API keys"
    click.echo(f"lmstrix serve on http://{bind}:{port} ({mode}; {keys})", err=True)
    uvicorn.run(app, host=bind, port=port, log_level=log_level, access_log=False)


__all__ = ["serve"]
