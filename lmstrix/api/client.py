"""``LMStudioClient``: one httpx client per LM Studio host.

It copes with every LM Studio generation: 0.4+ (``/api/v1``: load at a chosen context, unload),
0.3.6+ (``/api/v0``: model state and timing stats) and anything that only speaks OpenAI's ``/v1``
(old LM Studio, or llama.cpp's own server). The generation is detected from response *bodies*,
because LM Studio answers unknown routes with HTTP 200 and an error body.

Retries (with backoff) happen only on connection errors, where nothing reached the server: a
request the host received (it timed out, answered HTTP 5xx, or dropped the connection) is never
sent again here, and its typed error (``LMStudioTimeoutError``, ``LMStudioServerError``) tells
the worker not to send it again either.

Timeouts: connecting gets ``connect_timeout`` (never more than ``timeout``); then an inference
request gets ``timeout`` for its whole answer. For a streamed answer that is the wait for the
first piece, every gap between pieces *and* the whole stream: a stream still going when its time
is up is cut off (:mod:`lmstrix.api.cutoff`). Loads get their own long ``load_timeout``; a load
never reuses an instance loaded at another size, and reports the context LM Studio *applied*,
which can be less than what was asked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from difflib import get_close_matches
from typing import Any

import httpx
from pydantic import SecretStr

from lmstrix.api.cutoff import Cutoff
from lmstrix.api.error_mapping import extract_error, to_exception
from lmstrix.api.parsing import (
    Message,
    looks_like,
    messages_payload,
    model_from_openai,
    model_from_v1,
    models_from_v0,
    props_context,
    stop_reason_for,
    to_float,
    to_int,
)
from lmstrix.domain.errors import (
    InferenceError,
    LMStrixError,
    LMStudioAuthError,
    LMStudioConnectionError,
    LMStudioServerError,
    LMStudioTimeoutError,
    ModelNotFoundError,
    NotAnLLMServerError,
    UnsupportedEndpointError,
    ValidationError,
)
from lmstrix.domain.host_capabilities import HostCapabilities, decide_capabilities
from lmstrix.domain.host_types import (
    ApiGeneration,
    ChatResult,
    HostHealth,
    LoadedInstance,
    LoadResult,
    ModelRecord,
)
from lmstrix.domain.nesting import loads_json
from lmstrix.domain.sampling import CHAT_COMPLETIONS_FIELDS, not_sent, sampling_body
from lmstrix.domain.urls import check_url

log = logging.getLogger(__name__)

DEFAULT_URL = "http://localhost:1234"
#: An idle pooled connection to a host is dropped after this long, before the host drops it
#: (LM Studio, llama.cpp's server and most others keep idle connections for 5 s): sending on
#: a connection the host is closing at that moment fails with no answer.
KEEPALIVE_SECONDS = 2.0
#: After ``[DONE]``, how long the rest of a stream's body may take to arrive.
DONE_TAIL_SECONDS = 1.0


class LMStudioClient:
    """A synchronous client for one LM Studio host.

    ``timeout`` bounds one inference request (a whole stream included), ``load_timeout`` one
    model load (loads of large models take minutes), ``connect_timeout`` the TCP connect (at
    most ``timeout``) and, with ``timeout``, the quick metadata calls.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        token: str | SecretStr | None = None,
        timeout: float = 300.0,
        load_timeout: float = 600.0,
        connect_timeout: float = 5.0,
        max_retries: int = 3,
        retry_backoff: float = 0.25,
        verbose: bool = False,
    ) -> None:
        self.base_url = check_url(base_url)
        self._token = SecretStr(token) if isinstance(token, str) else token
        self.timeout = timeout
        self.load_timeout = load_timeout
        self.connect_timeout = connect_timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.verbose = verbose
        headers = {"Accept": "application/json", "User-Agent": "lmstrix"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(connect_timeout, timeout)),
            limits=httpx.Limits(
                max_keepalive_connections=4, max_connections=16, keepalive_expiry=KEEPALIVE_SECONDS
            ),
        )
        self._generation: ApiGeneration | None = None
        self._capabilities: HostCapabilities | None = None
        self._chat_path: str | None = None
        self._dropped_noted: set[str] = set()

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LMStudioClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        auth = ", token=***" if self._token is not None else ""
        return f"LMStudioClient({self.base_url!r}{auth})"

    # -- discovery ----------------------------------------------------------------------------

    def greeting(self) -> bool:
        """True when the server says it is LM Studio (``GET /lmstudio-greeting``)."""
        resp = self._request("GET", "/lmstudio-greeting", timeout=self._quick_timeout)
        if resp.status_code != 200:
            return False
        body = _json_or_none(resp)
        return isinstance(body, dict) and body.get("lmstudio") is True

    @property
    def api_generation(self) -> ApiGeneration:
        """The host's API generation, detected once and cached."""
        if self._generation is None:
            self._generation = self.detect_api_generation()
        return self._generation

    def detect_api_generation(self) -> ApiGeneration:
        """Probe ``/api/v1/models`` -> ``/api/v0/models`` -> ``/v1/models`` by body shape."""
        tried: list[str] = []
        for path, generation, key in (
            ("/api/v1/models", ApiGeneration.V1, "models"),
            ("/api/v0/models", ApiGeneration.V0, "data"),
            ("/v1/models", ApiGeneration.OPENAI, "data"),
        ):
            resp = self._request("GET", path, timeout=self._quick_timeout)
            body = _json_or_none(resp)
            tried.append(f"GET {path} (HTTP {resp.status_code}{'' if body else ', not JSON'})")
            self._raise_for_auth(resp, body)
            if resp.status_code == 200 and isinstance(body, dict):
                items = body.get(key)
                if isinstance(items, list) and looks_like(generation, items):
                    self._generation = generation
                    return generation
        raise NotAnLLMServerError(self.base_url, ", ".join(tried))

    @property
    def capabilities(self) -> HostCapabilities:
        """What this host can do (load control, stats, parallel slots...), probed once."""
        if self._capabilities is None:
            gen = self.api_generation
            greets, props, parallel = False, None, None
            if gen is ApiGeneration.OPENAI:
                greets = self._answers_greeting()
                props = self.props()
                parallel = to_int(props.get("total_slots")) if props else None
            elif gen is ApiGeneration.V1:
                parallel = next(
                    (i.parallel for i in self.loaded_instances() if i.parallel is not None), None
                )
            self._capabilities = decide_capabilities(
                gen, greets_as_lmstudio=greets, llama_cpp_props=props is not None, parallel=parallel
            )
        return self._capabilities

    def props(self) -> dict[str, Any] | None:
        """llama.cpp's ``/props`` (its context, slots and model), or None where there is none."""
        resp = self._request("GET", "/props", timeout=self._quick_timeout, operation="props")
        body = _json_or_none(resp)
        self._raise_for_auth(resp, body)
        if resp.status_code != 200 or not isinstance(body, dict) or extract_error(body):
            return None
        if "default_generation_settings" not in body and "total_slots" not in body:
            return None
        return body

    def served_context(self, model: str) -> int | None:
        """The context the host serves ``model`` at right now, where it says so: the loaded
        instance's (LM Studio, llama.cpp's model list), else llama.cpp's ``/props``."""
        for inst in self.loaded_instances(model):
            if inst.context_length is not None:
                return inst.context_length
        if self.api_generation is ApiGeneration.OPENAI and self.capabilities.server == "llama.cpp":
            props = self.props()
            return props_context(props) if props else None
        return None

    def _answers_greeting(self) -> bool:
        try:
            return self.greeting()
        except LMStudioAuthError:
            raise
        except LMStrixError:
            return False

    def list_models(self) -> list[ModelRecord]:
        """Every downloaded model with its loaded instances (what the generation can tell)."""
        gen = self.api_generation
        if gen is ApiGeneration.V1:
            body = self._get_json("/api/v1/models", "list models")
            return [model_from_v1(m) for m in body.get("models", []) if isinstance(m, dict)]
        if gen is ApiGeneration.V0:
            body = self._get_json("/api/v0/models", "list models")
            return models_from_v0(body.get("data", []))
        body = self._get_json("/v1/models", "list models")
        return [model_from_openai(m) for m in body.get("data", []) if isinstance(m, dict)]

    def get_model(self, key: str) -> ModelRecord:
        """One model by key (or by one of its instance ids)."""
        models = self.list_models()
        for m in models:
            if m.key == key or any(i.id == key for i in m.loaded_instances):
                return m
        names = [m.key for m in models]
        raise ModelNotFoundError(
            key,
            suggestions=get_close_matches(key, names, n=5, cutoff=0.3),
            host_url=self.base_url,
        )

    def loaded_instances(self, model: str | None = None) -> list[LoadedInstance]:
        out: list[LoadedInstance] = []
        for m in self.list_models():
            if model is None or m.key == model:
                out.extend(m.loaded_instances)
        return out

    def answers(self, timeout: float) -> bool:
        """Whether the host gives any HTTP answer within ``timeout`` seconds: one cheap request,
        no retry (the worker's "is it down?" probe; a hung server fails it as a dead one)."""
        limit = httpx.Timeout(timeout, connect=min(self.connect_timeout, timeout))
        try:
            self._http.get("/lmstudio-greeting", timeout=limit)
        except httpx.TransportError:
            return False
        return True

    def health(self) -> HostHealth:
        """Probe the host; never raises for a down host (the result says what is wrong)."""
        started = time.perf_counter()
        try:
            is_lms = self.greeting()
            latency = (time.perf_counter() - started) * 1000
            self._generation = self._capabilities = None
            models = self.list_models()
            capabilities = self.capabilities
        except LMStudioAuthError as exc:
            return HostHealth(url=self.base_url, reachable=True, error=str(exc), auth_required=True)
        except LMStrixError as exc:
            return HostHealth(url=self.base_url, reachable=False, error=str(exc))
        return HostHealth(
            url=self.base_url,
            reachable=True,
            is_lmstudio=is_lms,
            api_generation=self._generation,
            models=len(models),
            loaded_instances=sum(len(m.loaded_instances) for m in models),
            latency_ms=round(latency, 2),
            capabilities=capabilities.to_dict(),
        )

    # -- loading ------------------------------------------------------------------------------

    def load(
        self,
        model: str,
        context_length: int | None = None,
        *,
        reuse: bool = True,
        unload_others: bool = False,
        **options: Any,
    ) -> LoadResult:
        """Make ``model`` loaded at ``context_length`` and say what LM Studio really applied.

        An instance already loaded at exactly that size is reused (``reuse=True``); instances of
        the model at any other size are unloaded first, so a caller never runs at a size it did
        not ask for. ``unload_others`` also unloads every other model (one model per host).
        ``options`` pass through (``flash_attention``, ``eval_batch_size``...).
        """
        if context_length is not None and context_length <= 0:
            raise ValidationError("context_length", context_length, "must be a positive integer")
        self._require_v1("load a model at a chosen context length")
        models = self.list_models()
        record = next((m for m in models if m.key == model), None)
        if record is None:
            raise ModelNotFoundError(
                model,
                suggestions=get_close_matches(model, [m.key for m in models], n=5, cutoff=0.3),
                host_url=self.base_url,
                reason="not among the host's downloaded models",
            )
        if unload_others:
            for other in models:
                if other.key != model:
                    for inst in other.loaded_instances:
                        self.unload(inst.id)
        keep: LoadedInstance | None = None
        for inst in record.loaded_instances:
            wanted = context_length is None or inst.context_length == context_length
            if reuse and keep is None and wanted:
                keep = inst
            else:
                self.unload(inst.id)
        if keep is not None:
            return LoadResult(
                model=model,
                instance_id=keep.id,
                requested_context=context_length,
                context_length=keep.context_length,
                reused=True,
            )
        payload: dict[str, Any] = {"model": model, "echo_load_config": True, **options}
        if context_length is not None:
            payload["context_length"] = context_length
        body = self._post_json(
            "/api/v1/models/load",
            payload,
            operation=f"load {model!r}",
            model=model,
            timeout=httpx.Timeout(self.load_timeout, connect=self.connect_timeout),
            context_length=context_length,
            setting="lmstudio.load_timeout",
        )
        instance_id = str(body.get("instance_id") or body.get("model_instance_id") or model)
        applied = to_int((body.get("load_config") or {}).get("context_length"))
        if applied is None:  # older 0.4 builds without echo_load_config: ask the model list
            applied = next(
                (i.context_length for i in self.loaded_instances(model) if i.id == instance_id),
                None,
            )
        result = LoadResult(
            model=model,
            instance_id=instance_id,
            requested_context=context_length,
            context_length=applied,
            load_time_seconds=to_float(body.get("load_time_seconds")),
        )
        if result.reduced:
            log.warning(
                "%s: LM Studio loaded %s at %s tokens, not the %s requested",
                self.base_url,
                model,
                applied,
                context_length,
            )
        return result

    def unload(self, instance_id: str) -> bool:
        """Unload one instance. Returns False when it was not loaded (already gone)."""
        self._require_v1("unload a model")
        try:
            self._post_json(
                "/api/v1/models/unload", {"instance_id": instance_id}, operation="unload"
            )
        except ModelNotFoundError:
            return False
        return True

    def unload_all(self, model: str | None = None) -> list[str]:
        """Unload every instance (of ``model``, or of every model); returns the ids unloaded."""
        done = []
        for inst in self.loaded_instances(model):
            if self.unload(inst.id):
                done.append(inst.id)
        return done

    # -- inference ----------------------------------------------------------------------------

    def chat_completion(
        self,
        model: str,
        messages: Sequence[Message] | str,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repeat_penalty: float | None = None,
        min_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        system_prompt: str | None = None,
        stream: bool = False,
        on_token: Callable[[str], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        timeout: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ChatResult:
        """One chat completion with usage and timing.

        Uses ``/api/v0/chat/completions`` where the host has it (LM Studio's ``stats``: tokens/s,
        time to first token, stop reason), else ``/v1/chat/completions`` with timing measured
        here. ``stream=True`` streams (``on_token`` gets each piece; ``should_stop`` is checked
        between pieces and ends the stream early with ``stop_reason="userStopped"``).
        """
        msgs = messages_payload(messages, system_prompt)
        if max_tokens is not None and max_tokens == 0:
            raise ValidationError("max_tokens", max_tokens, "must be positive, or -1 for no limit")
        payload: dict[str, Any] = {"model": model, "messages": msgs, "stream": stream}
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        sampling, dropped = sampling_body(
            {
                "temperature": temperature,
                "top_p": top_p,
                "top_k": top_k,
                "repeat_penalty": repeat_penalty,
                "min_p": min_p,
                "stop": stop or None,
                "seed": seed,
            },
            CHAT_COMPLETIONS_FIELDS,
        )
        payload.update(sampling)
        self._note_dropped(dropped)
        if stream:
            payload["stream_options"] = {"include_usage": True}
        if extra:
            payload.update(extra)
        limit = timeout or self.timeout
        request_timeout = httpx.Timeout(limit, connect=min(self.connect_timeout, limit))
        path = self._chat_endpoint()
        try:
            if stream:
                return self._stream_chat(
                    path, payload, model, request_timeout, on_token, should_stop
                )
            return self._plain_chat(path, payload, model, request_timeout)
        except UnsupportedEndpointError:
            if path == "/v1/chat/completions":
                raise
            self._chat_path = "/v1/chat/completions"  # a host without /api/v0: fall back once
            return self.chat_completion(
                model,
                msgs,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                repeat_penalty=repeat_penalty,
                min_p=min_p,
                stop=stop,
                seed=seed,
                stream=stream,
                on_token=on_token,
                should_stop=should_stop,
                timeout=timeout,
                extra=extra,
            )

    def _note_dropped(self, names: list[str]) -> None:
        """A warning, once per client and option, for options the chat endpoint does not take."""
        new = [n for n in names if n not in self._dropped_noted]
        if new:
            self._dropped_noted.update(new)
            log.warning("%s: %s", self.base_url, not_sent(new))

    def _chat_endpoint(self) -> str:
        if self._chat_path is None:
            gen = self.api_generation
            self._chat_path = (
                "/v1/chat/completions"
                if gen is ApiGeneration.OPENAI
                else "/api/v0/chat/completions"
            )
        return self._chat_path

    def _plain_chat(
        self, path: str, payload: dict[str, Any], model: str, timeout: httpx.Timeout
    ) -> ChatResult:
        started = time.perf_counter()
        body = self._post_json(path, payload, operation="chat", model=model, timeout=timeout)
        wall = time.perf_counter() - started
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise InferenceError(
                model,
                f"unexpected response without choices: {str(body)[:200]}",
                host_url=self.base_url,
            )
        choice = choices[0]
        message = choice.get("message") or {}
        usage = body.get("usage") or {}
        stats = body.get("stats") or {}
        info = body.get("model_info") or {}
        completion_tokens = to_int(usage.get("completion_tokens"))
        has_stats = bool(stats)
        tps = to_float(stats.get("tokens_per_second"))
        if tps is None and completion_tokens and wall > 0:
            tps = completion_tokens / wall
        return ChatResult(
            model=str(body.get("model") or model),
            content=str(message.get("content") or choice.get("text") or ""),
            prompt_tokens=to_int(usage.get("prompt_tokens")),
            completion_tokens=completion_tokens,
            total_tokens=to_int(usage.get("total_tokens")),
            finish_reason=choice.get("finish_reason"),
            stop_reason=stats.get("stop_reason") or stop_reason_for(choice.get("finish_reason")),
            tokens_per_second=tps,
            time_to_first_token=to_float(stats.get("time_to_first_token")),
            generation_time=to_float(stats.get("generation_time")) if has_stats else wall,
            wall_time=wall,
            loaded_context_length=to_int(info.get("context_length")),
            reasoning=message.get("reasoning_content") or message.get("reasoning"),
            endpoint=path,
            timing_source="server" if has_stats else "client",
            raw=body,
        )

    def _stream_chat(
        self,
        path: str,
        payload: dict[str, Any],
        model: str,
        timeout: httpx.Timeout,
        on_token: Callable[[str], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> ChatResult:
        started = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        reasoning: list[str] = []
        usage: dict[str, Any] = {}
        finish: str | None = None
        answered_model = model
        stopped = False
        done = False
        with self._stream("POST", path, payload, timeout, operation="chat") as (resp, cutoff):
            if resp.status_code != 200 or "text/event-stream" not in resp.headers.get(
                "content-type", ""
            ):
                resp.read()
                body = _json_or_none(resp)
                self._raise_error(resp, body, operation="chat", model=model)
                raise InferenceError(model, "expected an event stream", host_url=self.base_url)
            event = ""
            lines = resp.iter_lines()
            try:
                for line in lines:
                    if line.startswith("event:"):
                        event = line[6:].strip()
                        continue
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    chunk = _loads(data)
                    err = extract_error(chunk)
                    if event == "error" or err is not None:
                        err = err or extract_error({"error": chunk})
                        assert err is not None
                        raise to_exception(
                            err,
                            status=200,
                            host_url=self.base_url,
                            model=model,
                            operation="chat",
                            token_sent=self._token is not None,
                        )
                    if not isinstance(chunk, dict):
                        continue
                    answered_model = str(chunk.get("model") or answered_model)
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        piece = delta.get("content")
                        think = delta.get("reasoning_content") or delta.get("reasoning")
                        if think:
                            reasoning.append(think)
                        if piece:
                            if first is None:
                                first = time.perf_counter() - started
                            parts.append(piece)
                            if on_token is not None:
                                on_token(piece)
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
                    if should_stop is not None and should_stop():
                        stopped = True
                        break
                if done:
                    _read_to_the_end(resp, lines)
            except httpx.TransportError as exc:
                if cutoff.fired or isinstance(exc, httpx.TimeoutException):
                    raise self._timeout_error(
                        timeout, "chat", detail=f"cut off after {len(parts)} pieces"
                    ) from None
                raise InferenceError(
                    model,
                    f"the stream broke off after {len(parts)} pieces ({type(exc).__name__})",
                    host_url=self.base_url,
                ) from None
        if cutoff.fired and not done and not stopped:
            raise self._timeout_error(timeout, "chat", detail=f"cut off after {len(parts)} pieces")
        if not done and not stopped:
            raise InferenceError(
                model,
                f"the stream ended before completion after {len(parts)} pieces (no [DONE])",
                host_url=self.base_url,
            )
        wall = time.perf_counter() - started
        completion_tokens = to_int(usage.get("completion_tokens"))
        gen_time = wall - (first or 0.0)
        return ChatResult(
            model=answered_model,
            content="".join(parts),
            prompt_tokens=to_int(usage.get("prompt_tokens")),
            completion_tokens=completion_tokens,
            total_tokens=to_int(usage.get("total_tokens")),
            finish_reason=finish,
            stop_reason="userStopped" if stopped else stop_reason_for(finish),
            tokens_per_second=completion_tokens / gen_time
            if completion_tokens and gen_time > 0
            else None,
            time_to_first_token=first,
            generation_time=gen_time,
            wall_time=wall,
            reasoning="".join(reasoning) or None,
            endpoint=path,
            timing_source="client",
        )

    # -- HTTP plumbing --------------------------------------------------------------------------

    @property
    def _quick_timeout(self) -> httpx.Timeout:
        # Metadata calls are quick: at most 30 s, and never more than the configured timeout.
        return httpx.Timeout(
            min(self.timeout, 30.0), connect=min(self.connect_timeout, self.timeout)
        )

    def _require_v1(self, operation: str) -> None:
        gen = self.api_generation
        if gen is ApiGeneration.V1:
            return
        if gen is ApiGeneration.V0:
            raise UnsupportedEndpointError(
                self.base_url,
                operation,
                "LM Studio 0.4.0 or newer",
                reason="0.3.x has no HTTP load/unload; use `lms load` or update LM Studio",
            )
        raise UnsupportedEndpointError(
            self.base_url,
            operation,
            "LM Studio's native API",
            reason="this is a plain OpenAI-compatible server, which loads one model at the "
            "context it was started with; restart it with the context you need",
        )

    def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        timeout: httpx.Timeout | None = None,
        operation: str | None = None,
        setting: str = "lmstudio.timeout",
    ) -> httpx.Response:
        limit = timeout or self._http.timeout
        # A read that met a connection the host closed as it was reused (its keep-alive ran out
        # that very moment, or it serves a few requests per connection) is sent once more on a
        # new one: a GET changes nothing, so sending it twice is harmless.
        resend = method == "GET"
        attempt = 0
        while True:
            try:
                return self._http.request(method, path, json=json_body, timeout=limit)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt >= self.max_retries:
                    raise self._connection_error(exc) from None
                time.sleep(min(self.retry_backoff * 2**attempt, 4.0))
                attempt += 1
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                if not resend:
                    raise self._sent_error(
                        exc, limit, operation or f"{method} {path}", setting
                    ) from None
                resend = False
            except httpx.TransportError as exc:
                raise self._sent_error(
                    exc, limit, operation or f"{method} {path}", setting
                ) from None

    @contextlib.contextmanager
    def _stream(
        self, method: str, path: str, payload: Any, timeout: httpx.Timeout, *, operation: str
    ) -> Iterator[tuple[httpx.Response, Cutoff]]:
        """A streamed response, cut off when ``timeout.read`` has passed since it was asked
        for (connecting included); the caller reads it and checks ``cutoff.fired``."""
        request = self._http.build_request(method, path, json=payload, timeout=timeout)
        for attempt in range(self.max_retries + 1):
            started = time.monotonic()
            try:
                resp = self._http.send(request, stream=True)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt >= self.max_retries:
                    raise self._connection_error(exc) from None
                time.sleep(min(self.retry_backoff * 2**attempt, 4.0))
            except httpx.TransportError as exc:
                raise self._sent_error(exc, timeout, operation) from None
        cutoff = Cutoff(resp, (timeout.read or self.timeout) - (time.monotonic() - started))
        try:
            yield resp, cutoff
        finally:
            cutoff.cancel()
            resp.close()

    def _connection_error(self, exc: httpx.TransportError) -> LMStudioConnectionError:
        """Connecting failed: nothing reached the host (the one failure worth a retry)."""
        if isinstance(exc, httpx.TimeoutException):
            return LMStudioConnectionError(
                self.base_url,
                f"no connection within the timeout ({self.connect_timeout:g}s)",
                hint="the server may be down, busy or unreachable; check LM Studio and the "
                "network, or raise lmstudio.connect_timeout",
            )
        text = str(exc) or type(exc).__name__
        if "Name or service not known" in text or "nodename nor servname" in text:
            reason = f"the host name does not resolve ({text})"
        elif "refused" in text.lower():
            reason = "connection refused (nothing listens on that port)"
        else:
            reason = text
        return LMStudioConnectionError(self.base_url, reason)

    def _sent_error(
        self,
        exc: httpx.TransportError,
        timeout: httpx.Timeout,
        operation: str,
        setting: str = "lmstudio.timeout",
    ) -> LMStrixError:
        """A failure after the request went out: the host may be working on it, so it must not
        be sent again. Waiting for a free connection of the pool is the exception (not sent)."""
        if isinstance(exc, httpx.PoolTimeout):
            return self._connection_error(exc)
        if isinstance(exc, httpx.TimeoutException):
            return self._timeout_error(timeout, operation, setting=setting)
        return LMStudioServerError(
            self.base_url,
            f"the connection closed before an answer ({type(exc).__name__}); LM Studio may "
            "have crashed or restarted",
            operation=operation,
        )

    def _timeout_error(
        self,
        timeout: httpx.Timeout,
        operation: str,
        *,
        setting: str = "lmstudio.timeout",
        detail: str | None = None,
    ) -> LMStudioTimeoutError:
        return LMStudioTimeoutError(
            self.base_url,
            timeout.read or self.timeout,
            operation=operation,
            setting=setting,
            detail=detail,
        )

    def _get_json(self, path: str, operation: str) -> dict[str, Any]:
        resp = self._request("GET", path, timeout=self._quick_timeout, operation=operation)
        body = _json_or_none(resp)
        self._raise_error(resp, body, operation=operation)
        if not isinstance(body, dict):
            raise self._not_json(resp)
        return body

    def _post_json(
        self,
        path: str,
        payload: Any,
        *,
        operation: str,
        model: str | None = None,
        timeout: httpx.Timeout | None = None,
        context_length: int | None = None,
        setting: str = "lmstudio.timeout",
    ) -> dict[str, Any]:
        resp = self._request(
            "POST", path, json_body=payload, timeout=timeout, operation=operation, setting=setting
        )
        body = _json_or_none(resp)
        self._raise_error(
            resp, body, operation=operation, model=model, context_length=context_length
        )
        if not isinstance(body, dict):
            raise self._not_json(resp)
        return body

    def _raise_for_auth(self, resp: httpx.Response, body: Any) -> None:
        if resp.status_code in (401, 403):
            self._raise_error(resp, body, operation="authenticate")

    def _raise_error(
        self,
        resp: httpx.Response,
        body: Any,
        *,
        operation: str,
        model: str | None = None,
        context_length: int | None = None,
    ) -> None:
        err = extract_error(body)
        if err is None and resp.status_code < 400:
            return
        if err is None and resp.status_code >= 500:  # the server failed, whatever its body says
            raise LMStudioServerError(
                self.base_url,
                _snippet(resp.text) or resp.reason_phrase or "no body",
                status=resp.status_code,
                model_id=model,
                operation=operation,
            )
        if err is None:
            if body is None:
                raise self._not_json(resp)
            err = extract_error({"error": f"HTTP {resp.status_code}: {str(body)[:200]}"})
            assert err is not None
        raise to_exception(
            err,
            status=resp.status_code,
            host_url=self.base_url,
            model=model,
            operation=operation,
            token_sent=self._token is not None,
            context_length=context_length,
        )

    def _not_json(self, resp: httpx.Response) -> LMStudioConnectionError:
        return LMStudioConnectionError(
            self.base_url,
            f"HTTP {resp.status_code} with a body that is not LM Studio's JSON "
            f"({_snippet(resp.text, 80)!r})",
            hint="check that the URL points at LM Studio's server (default port 1234)",
            request_sent=True,
        )


def _snippet(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


def _read_to_the_end(resp: httpx.Response, lines: Iterator[str]) -> None:
    """Read what follows ``[DONE]`` (the end of the chunked body, usually already received),
    so the connection goes back to the pool instead of being closed: the next request to the
    host then needs no new connection. A host that keeps the stream open after ``[DONE]`` is
    cut off after :data:`DONE_TAIL_SECONDS`; the answer is whole either way."""
    tail = Cutoff(resp, DONE_TAIL_SECONDS)
    try:
        for _ in lines:
            pass
    except httpx.TransportError:
        pass  # only the connection is lost
    finally:
        tail.cancel()


def _json_or_none(resp: httpx.Response) -> Any:
    return _loads(resp.text)


def _loads(data: str) -> Any:
    # Bounded nesting: a body thousands of levels deep is no LM Studio answer, and must not
    # end in RecursionError.
    try:
        return loads_json(data)
    except json.JSONDecodeError:
        return None
