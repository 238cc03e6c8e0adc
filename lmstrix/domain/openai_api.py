"""The OpenAI HTTP API's shapes, as ``lmstrix serve`` reads and writes them: pure functions.

Reading: a chat or completion request body becomes what ``infer()`` takes (the last user
message is the prompt, leading system messages the system prompt, the turns between them the
history), with every field it cannot honour refused by name. Writing: completions, streamed
chunks, model entries and error objects, shaped as OpenAI sends them, so the ``openai`` SDK and
other clients read them unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lmstrix.domain.errors import ValidationError

# Sampling fields that map onto infer()'s options, and those a client may send that lmstrix
# accepts and ignores (they do not change what the model is asked).
_IGNORED = frozenset(
    {"user", "seed", "frequency_penalty", "presence_penalty", "logit_bias", "metadata", "store"}
)
_UNSUPPORTED = ("stop", "tools", "tool_choice", "functions", "logprobs", "response_format")

# LM Studio's stop reasons that mean the answer was cut by its length budget.
_LENGTH_STOPS = frozenset({"maxPredictedTokensReached", "length", "contextLengthReached"})


@dataclass(frozen=True, slots=True)
class CompletionCall:
    """One chat or completion request, as ``infer()`` takes it."""

    model: str
    prompt: str
    stream: bool = False
    include_usage: bool = False
    system_prompt: str | None = None
    history: tuple[dict[str, str], ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


def _text(content: Any, where: str) -> str:
    """A message's content: a string, or a list of text parts (joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text":
                raise ValidationError(
                    f"{where}[{i}]", part, "must be a text part; lmstrix sends text only"
                )
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise ValidationError(where, content, "must be a string or a list of text parts")


def _common(body: Mapping[str, Any]) -> tuple[str, bool, bool, dict[str, Any]]:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ValidationError("model", model, "must name a model, as GET /v1/models lists them")
    for name in _UNSUPPORTED:
        if body.get(name) not in (None, [], False):
            raise ValidationError(name, body.get(name), "is not supported by lmstrix serve")
    n = body.get("n", 1)
    if n not in (None, 1):
        raise ValidationError("n", n, "must be 1: lmstrix answers with one choice")
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise ValidationError("stream", stream, "must be true or false")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, Mapping):
        raise ValidationError("stream_options", stream_options, "must be an object")
    include_usage = bool(stream_options.get("include_usage", False))
    options: dict[str, Any] = {}
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            options[key] = body[key]
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        options["max_tokens"] = limit
    return model, bool(stream), include_usage, options


def parse_chat(body: Mapping[str, Any]) -> CompletionCall:
    """A ``POST /v1/chat/completions`` body; a field lmstrix cannot honour raises
    ``ValidationError`` naming it."""
    model, stream, include_usage, options = _common(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValidationError("messages", messages, "must be a non-empty list of messages")
    turns: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ValidationError(f"messages[{i}]", m, "must be an object with role and content")
        role = m.get("role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise ValidationError(
                f"messages[{i}].role", role, "must be system, developer, user or assistant"
            )
        turns.append({"role": role, "content": _text(m.get("content"), f"messages[{i}].content")})
    system = []
    while turns and turns[0]["role"] == "system":
        system.append(turns.pop(0)["content"])
    if not turns or turns[-1]["role"] != "user":
        raise ValidationError(
            f"messages[{len(messages) - 1}].role",
            messages[-1].get("role") if isinstance(messages[-1], Mapping) else None,
            "the last message must be the user's",
        )
    prompt = turns.pop()["content"]
    if not prompt:
        raise ValidationError(f"messages[{len(messages) - 1}].content", prompt, "is empty")
    return CompletionCall(
        model,
        prompt,
        stream,
        include_usage,
        "\n\n".join(system) if system else None,
        tuple(turns),
        options,
    )


def parse_completion(body: Mapping[str, Any]) -> CompletionCall:
    """A ``POST /v1/completions`` body (one prompt string)."""
    model, stream, include_usage, options = _common(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise ValidationError("prompt", prompt, "must be one non-empty string")
    if body.get("suffix") or body.get("echo") or body.get("best_of") not in (None, 1):
        raise ValidationError("suffix/echo/best_of", None, "are not supported by lmstrix serve")
    return CompletionCall(model, prompt, stream, include_usage, options=options)


def finish_reason(stop_reason: str | None) -> str:
    """OpenAI's ``finish_reason`` for LM Studio's stop reason."""
    return "length" if stop_reason in _LENGTH_STOPS else "stop"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_id(job_id: str, *, chat: bool) -> str:
    return f"{'chatcmpl' if chat else 'cmpl'}-{job_id}"


def chat_completion(
    job_id: str, model: str, created: int, text: str, stop_reason: str | None, use: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": completion_id(job_id, chat=True),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason(stop_reason),
            }
        ],
        "usage": use,
    }


def text_completion(
    job_id: str, model: str, created: int, text: str, stop_reason: str | None, use: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": completion_id(job_id, chat=False),
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": finish_reason(stop_reason),
            }
        ],
        "usage": use,
    }


@dataclass(frozen=True, slots=True)
class ChunkMaker:
    """The chunks of one streamed answer, chat or completion, all with the same id."""

    job_id: str
    model: str
    created: int
    chat: bool
    include_usage: bool

    def _chunk(self, choice: dict[str, Any] | None, use: dict[str, int] | None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": completion_id(self.job_id, chat=self.chat),
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [] if choice is None else [choice],
        }
        if self.include_usage:
            chunk["usage"] = use
        return chunk

    def _choice(self, delta: dict[str, Any], text: str, finish: str | None) -> dict[str, Any]:
        if self.chat:
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

    def first(self) -> dict[str, Any] | None:
        """The opening chunk (chat only: the assistant's role, no text)."""
        if not self.chat:
            return None
        return self._chunk(self._choice({"role": "assistant", "content": ""}, "", None), None)

    def piece(self, text: str) -> dict[str, Any]:
        return self._chunk(self._choice({"content": text}, text, None), None)

    def last(self, stop_reason: str | None) -> dict[str, Any]:
        return self._chunk(self._choice({}, "", finish_reason(stop_reason)), None)

    def usage(self, use: dict[str, int]) -> dict[str, Any] | None:
        """The usage chunk (no choices), sent only when the client asked for it."""
        return self._chunk(None, use) if self.include_usage else None


def model_entry(
    model_id: str,
    created: int,
    hosts: list[str],
    tested_context: int | None,
    declared_context: int | None,
    **more: Any,
) -> dict[str, Any]:
    """One entry of ``GET /v1/models``: OpenAI's keys, then lmstrix's beside them."""
    return {
        "id": model_id,
        "object": "model",
        "created": created,
        "owned_by": "lmstrix",
        "hosts": hosts,
        "tested_context": tested_context,
        "declared_context": declared_context,
        **more,
    }


def error_body(
    message: str, kind: str, *, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """An OpenAI error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
