"""The ASGI application of ``lmstrix serve`` (Starlette): routes, auth, errors, lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from lmstrix.core.config import Config
from lmstrix.core.gateway import Gateway
from lmstrix.domain.errors import LMStrixError
from lmstrix.serve import dashboard, files_routes, metrics, openai_routes
from lmstrix.serve.auth import allowed
from lmstrix.serve.errors import error_response, plain_error

log = logging.getLogger(__name__)


class _Auth:
    """Refuses requests without a valid key (when keys are configured) with OpenAI's 401."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not allowed(Request(scope), self.gateway.settings):
            if scope["path"] == "/" and scope["method"] == "GET":  # a browser: ask for the key
                await RedirectResponse("/login", status_code=303)(scope, receive, send)
                return
            response = plain_error(
                401,
                "a valid API key is required: send it as 'Authorization: Bearer <key>'",
                "invalid_request_error",
                "invalid_api_key",
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _lmstrix_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LMStrixError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return plain_error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", kind)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path)
    return plain_error(500, f"internal error ({type(exc).__name__})", "server_error")


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


def create_app(config: Config | None = None, *, gateway: Gateway | None = None) -> Starlette:
    """The server's app over ``config`` (None: the user's configuration)."""
    gw = gateway or Gateway(config or Config.load())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gw.start_workers()
        yield
        await gw.aclose()

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        *openai_routes.ROUTES,
        *files_routes.ROUTES,
        *metrics.ROUTES,
        *dashboard.ROUTES,
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_Auth, gateway=gw)],
        exception_handlers={
            LMStrixError: _lmstrix_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    app.state.gateway = gw
    return app
