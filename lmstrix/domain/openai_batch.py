"""The OpenAI Batch format, as pure functions: input lines in, output lines and batch objects out.

lmstrix speaks this format so that files written for OpenAI's Batch API, or
vLLM's ``run-batch``, run on LM Studio unchanged and their results feed the same tooling:

- input: one JSON object per line, ``{custom_id, method: "POST", url: "/v1/chat/completions",
  body: {model, messages, max_tokens, temperature, ...}}``, ``custom_id`` unique in the file
  (or ``url: "/v1/completions"`` with ``body: {model, prompt, ...}``; one endpoint per batch);
- output: one line per request, ``{id, custom_id, response: {status_code, request_id, body},
  error}``, where ``body`` is a ``chat.completion`` (or ``text_completion``) object;
- the batch object: ``status`` in OpenAI's words, ``request_counts{total, completed, failed}``
  and Unix-second timestamps.

Validation is all-or-nothing and collects every problem with its line number, so one run shows
all that is wrong with a 10 000-line file. Nothing here touches the database or the network.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lmstrix.domain.enums import BatchStatus, JobStatus
from lmstrix.domain.errors import ValidationError
from lmstrix.domain.nesting import loads_json
from lmstrix.domain.payloads import InferenceJobResult

CHAT_URL = "/v1/chat/completions"
COMPLETIONS_URL = "/v1/completions"
ENDPOINTS = (CHAT_URL, COMPLETIONS_URL)  # what a batch may run (OpenAI's ``endpoint``)
MAX_REQUESTS = 50_000  # OpenAI's limits (batch_create_params.py)
MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_CUSTOM_ID = 512  # the jobs.custom_id column
COMPLETION_WINDOW_SECONDS = 24 * 3600
SHOWN_ERRORS = 10  # in the exception's message; ``errors`` has them all (up to MAX_ERRORS)
MAX_ERRORS = 1000

# What the queue's inference request can carry. Anything else in a body would be silently
# dropped, which changes the answer, so it is refused instead.
BODY_KEYS = (
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repeat_penalty",
    "min_p",
    "stop",
    "seed",
)
# The body keys that are sampling options of ``infer()``, under the same names.
SAMPLING_KEYS = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repeat_penalty",
    "min_p",
    "stop",
    "seed",
)
# Harmless when they have the only value lmstrix runs with; ``user`` is caller metadata.
NEUTRAL_KEYS = {"stream": False, "n": 1}
IGNORED_KEYS = ("user",)
LINE_KEYS = ("custom_id", "method", "url", "body")
SYSTEM_ROLES = ("system", "developer")

FINAL = frozenset(
    {BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)


@dataclass(frozen=True, slots=True)
class LineError:
    """One problem in an input file, in the shape of OpenAI's ``errors.data`` entries."""

    line: int | None
    code: str
    message: str
    param: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "line": self.line, "message": self.message, "param": self.param}

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.message}"


