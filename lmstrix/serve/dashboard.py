"""The live dashboard at ``/``: one server-rendered page, refreshed over SSE.

``/dashboard/events`` sends the whole state (hosts, queue, running and recent jobs, batches,
models) as one JSON event per second; the page's script redraws its tables from it and posts
cancel and retry to ``/dashboard/jobs/{id}/cancel|retry``. With API keys configured the page
is behind the same auth: a browser posts its key once to ``/login`` and holds it in an HttpOnly
cookie.
"""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from lmstrix.core.gateway import Gateway
from lmstrix.serve.auth import COOKIE
from lmstrix.serve.streaming import EventStream, sse

REFRESH_SECONDS = 1.0

# The page (HTML, CSS and its little script), next to this module.
_PAGE = (resources.files("lmstrix.serve") / "dashboard.html").read_text(encoding="utf-8")

_LOGIN = """<!doctype html><html><head><meta charset="utf-8"><title>lmstrix: key</title></head>
<body><form method="post" action="login"><p>API key: <input type="password" name="key">
<button>open the dashboard</button></p></form></body></html>"""


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def _state(request: Request) -> dict[str, Any]:
    return await asyncio.to_thread(_gateway(request).dashboard)


async def page(request: Request) -> Response:
    state = await _state(request)
    data = json.dumps(state, default=str).replace("</", "<\\/")
    body = (
        _PAGE.replace("__MODE__", html.escape(state["mode"]))
        .replace("__TAKEN__", html.escape(state["taken_at"]))
        .replace("__STATE__", data)
    )
    return HTMLResponse(body)


async def state(request: Request) -> Response:
    return JSONResponse(json.loads(json.dumps(await _state(request), default=str)))


async def events(request: Request) -> Response:
    async def feed() -> AsyncIterator[bytes]:
        while True:
            yield sse(json.dumps(await _state(request), default=str))
            await asyncio.sleep(REFRESH_SECONDS)

    return EventStream(feed(), lambda: None)


async def cancel(request: Request) -> Response:
    job = await asyncio.to_thread(_gateway(request).cancel, request.path_params["job"])
    return JSONResponse({"id": job.id, "status": job.status})


async def retry(request: Request) -> Response:
    job = await asyncio.to_thread(_gateway(request).retry, request.path_params["job"])
    return JSONResponse({"id": job.id, "status": job.status})


async def login_form(request: Request) -> Response:
    return HTMLResponse(_LOGIN)


async def login(request: Request) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0]
    settings = _gateway(request).settings
    if not settings.api_keys or not settings.accepts(key):
        return HTMLResponse(_LOGIN, status_code=401)
    response = RedirectResponse("./", status_code=303)
    response.set_cookie(COOKIE, key, httponly=True, samesite="strict")
    return response


ROUTES = [
    Route("/", page, methods=["GET"]),
    Route("/dashboard/state", state, methods=["GET"]),
    Route("/dashboard/events", events, methods=["GET"]),
    Route("/dashboard/jobs/{job}/cancel", cancel, methods=["POST"]),
    Route("/dashboard/jobs/{job}/retry", retry, methods=["POST"]),
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
]
