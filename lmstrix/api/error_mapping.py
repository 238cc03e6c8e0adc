"""Turn LM Studio's (and llama.cpp's) error bodies into typed lmstrix exceptions.

Pure functions: no I/O. LM Studio answers errors in several shapes that coexist: an OpenAI-style
object ``{"error": {"message", "type", "code", "param"}}``, a bare string ``{"error": "..."}``,
an SSE ``event: error`` frame, and an HTTP 200 for unknown routes. The texts matched here are
the exact wordings LM Studio, llama.cpp's server and llama-cpp-python send; the emulator in
:mod:`lmstrix.testing.bodies` reproduces each of them, and the tests pin them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lmstrix.domain.errors import (
    ContextLimitExceededError,
    InferenceError,
    LMStrixError,
    LMStudioAuthError,
    LMStudioServerError,
    ModelLoadError,
    ModelNotFoundError,
    UnsupportedEndpointError,
)

UNKNOWN_ENDPOINT_PREFIX = "Unexpected endpoint or method"

# Every overflow wording LM Studio has used (0.3.x llama.cpp, LM Studio's own check, 0.4.21
# streams, MLX) plus llama.cpp's server and llama-cpp-python's OpenAI-shaped one.
_OVERFLOW_RE = re.compile(
    r"tokens to keep from the initial prompt is greater than the context length"
    r"|when context the overflows"
    r"|does not fit in context length"
    r"|context length only supports"
    r"|Context size has been exceeded"
    r"|exceeds the available context size"
    r"|maximum context length is \d+ tokens",
    re.IGNORECASE,
)
# (prompt tokens, context) pairs, in the order the texts give them.
_OVERFLOW_NUMBERS = [
    re.compile(r"n_keep:\s*(?P<prompt>\d+)\s*>=\s*n_ctx:\s*(?P<ctx>\d+)"),
    re.compile(
        r"keep the first (?P<prompt>\d+) tokens.*?context length of only (?P<ctx>\d+)", re.S
    ),
    re.compile(
        r"input has (?P<prompt>\d+) tokens, but the context length only supports (?P<ctx>\d+)"
    ),
    re.compile(
        r"request \((?P<prompt>\d+) tokens\) exceeds the available context size \((?P<ctx>\d+)"
    ),
    re.compile(
        r"maximum context length is (?P<ctx>\d+) tokens\. However, you requested (?P<prompt>\d+)"
    ),
]
_LOAD_FAILURE_RE = re.compile(
    r"Failed to load model|insufficient system resources|Error loading model|No LM Runtime found",
    re.IGNORECASE,
)
_NOT_FOUND_RE = re.compile(
    r"^Invalid model identifier|^Model .* not found|No models loaded|Multiple models are loaded"
    r"|not found in downloaded models",
    re.IGNORECASE | re.S,
)
_SUGGESTIONS_RE = re.compile(r"\(e\.g\., (?P<names>[^)]*)\)")
_YOUR_MODELS_RE = re.compile(r"Your models:\s*\n(?P<names>.*)", re.S)
_QUOTED_MODEL_RE = re.compile(r"(?:identifier|model|Model) \\?\"(?P<id>[^\"\\]+)\\?\"")


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """The parts of an error body that matter, whatever its shape."""

    message: str
    type: str | None = None
    code: str | None = None
    param: str | None = None
    raw: Any = None

    @property
    def is_unknown_endpoint(self) -> bool:
        return self.message.startswith(UNKNOWN_ENDPOINT_PREFIX)


def extract_error(body: Any) -> ErrorBody | None:
    """The error carried by a decoded JSON body, or ``None`` when it is not an error body."""
    if not isinstance(body, dict):
        return None
    err = body.get("error")
    if isinstance(err, str):
        return ErrorBody(message=err, raw=body)
    if isinstance(err, dict):
        msg = err.get("message") or body.get("message") or err.get("type") or "unknown error"
        code = err.get("code")
        return ErrorBody(
            message=str(msg),
            type=str(err["type"]) if err.get("type") is not None else None,
            code=str(code) if code is not None and not isinstance(code, int) else None,
            param=str(err["param"]) if err.get("param") is not None else None,
            raw=body,
        )
    return None


def overflow_numbers(err: ErrorBody) -> tuple[int | None, int | None]:
    """(prompt tokens, context length) from an overflow error, when the text carries them."""
    raw_err = err.raw.get("error") if isinstance(err.raw, dict) else None
    if isinstance(raw_err, dict) and "n_prompt_tokens" in raw_err:
        return _int(raw_err.get("n_prompt_tokens")), _int(raw_err.get("n_ctx"))
    for rx in _OVERFLOW_NUMBERS:
        m = rx.search(err.message)
        if m:
            return int(m.group("prompt")), int(m.group("ctx"))
    return None, None


def is_overflow(err: ErrorBody) -> bool:
    return (
        err.type in ("exceed_context_size_error",)
        or err.code == "context_length_exceeded"
        or bool(_OVERFLOW_RE.search(err.message))
    )


def to_exception(
    err: ErrorBody,
    *,
    status: int,
    host_url: str,
    model: str | None = None,
    operation: str = "serve this request",
    token_sent: bool = False,
    context_length: int | None = None,
) -> LMStrixError:
    """Map one error body to the exception a caller can act on."""
    msg = err.message
    if status in (401, 403) or err.code == "invalid_api_key":
        return LMStudioAuthError(host_url, _first_sentence(msg), token_sent=token_sent)
    if err.is_unknown_endpoint:
        return UnsupportedEndpointError(
            host_url, operation, "LM Studio 0.4.0 or newer", reason=msg.strip()
        )
    if is_overflow(err):
        prompt, ctx = overflow_numbers(err)
        return ContextLimitExceededError(
            model, prompt_tokens=prompt, context_limit=ctx or context_length, reason=msg.strip()
        )
    if _LOAD_FAILURE_RE.search(msg):
        reason = msg.split("Error: ", 1)[1] if "Error: " in msg else msg
        return ModelLoadError(
            _quoted_model(msg) or model or "?",
            reason.strip(),
            host_url=host_url,
            context_length=context_length,
        )
    if err.code == "model_not_found" or err.type == "model_not_found" or _NOT_FOUND_RE.search(msg):
        return ModelNotFoundError(
            _quoted_model(msg) or model or "?",
            suggestions=_suggestions(msg),
            host_url=host_url,
            reason=_first_sentence(msg),
        )
    if status >= 500:  # the server failed this request, in words nothing above explains
        return LMStudioServerError(
            host_url, msg.strip(), status=status, model_id=model, operation=operation
        )
    return InferenceError(model, f"HTTP {status}: {msg.strip()}", host_url=host_url)


def _first_sentence(msg: str) -> str:
    head = msg.strip().split("\n", 1)[0]
    cut = head.find(". ")
    return head[: cut + 1] if 0 < cut < 200 else head[:200]


def _suggestions(msg: str) -> list[str]:
    m = _SUGGESTIONS_RE.search(msg)
    if m:
        return [n.strip() for n in m.group("names").split(",") if n.strip()]
    m = _YOUR_MODELS_RE.search(msg)
    if m:
        return [n.strip() for n in m.group("names").splitlines() if n.strip()]
    return []


def _quoted_model(msg: str) -> str | None:
    m = _QUOTED_MODEL_RE.search(msg)
    return m.group("id") if m else None


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None