class BatchValidationError(ValidationError):
    """A batch file was refused; ``errors`` lists every problem with its line number."""

    def __init__(self, source: str, errors: list[LineError], total: int | None = None) -> None:
        total = len(errors) if total is None else total
        shown = "; ".join(str(e) for e in errors[:SHOWN_ERRORS])
        more = f"; and {total - SHOWN_ERRORS} more" if total > SHOWN_ERRORS else ""
        noun = "problem" if total == 1 else "problems"
        super().__init__("batch", source, f"{total} {noun}, nothing was queued: {shown}{more}")
        self.errors = errors
        self.total = total
        self.details["errors"] = [e.to_dict() for e in errors]


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One validated request of a batch file."""

    line: int
    custom_id: str
    model: str
    prompt: str
    system_prompt: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repeat_penalty: float | None = None
    min_p: float | None = None
    stop: str | tuple[str, ...] | None = None
    seed: int | None = None

    def params(self) -> dict[str, Any]:
        """The sampling options that were given (the others keep ``infer()``'s defaults)."""
        out: dict[str, Any] = {}
        for key in SAMPLING_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclass(slots=True)
class _Collector:
    source: str
    errors: list[LineError] = field(default_factory=list)
    total: int = 0

    def add(self, line: int | None, code: str, message: str, param: str | None = None) -> None:
        self.total += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(LineError(line, code, message, param))


def _text(content: Any, where: str, c: _Collector, n: int) -> str | None:
    """A message's text: a string, or OpenAI's list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not (isinstance(part, Mapping) and part.get("type") == "text"):
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                c.add(n, "invalid_value", f"{where}[{i}] is {kind!r}; only text parts run", where)
                return None
            if not isinstance(part.get("text"), str):
                c.add(n, "invalid_value", f"{where}[{i}].text must be a string", where)
                return None
            parts.append(part["text"])
        return "".join(parts)
    c.add(n, "invalid_value", f"{where} must be a string or a list of text parts", where)
    return None


def _messages(messages: Any, c: _Collector, n: int) -> tuple[str, str | None] | None:
    """(prompt, system prompt) from ``messages``: system/developer messages, then one user one.

    The queue's requests hold one prompt and one system prompt; a conversation with assistant
    turns cannot be run faithfully yet, so it is refused rather than flattened.
    """
    if not isinstance(messages, list) or not messages:
        c.add(n, "missing_required_parameter", "body.messages must be a non-empty list", "messages")
        return None
    system: list[str] = []
    user: str | None = None
    for i, msg in enumerate(messages):
        where = f"body.messages[{i}]"
        if not isinstance(msg, Mapping):
            c.add(n, "invalid_value", f"{where} must be an object", where)
            return None
        role = msg.get("role")
        text = _text(msg.get("content"), f"{where}.content", c, n)
        if text is None:
            return None
        if role in SYSTEM_ROLES and user is None:
            system.append(text)
        elif role == "user" and user is None:
            user = text
        elif role in ("user", "assistant", "tool") or role in SYSTEM_ROLES:
            c.add(
                n,
                "unsupported_value",
                f"{where}: multi-turn conversations are not supported; a request is system "
                "messages followed by one user message",
                where,
            )
            return None
        else:
            c.add(n, "invalid_value", f"{where}.role {role!r} is not a chat role", where)
            return None
    if user is None:
        c.add(n, "missing_required_parameter", "body.messages has no user message", "messages")
        return None
    return user, "\n\n".join(system) if system else None


def _number(body: Mapping[str, Any], key: str, c: _Collector, n: int, *, integer: bool) -> Any:
    value = body.get(key)
    if value is None:
        return None
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok:
        kind = "an integer" if integer else "a number"
        c.add(n, "invalid_type", f"body.{key} must be {kind}, not {value!r}", key)
        return None
    return value


def _stop(body: Mapping[str, Any], c: _Collector, n: int) -> str | tuple[str, ...] | None:
    """``body.stop``: a string or a list of strings, as OpenAI takes it (the values are checked
    with the other options, when the request is prepared)."""
    value = body.get("stop")
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    c.add(
        n, "invalid_type", f"body.stop must be a string or a list of strings, not {value!r}", "stop"
    )
    return None


def _prompt(prompt: Any, c: _Collector, n: int) -> tuple[str, None] | None:
    """A completions body's ``prompt``: one string (or a list holding one)."""
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        c.add(n, "invalid_value", "body.prompt must be one non-empty string", "prompt")
        return None
    return prompt, None


def _body(
    body: Any, default_model: str | None, c: _Collector, n: int, endpoint: str = CHAT_URL
) -> dict[str, Any] | None:
    if not isinstance(body, Mapping):
        c.add(n, "missing_required_parameter", "body must be an object", "body")
        return None
    ok = True
    chat = endpoint == CHAT_URL
    keys = BODY_KEYS if chat else tuple("prompt" if k == "messages" else k for k in BODY_KEYS)
    for key, value in body.items():
        if key in keys or key in IGNORED_KEYS:
            continue
        if key in NEUTRAL_KEYS and value == NEUTRAL_KEYS[key]:
            continue
        ok = False
        if key in NEUTRAL_KEYS:
            c.add(n, "unsupported_value", f"body.{key}={value!r} is not supported", key)
        else:
            c.add(
                n,
                "unsupported_parameter",
                f"body.{key} is not supported (supported: {', '.join(keys)})",
                key,
            )
    model = body.get("model", default_model)
    if not isinstance(model, str) or not model.strip():
        ok = False
        c.add(n, "missing_required_parameter", "body.model must name a model", "model")
    if "max_tokens" in body and "max_completion_tokens" in body:
        ok = False
        c.add(
            n, "invalid_value", "give max_tokens or max_completion_tokens, not both", "max_tokens"
        )
    max_tokens = _number(body, "max_tokens", c, n, integer=True)
    if max_tokens is None:
        max_tokens = _number(body, "max_completion_tokens", c, n, integer=True)
    numbers = {
        "max_tokens": max_tokens,
        "temperature": _number(body, "temperature", c, n, integer=False),
        "top_p": _number(body, "top_p", c, n, integer=False),
        "top_k": _number(body, "top_k", c, n, integer=True),
        "repeat_penalty": _number(body, "repeat_penalty", c, n, integer=False),
        "min_p": _number(body, "min_p", c, n, integer=False),
        "seed": _number(body, "seed", c, n, integer=True),
        "stop": _stop(body, c, n),
    }
    text = _messages if chat else _prompt
    messages = text(body.get("messages" if chat else "prompt"), c, n)
    if not ok or messages is None:
        return None
    assert isinstance(model, str)
    return {"model": model.strip(), "prompt": messages[0], "system_prompt": messages[1], **numbers}


def _decode(raw: str | bytes | Mapping[str, Any], c: _Collector, n: int) -> Any:
    if isinstance(raw, Mapping):
        return raw
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            c.add(n, "invalid_json", f"not UTF-8 (byte {exc.start})")
            return None
    try:
        return loads_json(raw)
    except json.JSONDecodeError as exc:
        c.add(n, "invalid_json", f"not valid JSON: {exc.msg} (column {exc.colno})")
        return None


def parse_lines(
    lines: Iterable[str | bytes | Mapping[str, Any]],
    *,
    default_model: str | None = None,
    source: str = "<lines>",
    endpoint: str = CHAT_URL,
) -> list[BatchLine]:
    """Validate a whole batch file; returns its requests or raises ``BatchValidationError``.

    Blank lines are skipped (their numbers still count, so errors point at the right line).
    ``default_model`` fills in a body without ``model``. Every line's ``url`` must be
    ``endpoint`` (one of ``ENDPOINTS``); a ``/v1/completions`` body has ``prompt`` where a chat
    body has ``messages``.
    """
    if endpoint not in ENDPOINTS:
        raise ValidationError("endpoint", endpoint, f"must be one of {', '.join(ENDPOINTS)}")
    c = _Collector(source)
    out: list[BatchLine] = []
    first_seen: dict[str, int] = {}
    requests = 0
    for n, raw in enumerate(lines, start=1):
        if isinstance(raw, str | bytes) and not raw.strip():
            continue
        requests += 1
        if requests > MAX_REQUESTS:
            c.add(n, "too_many_requests", f"more than {MAX_REQUESTS} requests in one batch")
            break
        obj = _decode(raw, c, n)
        if obj is None:
            continue
        if not isinstance(obj, Mapping):
            c.add(n, "invalid_json", f"must be a JSON object, not {type(obj).__name__}")
            continue
        unknown = [k for k in obj if k not in LINE_KEYS]
        if unknown:
            c.add(n, "unsupported_parameter", f"unknown key(s) {', '.join(map(repr, unknown))}")
        custom_id = obj.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            c.add(
                n, "missing_required_parameter", "custom_id must be a non-empty string", "custom_id"
            )
            custom_id = None
        elif len(custom_id) > MAX_CUSTOM_ID:
            c.add(n, "invalid_value", f"custom_id is longer than {MAX_CUSTOM_ID}", "custom_id")
        elif custom_id in first_seen:
            c.add(
                n,
                "duplicate_custom_id",
                f"custom_id {custom_id!r} is used again (first on line {first_seen[custom_id]})",
                "custom_id",
            )
        else:
            first_seen[custom_id] = n
        if obj.get("method") != "POST":
            c.add(n, "invalid_value", f"method must be 'POST', not {obj.get('method')!r}", "method")
        if obj.get("url") != endpoint:
            c.add(
                n,
                "invalid_url",
                f"url {obj.get('url')!r} is not the batch's endpoint {endpoint}",
                "url",
            )
            continue  # the body of another endpoint has other rules: more errors would be noise
        body = _body(obj.get("body"), default_model, c, n, endpoint)
        if body is not None and custom_id is not None and c.total == 0:
            out.append(BatchLine(line=n, custom_id=custom_id, **body))
    if requests == 0:
        c.add(None, "empty_file", "the batch has no requests")
    if c.total:
        raise BatchValidationError(source, c.errors, c.total)
    return out


# -- output ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One request of a batch as stored (a job row), for its output line."""

    job_id: str
    custom_id: str
    model: str | None
    status: str
    result: dict[str, Any] | None
    error_type: str | None
    error_message: str | None
    finished_at: datetime | None


_STATUS_CODES = {
    "ValidationError": 400,
    "ContextLimitExceededError": 400,
    "LMStudioAuthError": 401,
    "ModelNotFoundError": 404,
}


def _unix(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp())


def chat_completion_body(item: BatchItem) -> dict[str, Any]:
    """The ``chat.completion`` object a synchronous call would have returned."""
    r = InferenceJobResult.from_row(item.result)
    return {
        "id": f"chatcmpl-{item.job_id.replace('-', '')}",
        "object": "chat.completion",
        "created": _unix(item.finished_at),
        "model": item.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": r.response},
                "logprobs": None,
                "finish_reason": r.finish_reason or "stop",
            }
        ],
        "usage": {
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.response_tokens,
            "total_tokens": r.tokens_used or r.prompt_tokens + r.response_tokens,
        },
        # LM Studio's own extension of the object (its /api/v0 "stats"), kept for speed figures.
        "stats": {
            "tokens_per_second": r.tokens_per_second,
            "time_to_first_token": r.time_to_first_token,
            "generation_time": r.inference_time,
            "stop_reason": r.stop_reason,
        },
    }


