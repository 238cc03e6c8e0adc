"""Turning a failed job row back into the exception the caller should see.

The worker stores the error's class name and its structured ``details``; the facade raises
infrastructure faults and caller mistakes again as typed exceptions (a host that cannot be
reached is not an answer), while model-side failures become ``succeeded=False`` results.
"""

from __future__ import annotations

from typing import Any

from lmstrix.domain.errors import (
    ContextLimitExceededError,
    LMStrixError,
    LMStudioAuthError,
    LMStudioConnectionError,
    ModelNotFoundError,
)

RAISED = frozenset(
    {
        "LMStudioConnectionError",
        "LMStudioAuthError",
        "ModelNotFoundError",
        "ContextLimitExceededError",
        "BrokerUnavailableError",
    }
)


def should_raise(error_type: str | None) -> bool:
    return error_type in RAISED


def rebuild(error_type: str, message: str, details: dict[str, Any] | None) -> LMStrixError:
    d = details or {}
    try:
        if error_type == "LMStudioConnectionError":
            exc: LMStrixError = LMStudioConnectionError(d["host_url"], d["reason"])
        elif error_type == "LMStudioAuthError":
            exc = LMStudioAuthError(d["host_url"], d["reason"], token_sent=d["token_sent"])
        elif error_type == "ModelNotFoundError":
            exc = ModelNotFoundError(
                d["model_id"], suggestions=d.get("suggestions") or (), host_url=d.get("host_url")
            )
        elif error_type == "ContextLimitExceededError":
            exc = ContextLimitExceededError(
                d.get("model_id"),
                prompt_tokens=d.get("prompt_tokens"),
                context_limit=d.get("context_limit"),
                requested_output=d.get("requested_output"),
            )
        else:
            exc = LMStrixError(message, **d)
    except (KeyError, TypeError):
        exc = LMStrixError(message, **d)
    exc.message = message  # the worker's wording, which may carry more than the template
    exc.args = (message,)
    return exc
