"""lmstrix's errors as OpenAI error objects with the HTTP status OpenAI would use, so clients
(the ``openai`` SDK first) raise their own exception types for them."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from lmstrix.domain.admission import NoWorkerError, QueueFullError
from lmstrix.domain.errors import (
    ContextLimitExceededError,
    DatabaseUnavailableError,
    InferenceTimeoutError,
    JobNotFound,
    LMStrixError,
    LMStudioConnectionError,
    LMStudioTimeoutError,
    ModelNotFoundError,
    ValidationError,
)
from lmstrix.domain.openai_api import error_body
from lmstrix.domain.openai_files import FileNotFound, FileTooLarge

# (class, HTTP status, OpenAI error type, code); the first match wins, so subclasses first.
_STATUS: tuple[tuple[type[LMStrixError], int, str, str | None], ...] = (
    (ContextLimitExceededError, 400, "invalid_request_error", "context_length_exceeded"),
    (FileTooLarge, 413, "invalid_request_error", "file_too_large"),
    (ValidationError, 400, "invalid_request_error", None),
    (ModelNotFoundError, 404, "invalid_request_error", "model_not_found"),
    (JobNotFound, 404, "invalid_request_error", "not_found"),
    (FileNotFound, 404, "invalid_request_error", "not_found"),
    (QueueFullError, 429, "rate_limit_exceeded", "queue_full"),
    (NoWorkerError, 503, "service_unavailable", "no_worker"),
    (LMStudioConnectionError, 503, "service_unavailable", "host_unavailable"),
    (DatabaseUnavailableError, 503, "service_unavailable", "database_unavailable"),
    (InferenceTimeoutError, 504, "timeout", "timeout"),
    (LMStudioTimeoutError, 504, "timeout", "host_timeout"),
)


def error_response(exc: LMStrixError) -> JSONResponse:
    status, body = describe(exc)
    return JSONResponse(body, status_code=status)


def describe(exc: LMStrixError) -> tuple[int, dict[str, Any]]:
    """The status and the OpenAI error object for ``exc`` (messages never hold secrets:
    lmstrix's errors mask them where they are made)."""
    for cls, status, kind, code in _STATUS:
        if isinstance(exc, cls):
            param = exc.details.get("field") if isinstance(exc, ValidationError) else None
            return status, error_body(str(exc), kind, code=code, param=param)
    return 502, error_body(str(exc), "server_error", code=type(exc).__name__)


def plain_error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, kind, code=code), status_code=status)