def text_completion_body(item: BatchItem) -> dict[str, Any]:
    """The ``text_completion`` object a synchronous ``/v1/completions`` call would have
    returned: the chat body's figures, with the answer as ``text``."""
    chat = chat_completion_body(item)
    choice = chat["choices"][0]
    return {
        **chat,
        "id": f"cmpl-{item.job_id.replace('-', '')}",
        "object": "text_completion",
        "choices": [
            {
                "index": 0,
                "text": choice["message"]["content"],
                "logprobs": None,
                "finish_reason": choice["finish_reason"],
            }
        ],
    }


def output_line(item: BatchItem, endpoint: str = CHAT_URL) -> dict[str, Any]:
    """The output (or error) file line of a finished request of a batch run on ``endpoint``."""
    line: dict[str, Any] = {
        "id": f"batch_req_{item.job_id.replace('-', '')}",
        "custom_id": item.custom_id,
        "response": None,
        "error": None,
    }
    if item.status == JobStatus.SUCCEEDED.value:
        line["response"] = {
            "status_code": 200,
            "request_id": item.job_id,
            "body": (
                chat_completion_body(item) if endpoint == CHAT_URL else text_completion_body(item)
            ),
        }
    elif item.status in (JobStatus.CANCELLED.value, JobStatus.EXPIRED.value):
        word = "cancelled" if item.status == JobStatus.CANCELLED.value else "expired"
        line["error"] = {
            "code": f"batch_{word}",
            "message": f"This request was {word} before it finished.",
        }
    else:
        message = item.error_message or item.error_type or "the request failed"
        code = item.error_type or "error"
        line["response"] = {
            "status_code": _STATUS_CODES.get(code, 500),
            "request_id": item.job_id,
            "body": {"error": {"message": message, "type": code, "param": None, "code": code}},
        }
        line["error"] = {"code": code, "message": message}
    return line


