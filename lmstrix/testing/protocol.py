"""Transport-neutral request/reply values between the HTTP server and the routes.

Routes return a :class:`JsonReply` (status + JSON body, or raw bytes for injected faults) or a
:class:`StreamReply` (an iterator of already-encoded SSE frames, written with chunked encoding);
the server knows nothing of LM Studio, the routes nothing of sockets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from lmstrix.domain.nesting import loads_json

JSON_CONTENT_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # without the query string
    headers: Mapping[str, str]  # case-insensitive lookups (email.message.Message)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return value if isinstance(value, str) else None


@dataclass(slots=True)
class JsonReply:
    status: int
    body: Any = None
    raw: bytes | None = None  # sent as is instead of ``body`` (fault injection)
    content_type: str = JSON_CONTENT_TYPE
    headers: dict[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return json.dumps(self.body, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(slots=True)
class StreamReply:
    frames: Iterator[bytes]
    status: int = 200


Reply = JsonReply | StreamReply


class BadRequest(Exception):
    """A request that fails validation; routes render it in their API family's error shape."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def sse_data(data: Any) -> bytes:
    """An unnamed SSE frame (OpenAI-compatible and v0 streams)."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n".encode()


def sse_event(name: str, data: Mapping[str, Any]) -> bytes:
    """A named SSE frame (``/api/v1/chat`` streams and ``event: error``)."""
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is ``{}`` (as Express' json parser)."""
    if not body.strip():
        return {}
    try:
        data = loads_json(body)  # a body nested thousands deep is a 400, not a crash
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Invalid JSON in request body: {exc}", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise BadRequest("Request body must be a JSON object.", code="invalid_json")
    return data


def opt_int(data: Mapping[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise BadRequest(f"'{name}' must be an integer", param=name, code="invalid_type")
    return int(value)


def opt_float(data: Mapping[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"'{name}' must be a number", param=name, code="invalid_type")
    return float(value)


def opt_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a string", param=name, code="invalid_type")
    return value


def required_str(data: Mapping[str, Any], name: str) -> str:
    value = opt_str(data, name)
    if not value:
        raise BadRequest(f'"{name}" is required', param=name, code="missing_required_parameter")
    return value
