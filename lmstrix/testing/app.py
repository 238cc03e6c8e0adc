"""Request dispatch: route table, per-endpoint counting, injected faults, hangs and auth.

Order of checks for every request: count it, serve an injected fault if one is queued, hang if
``hang_requests`` is on, enforce auth (``/lmstudio-greeting`` stays open, [inf]), then route.
Unknown paths and methods get LM Studio's HTTP **200** ``Unexpected endpoint or method`` body (in
the ``openai`` mode, a plain server's 404).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmstrix.testing import bodies
from lmstrix.testing.protocol import (
    JSON_CONTENT_TYPE,
    BadRequest,
    JsonReply,
    Reply,
    Request,
    parse_json_object,
)
from lmstrix.testing.routes import Routes, bad_request
from lmstrix.testing.state import EmulatorState

Handler = Callable[[Request, str], Reply]


@dataclass(frozen=True, slots=True)
class _Route:
    method: str
    path: str  # exact path, or a prefix when ``tail`` (the rest is the model id)
    endpoint: str
    family: str
    handler: Handler
    tail: bool = False
    v1_only: bool = False


@dataclass(frozen=True, slots=True)
class _Fault:
    reply: JsonReply
    path: str | None


class EmulatorApp:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.routes = Routes(state)
        self._faults: list[_Fault] = []
        self._faults_lock = threading.Lock()
        r = self.routes
        body = self._with_body
        self._table: tuple[_Route, ...] = (
            _Route("GET", "/lmstudio-greeting", "GET /lmstudio-greeting", "openai",
                   lambda req, _: r.greeting()),
            _Route("GET", "/v1/models", "GET /v1/models", "openai",
                   lambda req, _: r.openai_models()),
            _Route("GET", "/v1/models/", "GET /v1/models/{id}", "openai",
                   lambda req, tail: r.openai_model(tail), tail=True),
            _Route("POST", "/v1/chat/completions", "POST /v1/chat/completions", "openai",
                   body(lambda d: r.chat(d, "openai"), "openai")),
            _Route("POST", "/v1/completions", "POST /v1/completions", "openai",
                   body(lambda d: r.chat(d, "openai", text=True), "openai")),
            _Route("POST", "/v1/embeddings", "POST /v1/embeddings", "openai",
                   body(lambda d: r.embeddings(d, "openai"), "openai")),
            _Route("GET", "/api/v0/models", "GET /api/v0/models", "v0",
                   lambda req, _: r.v0_models()),
            _Route("GET", "/api/v0/models/", "GET /api/v0/models/{id}", "v0",
                   lambda req, tail: r.v0_model(tail), tail=True),
            _Route("POST", "/api/v0/chat/completions", "POST /api/v0/chat/completions", "v0",
                   body(lambda d: r.chat(d, "v0"), "v0")),
            _Route("POST", "/api/v0/completions", "POST /api/v0/completions", "v0",
                   body(lambda d: r.chat(d, "v0", text=True), "v0")),
            _Route("POST", "/api/v0/embeddings", "POST /api/v0/embeddings", "v0",
                   body(lambda d: r.embeddings(d, "v0"), "v0")),
            _Route("GET", "/api/v1/models", "GET /api/v1/models", "v1",
                   lambda req, _: r.v1_models(), v1_only=True),
            _Route("POST", "/api/v1/models/load", "POST /api/v1/models/load", "v1",
                   body(r.v1_load, "v1"), v1_only=True),
            _Route("POST", "/api/v1/models/unload", "POST /api/v1/models/unload", "v1",
                   body(r.v1_unload, "v1"), v1_only=True),
            _Route("POST", "/api/v1/chat", "POST /api/v1/chat", "v1",
                   body(r.v1_chat, "v1"), v1_only=True),
        )  # fmt: skip

    @staticmethod
    def _with_body(fn: Callable[[dict[str, Any]], Reply], family: str) -> Handler:
        def handler(request: Request, _: str) -> Reply:
            try:
                return fn(parse_json_object(request.body))
            except BadRequest as exc:
                return bad_request(exc, family)

        return handler

    # --- faults ---------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        body: Any = None,
        *,
        content_type: str | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next request (to ``path`` if given) with this, whatever it asked.

        ``body``: ``bytes``/``str`` are sent verbatim (e.g. a non-JSON body); anything else as JSON.
        """
        if isinstance(body, bytes | str):
            raw = body.encode() if isinstance(body, str) else body
            reply = JsonReply(status, raw=raw, content_type=content_type or "text/plain")
        else:
            reply = JsonReply(status, body, content_type=content_type or JSON_CONTENT_TYPE)
        with self._faults_lock:
            self._faults.append(_Fault(reply, path))

    def _pop_fault(self, path: str) -> JsonReply | None:
        with self._faults_lock:
            for fault in self._faults:
                if fault.path in (None, path):
                    self._faults.remove(fault)
                    return fault.reply
        return None

    # --- dispatch -------------------------------------------------------------------------

    def _match(self, method: str, path: str) -> tuple[_Route, str] | None:
        generation = self.state.settings.api_generation
        for route in self._table:
            if route.v1_only and generation != "0.4":
                continue
            if generation == "openai" and not route.path.startswith("/v1/"):
                continue
            if route.method != method:
                continue
            if route.tail:
                if path.startswith(route.path) and len(path) > len(route.path):
                    return route, path[len(route.path) :]
            elif path == route.path:
                return route, ""
        return None

    def _auth_error(self, request: Request) -> JsonReply | None:
        settings = self.state.settings
        if not settings.require_auth:
            return None
        header = (request.header("Authorization") or "").strip()
        scheme, _, token = header.partition(" ")
        if not header or scheme.lower() != "bearer" or not token.strip():
            return JsonReply(401, bodies.auth_missing())
        if token.strip() not in settings.api_tokens:
            return JsonReply(401, bodies.auth_invalid())
        return None

    def handle(self, request: Request) -> Reply:
        """Answer one request; may raise ``Stopped`` (drop the connection)."""
        path = request.path
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]  # Express' non-strict routing
        method = "GET" if request.method == "HEAD" else request.method
        match = self._match(method, path)
        state = self.state
        state.counters.request(match[0].endpoint if match else "unknown")
        fault = self._pop_fault(path)
        if fault is not None:
            return fault
        if state.settings.hang_requests:
            state.hang()
        if path != "/lmstudio-greeting":
            denied = self._auth_error(request)
            if denied is not None:
                return denied
        if match is None:
            if state.settings.api_generation == "openai":  # a plain server: 404 like llama.cpp's
                return JsonReply(404, bodies.not_found_plain())
            return JsonReply(200, bodies.unexpected_endpoint(request.method, request.path))
        route, tail = match
        return route.handler(request, tail)