def succeeded(line: Mapping[str, Any]) -> bool:
    """Whether an output line is a success (OpenAI puts those in the output file)."""
    response = line.get("response")
    return (
        line.get("error") is None
        and isinstance(response, Mapping)
        and (response.get("status_code") == 200)
    )


# -- the batch object and its status ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counts:
    """Job rows of a batch per status."""

    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0

    @classmethod
    def of(cls, by_status: Mapping[str, int]) -> Counts:
        return cls(**{s.value: int(by_status.get(s.value, 0)) for s in JobStatus})

    @property
    def unfinished(self) -> int:
        return self.queued + self.running

    @property
    def completed(self) -> int:
        return self.succeeded

    @property
    def not_succeeded(self) -> int:
        """OpenAI's ``failed``: every finished request without an answer."""
        return self.failed + self.cancelled + self.expired

    @property
    def finished(self) -> int:
        return self.succeeded + self.not_succeeded


def next_status(
    status: str, total: int, counts: Counts, now: datetime, expires_at: datetime | None
) -> str:
    """The status a batch moves to, given its job rows (pure: the store applies it).

    in_progress -> completed once every request is finished; -> expired past ``expires_at``
    with requests left; cancelling -> cancelled once nothing runs any more. Final statuses
    stay.
    """
    s = BatchStatus(status)
    if s in FINAL:
        return s.value
    if s is BatchStatus.CANCELLING:
        return BatchStatus.CANCELLED.value if counts.unfinished == 0 else s.value
    if counts.unfinished == 0 and counts.finished >= total:
        return BatchStatus.COMPLETED.value
    if expires_at is not None and now >= expires_at:
        return BatchStatus.EXPIRED.value
    return s.value


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """A batch row as callers see it."""

    id: str
    status: str
    endpoint: str
    completion_window: str
    model: str | None
    total: int
    completed: int
    failed: int
    metadata: dict[str, Any] | None
    errors: list[dict[str, Any]] | None
    input_file: str | None
    output_file: str | None
    error_file: str | None
    created_at: datetime
    in_progress_at: datetime | None
    expires_at: datetime | None
    finalizing_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    expired_at: datetime | None
    cancelling_at: datetime | None
    cancelled_at: datetime | None

    @property
    def finished(self) -> bool:
        return BatchStatus(self.status) in FINAL

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI batch object."""
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file,
            "error_file_id": self.error_file,
            "created_at": _unix(self.created_at),
            "in_progress_at": _unix(self.in_progress_at),
            "expires_at": _unix(self.expires_at),
            "finalizing_at": _unix(self.finalizing_at),
            "completed_at": _unix(self.completed_at),
            "failed_at": _unix(self.failed_at),
            "expired_at": _unix(self.expired_at),
            "cancelling_at": _unix(self.cancelling_at),
            "cancelled_at": _unix(self.cancelled_at),
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
            "model": self.model,
        }
