"""``lmstrix serve``: the queue behind an OpenAI-compatible HTTP API, with a dashboard and
Prometheus metrics. A top layer beside the CLI: it goes through the facades (``lmstrix.core``)
like the CLI does, never the queue, the store or the client directly."""

from lmstrix.serve.app import create_app

__all__ = ["create_app"]
