"""LM Studio's routes over :class:`EmulatorState`: model lists, load/unload, inference.

Three API families share the state but differ in shapes and error bodies:
``openai`` (``/v1/*``), ``v0`` (``/api/v0/*``: adds stats, model_info, runtime) and ``v1``
(``/api/v1/*``: native objects and ``{"error":{"type","message"}}`` errors).

Streams relay a streaming backend (the real model) live, piece by piece, so a streamed call sees
the model's real time to first token and a hang-up stops the generation; other backends answer
at once and their pieces are paced by the emulator's clock (see ``Routes._generate``).
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator, Sequence
from contextlib import ExitStack
from typing import Any

from lmstrix.testing import bodies
from lmstrix.testing.backend import (
    Completion,
    ContextOverflow,
    LoadFailure,
    Message,
    StreamingInstance,
    streaming,
)
from lmstrix.testing.protocol import (
    BadRequest,
    JsonReply,
    Reply,
    StreamReply,
    opt_float,
    opt_int,
    opt_str,
    required_str,
    sse_data,
    sse_event,
)
from lmstrix.testing.state import (
    EmulatorState,
    Inference,
    Instance,
    MultipleModelsLoaded,
    NoModelsLoaded,
    Stopped,
    UnknownInstance,
    UnknownModel,
    WrongModelType,
)
from lmstrix.testing.tokenizer import count_tokens, message_text, pieces

JsonObj = dict[str, Any]
# A streamed answer as the stream routes consume it: text pieces, then the Inference.
Generated = Generator[str | Inference, None, None]
_SAMPLING = ("temperature", "top_p", "top_k", "seed")


def bad_request(exc: BadRequest, family: str) -> JsonReply:
    if family == "v1":
        return JsonReply(400, bodies.v1_error(exc.message, code=exc.code, param=exc.param))
    return JsonReply(400, bodies.openai_error(exc.message, param=exc.param, code=exc.code))


class Routes:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    # --- error mapping --------------------------------------------------------------------

    def _lookup_error(self, exc: Exception, family: str) -> JsonReply:
        """Bodies for a request whose ``model`` cannot be served."""
        if isinstance(exc, UnknownModel):
            if family == "v1":  # [inf] v1 chat with an unknown model: 404 model_not_found
                body = bodies.invalid_model_identifier(exc.name, exc.choices)["error"]["message"]
                return JsonReply(404, bodies.v1_error(body, type="model_not_found"))
            if self.state.settings.legacy_not_found:
                return JsonReply(404, bodies.legacy_model_not_found(exc.name, exc.choices))
            return JsonReply(400, bodies.invalid_model_identifier(exc.name, exc.choices))
        if isinstance(exc, NoModelsLoaded):
            if family == "v1":
                return JsonReply(
                    400, bodies.v1_error(bodies.NO_MODELS_LOADED, type="model_not_found")
                )
            return JsonReply(400, bodies.no_models_loaded())
        if isinstance(exc, MultipleModelsLoaded):
            return JsonReply(404, bodies.multiple_models_loaded())
        if isinstance(exc, WrongModelType):
            text = bodies.wrong_model_type(exc.name, exc.wanted)
            if family == "v1":
                return JsonReply(400, bodies.v1_error(text, param="model"))
            return JsonReply(400, bodies.openai_error(text, param="model"))
        raise exc

    def _load_error(self, name: str, exc: LoadFailure, family: str) -> JsonReply:
        if family == "v1":
            return JsonReply(400, bodies.v1_load_failed(name, exc.reason))
        return JsonReply(400, bodies.jit_load_failed(name, exc.reason))

    def _overflow_text(self, exc: ContextOverflow, *, streaming: bool) -> tuple[int, str]:
        wording = self.state.settings.overflow_wording or (3 if streaming else 1)
        return wording, bodies.overflow_text(wording, exc.prompt_tokens, exc.context_length)

    def _overflow_reply(self, exc: ContextOverflow, family: str) -> JsonReply:
        """Non-streaming overflow: 400; wording 1, 2, 4 as a bare string, 3 as its object.
        ``overflow_as="ok_body"`` sends the same body with HTTP 200; ``"empty"`` an HTTP 200
        answer with no content at all."""
        wording, text = self._overflow_text(exc, streaming=False)
        shape = self.state.settings.overflow_as
        status = 200 if shape == "ok_body" else 400
        if shape == "empty":
            return JsonReply(200, bodies.empty_completion())
        if family == "v1":
            return JsonReply(status, bodies.v1_error(text))
        if wording == 3:
            return JsonReply(status, bodies.stream_error(text))
        return JsonReply(status, {"error": text})

    def _overflow_frames(self, exc: ContextOverflow) -> list[bytes]:
        """A streamed overflow: an ``event: error`` frame; with ``overflow_as="ok_body"`` a plain
        data frame carrying the error body; with ``"empty"`` nothing at all (an empty stream)."""
        _, text = self._overflow_text(exc, streaming=True)
        shape = self.state.settings.overflow_as
        if shape == "empty":
            return []
        if shape == "ok_body":
            return [sse_data(bodies.stream_error(text))]
        return [sse_event("error", bodies.stream_error(text))]

    def _serve(
        self, name: str | None, family: str, *, kind: str, ttl: float | None, context: int | None
    ) -> tuple[Instance, bool] | JsonReply:
        """Find or reserve the instance for ``name``; a reply on lookup errors."""
        try:
            inst, pending = self.state.acquire(name, kind=kind, ttl=ttl, context_length=context)
        except (UnknownModel, NoModelsLoaded, MultipleModelsLoaded, WrongModelType) as exc:
            return self._lookup_error(exc, family)
        self.state.counters.model_request(inst.model.key)
        return inst, pending

    def _ready(
        self, inst: Instance, pending: bool, name: str | None, family: str
    ) -> JsonReply | None:
        try:
            if pending:
                self.state.complete_load(inst)
            else:
                self.state.wait_ready(inst)
        except LoadFailure as exc:
            return self._load_error(name or inst.model.key, exc, family)
        return None

    # --- discovery and model lists --------------------------------------------------------

    def greeting(self) -> Reply:
        return JsonReply(200, {"lmstudio": True})

    def openai_models(self) -> Reply:
        state = self.state
        state.expire_idle()
        if state.settings.jit:
            ids = list(state.models)
        else:
            ids = list(dict.fromkeys(i.id for i in state.loaded()))
        data = [{"id": i, "object": "model", "owned_by": "organization_owner"} for i in ids]
        return JsonReply(200, {"data": data, "object": "list"})

    def openai_model(self, model_id: str) -> Reply:
        """[inf] 404 body; LM Studio only logs "Model with identifier 'x' not found"."""
        state = self.state
        known = model_id in state.models or model_id in {i.id for i in state.loaded()}
        if not known:
            message = f"Model with identifier '{model_id}' not found"
            return JsonReply(
                404, bodies.openai_error(message, param="model", code="model_not_found")
            )
        return JsonReply(200, {"id": model_id, "object": "model", "owned_by": "organization_owner"})

    def _v0_entry(self, key: str) -> JsonObj:
        model = self.state.models[key]
        instances = self.state.instances_of(key)
        loaded = [i for i in instances if i.status == "loaded"]
        if loaded:
            return bodies.v0_model(model, "loaded", loaded[0].context_length)
        if instances:
            return bodies.v0_model(model, "loading", instances[0].requested_context)
        return bodies.v0_model(model, "not-loaded", None)

    def v0_models(self) -> Reply:
        self.state.expire_idle()
        with self.state.lock:
            data = [self._v0_entry(key) for key in self.state.models]
        return JsonReply(200, {"object": "list", "data": data})

    def v0_model(self, model_id: str) -> Reply:
        """[inf] unknown id: 404 OpenAI-style ``model_not_found`` object."""
        self.state.expire_idle()
        model = self.state.find_model(model_id)
        if model is None:
            message = f'Model "{model_id}" not found'
            return JsonReply(
                404, bodies.openai_error(message, param="model", code="model_not_found")
            )
        with self.state.lock:
            return JsonReply(200, self._v0_entry(model.key))

    def v1_models(self) -> Reply:
        state = self.state
        state.expire_idle()
        with state.lock:
            models = []
            for key, model in state.models.items():
                instances = [
                    {
                        "id": i.id,
                        "config": bodies.load_config(
                            model, i.context_length or 0, self._with_slots(i.options)
                        ),
                    }
                    for i in state.instances_of(key)
                    if i.status == "loaded"
                ]
                models.append(bodies.v1_model(model, instances))
        return JsonReply(200, {"models": models})

    # --- load / unload --------------------------------------------------------------------

    def _with_slots(self, options: JsonObj) -> JsonObj:
        """Load options with ``parallel`` filled in (the emulator's default where unset)."""
        return {"parallel": self.state.settings.default_parallel, **options}

    def v1_load(self, data: JsonObj) -> Reply:
        key = required_str(data, "model")
        context = opt_int(data, "context_length")
        if context is not None and context <= 0:
            raise BadRequest("'context_length' must be a positive integer", param="context_length")
        options: JsonObj = {
            k: data[k]
            for k in (
                "eval_batch_size",
                "flash_attention",
                "num_experts",
                "offload_kv_cache_to_gpu",
                "parallel",
            )
            if k in data
        }
        state = self.state
        model = state.find_model(key)
        if model is None:
            return JsonReply(404, bodies.v1_model_not_found_for_load(key))
        inst = state.reserve(model, context, jit=False, ttl=None, options=options)
        try:
            state.complete_load(inst)
        except LoadFailure as exc:
            return self._load_error(key, exc, "v1")
        body: JsonObj = {
            "type": bodies.v1_type(model),
            "instance_id": inst.id,
            "load_time_seconds": inst.load_seconds,
            "status": "loaded",
        }
        if data.get("echo_load_config"):
            body["load_config"] = bodies.load_config(
                model, inst.context_length or 0, self._with_slots(options)
            )
        return JsonReply(200, body)

    def v1_unload(self, data: JsonObj) -> Reply:
        instance_id = required_str(data, "instance_id")
        try:
            self.state.unload(instance_id, "api")
        except UnknownInstance:
            return JsonReply(404, bodies.v1_instance_not_found(instance_id))
        return JsonReply(200, {"instance_id": instance_id})

    # --- OpenAI-compatible and v0 inference -----------------------------------------------

    def chat(self, data: JsonObj, family: str, *, text: bool = False) -> Reply:
        """``/v1/chat/completions``, ``/v1/completions`` and their v0 twins."""
        if text:
            prompt = data.get("prompt")
            if isinstance(prompt, list):
                prompt = "".join(p for p in prompt if isinstance(p, str))
            if not isinstance(prompt, str):
                raise BadRequest("'prompt' field is required", param="prompt")
            messages: list[Message] = [{"role": "user", "content": prompt}]
        else:
            raw = data.get("messages")
            if not isinstance(raw, list) or not raw or not all(isinstance(m, dict) for m in raw):
                raise BadRequest("'messages' field is required", param="messages")
            messages = raw
        self.state.counters.receive(messages, data)
        max_tokens = opt_int(data, "max_tokens")
        if max_tokens is None:
            max_tokens = opt_int(data, "max_completion_tokens")
        if max_tokens is not None and max_tokens < 0:
            max_tokens = None
        stop = data.get("stop")
        options: JsonObj = {k: data[k] for k in _SAMPLING if data.get(k) is not None}
        if isinstance(stop, str):
            options["stop"] = [stop]
        elif isinstance(stop, list):
            options["stop"] = [s for s in stop if isinstance(s, str)]
        name = opt_str(data, "model")
        found = self._serve(name, family, kind="llm", ttl=opt_float(data, "ttl"), context=None)
        if isinstance(found, JsonReply):
            return found
        inst, pending = found
        failed = self._ready(inst, pending, name, family)
        if failed is not None:
            return failed
        self.state.interfere(inst)
        stream = bool(data.get("stream"))
        stream_options = data.get("stream_options")
        include_usage = isinstance(stream_options, dict) and bool(
            stream_options.get("include_usage")
        )
        if stream:
            frames = self._openai_stream(
                inst, messages, max_tokens, options, text=text, include_usage=include_usage
            )
            return StreamReply(self._counted(frames, messages))
        with self.state.counters.model_call(), self.state.slots.slot(inst):
            try:
                result = self.state.infer(inst, messages, max_tokens=max_tokens, options=options)
            except ContextOverflow as exc:
                return self._overflow_reply(exc, family)
            except LoadFailure as exc:  # unloaded (TTL, eviction, API) under our feet
                return self._load_error(inst.id, exc, family)
        self.state.counters.answered(messages)
        return JsonReply(200, self._completion_body(inst, result, family, text=text))

    def _model_busy(self, inst: Instance) -> ExitStack:
        """The model call and the slot a streamed answer holds while it is generated. Closed
        (``busy.close()``) as soon as generation ends, before the last frames are sent: a
        client that has them may send its next request at once, and must not find the previous
        one still counted as running."""
        busy = ExitStack()
        busy.enter_context(self.state.counters.model_call())
        busy.enter_context(self.state.slots.slot(inst))
        return busy

    def _counted(self, frames: Iterator[bytes], messages: Sequence[Message]) -> Iterator[bytes]:
        """``frames``, counting the answer once the client has read them all (a client that
        went away mid-stream was never answered)."""
        yield from frames
        self.state.counters.answered(messages)

    def _completion_body(
        self, inst: Instance, result: Inference, family: str, *, text: bool
    ) -> JsonObj:
        c = result.completion
        choice: JsonObj = {"index": 0}
        if text:
            choice.update({"text": c.text, "logprobs": None, "finish_reason": c.finish_reason})
        else:
            choice.update(
                {
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                    "message": {"role": "assistant", "content": c.text},
                }
            )
        body: JsonObj = {
            "id": bodies.completion_id("cmpl-" if text else "chatcmpl-"),
            "object": "text_completion" if text else "chat.completion",
            "created": int(time.time()),
            "model": inst.id,
            "choices": [choice],
            "usage": _usage(result),
        }
        if family == "openai":
            body["stats"] = {}
            body["system_fingerprint"] = inst.id
            return body
        generation = result.generation_seconds
        body["stats"] = {
            "tokens_per_second": c.completion_tokens / generation if generation > 0 else 0.0,
            "time_to_first_token": round(result.prompt_seconds, 3),
            "generation_time": round(generation, 3),
            "stop_reason": result.stop_reason,
        }
        model = inst.model
        body["model_info"] = {
            "arch": model.architecture,
            "quant": model.quantization,
            "format": model.format,
            "context_length": result.context_length,
        }
        body["runtime"] = bodies.runtime(model)
        return body

    def _openai_stream(
        self,
        inst: Instance,
        messages: Sequence[Message],
        max_tokens: int | None,
        options: JsonObj,
        *,
        text: bool,
        include_usage: bool,
    ) -> Iterator[bytes]:
        state = self.state
        with self._model_busy(inst) as busy:
            generated = self._generate(inst, messages, max_tokens, options)
            try:
                try:
                    item = next(generated)
                except ContextOverflow as exc:
                    busy.close()
                    yield from self._overflow_frames(exc)
                    return
                except LoadFailure as exc:
                    busy.close()
                    message = bodies.failed_to_load(inst.id, exc.reason)
                    yield sse_event("error", bodies.stream_error(message))
                    return
                ident = bodies.completion_id("cmpl-" if text else "chatcmpl-")
                head: JsonObj = {
                    "id": ident,
                    "object": "text_completion" if text else "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": inst.id,
                    "system_fingerprint": inst.id,
                }

                def chunk(content: str | None, finish: str | None, first: bool) -> JsonObj:
                    if text:
                        choice: JsonObj = {"index": 0, "text": content or "", "logprobs": None}
                    else:
                        delta: JsonObj = {}
                        if first:
                            delta["role"] = "assistant"
                        if content is not None:
                            delta["content"] = content
                        choice = {"index": 0, "delta": delta, "logprobs": None}
                    choice["finish_reason"] = finish
                    return {**head, "choices": [choice]}

                sent = 0
                while not isinstance(item, Inference):
                    yield sse_data(chunk(item, None, sent == 0))
                    sent += 1
                    if state.settings.truncate_streams:
                        return
                    if state.settings.stall_streams:
                        state.hang()
                    item = next(generated)
                result = item
                busy.close()  # generation is over: the last frames go out with the slot free
                if sent == 0:  # an empty answer still opens the message (role, empty content)
                    yield sse_data(chunk("", None, True))
                    if state.settings.truncate_streams:
                        return
                yield sse_data(chunk(None, result.completion.finish_reason, False))
                if include_usage:
                    yield sse_data({**head, "choices": [], "usage": _usage(result)})
                yield sse_data("[DONE]")
            finally:
                generated.close()

    def _generate(
        self,
        inst: Instance,
        messages: Sequence[Message],
        max_tokens: int | None,
        options: JsonObj,
    ) -> Generated:
        """The answer of a streamed request: its text pieces, then its :class:`Inference`.

        Raises ``ContextOverflow`` / ``LoadFailure`` before the first piece. A backend that can
        stream (the real model) is streamed live: each piece is passed on as the model makes it,
        and closing this generator (the client hung up) closes the backend's stream, which stops
        the generation. Other backends answer at once and the pieces are paced by the emulator's
        clock (simulated: no wait), as before streaming backends existed.
        """
        state = self.state
        live = streaming(inst.backend) if inst.backend is not None else None
        if live is None:
            result = state.infer(inst, messages, max_tokens=max_tokens, options=options, pace=False)
            state.clock.pause(result.prompt_seconds)
            parts = pieces(result.completion.text)
            per_token = result.generation_seconds / max(len(parts), 1)
            for part in parts:
                yield part
                state.clock.pause(per_token)
            yield result
            return
        yield from self._generate_live(inst, messages, max_tokens, options)

    def _generate_live(
        self,
        inst: Instance,
        messages: Sequence[Message],
        max_tokens: int | None,
        options: JsonObj,
    ) -> Generated:
        """:meth:`_generate` for a streaming backend: the instance's lock is held for the whole
        stream (as ``EmulatorState.infer`` holds it for a whole answer), so an unload waits for
        the stream to end instead of freeing the model under it."""
        state = self.state
        state.touch(inst)
        with inst.lock:
            backend = inst.backend
            live: StreamingInstance | None = streaming(backend) if backend is not None else None
            if backend is None or live is None:
                raise LoadFailure("Model was unloaded.")
            context = backend.applied_context
            items = live.stream(
                messages,
                max_tokens=max_tokens,
                temperature=options.get("temperature"),
                top_p=options.get("top_p"),
                top_k=options.get("top_k"),
                stop=options.get("stop"),
                seed=options.get("seed"),
            )
            final: Completion | None = None
            try:
                for item in items:
                    if isinstance(item, Completion):
                        final = item
                        break
                    yield item
                    if state.stopping:  # the emulator stops: end the stream, drop the client
                        raise Stopped()
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()
        if final is None:
            raise RuntimeError(f"the backend of {inst.id} ended its stream without a completion")
        s = state.settings
        prompt_s = (
            final.prompt_seconds
            if final.prompt_seconds is not None
            else final.prompt_tokens / s.prompt_tokens_per_second
        )
        gen_s = (
            final.generation_seconds
            if final.generation_seconds is not None
            else final.completion_tokens / s.tokens_per_second
        )
        state.clock.spend(prompt_s + gen_s, pace=False)  # already taken, for real
        state.touch(inst)
        state.counters.inferred()
        yield Inference(final, prompt_s, gen_s, context)

    # --- embeddings -----------------------------------------------------------------------

    def embeddings(self, data: JsonObj, family: str) -> Reply:
        raw = data.get("input")
        if isinstance(raw, str):
            texts = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
            texts = list(raw)
        else:
            raise BadRequest("'input' field is required", param="input")
        name = opt_str(data, "model")
        found = self._serve(
            name, family, kind="embedding", ttl=opt_float(data, "ttl"), context=None
        )
        if isinstance(found, JsonReply):
            return found
        inst, pending = found
        failed = self._ready(inst, pending, name, family)
        if failed is not None:
            return failed
        with self.state.counters.model_call():
            vectors = self.state.embed(inst, texts)
        tokens = sum(count_tokens(t) for t in texts)
        return JsonReply(
            200,
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "embedding": v, "index": i}
                    for i, v in enumerate(vectors)
                ],
                "model": bodies.variant(inst.model),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    # --- native v1 chat -------------------------------------------------------------------

    def v1_chat(self, data: JsonObj) -> Reply:
        state = self.state
        name = required_str(data, "model")
        messages = self._v1_messages(data)
        state.counters.receive(messages, data)
        max_tokens = opt_int(data, "max_output_tokens")
        if max_tokens is not None and max_tokens < 0:
            max_tokens = None
        context = opt_int(data, "context_length")
        options: JsonObj = {k: data[k] for k in _SAMPLING if data.get(k) is not None}
        store = data.get("store", True) is not False
        found = self._serve(name, "v1", kind="llm", ttl=opt_float(data, "ttl"), context=context)
        if isinstance(found, JsonReply):
            return found
        inst, pending = found
        if data.get("stream"):
            return StreamReply(
                self._counted(
                    self._v1_stream(inst, pending, name, messages, max_tokens, options, store),
                    messages,
                )
            )
        failed = self._ready(inst, pending, name, "v1")
        if failed is not None:
            return failed
        with state.counters.model_call(), state.slots.slot(inst):
            try:
                result = state.infer(inst, messages, max_tokens=max_tokens, options=options)
            except ContextOverflow as exc:
                return self._overflow_reply(exc, "v1")
            except LoadFailure as exc:
                return self._load_error(inst.id, exc, "v1")
        state.counters.answered(messages)
        return JsonReply(200, self._v1_result(inst, pending, messages, result, store))

    def _v1_messages(self, data: JsonObj) -> list[Message]:
        raw = data.get("input")
        if isinstance(raw, str):
            user = raw
        elif isinstance(raw, list):
            texts = []
            for item in raw:
                if isinstance(item, dict) and item.get("type") in ("message", "text"):
                    texts.append(message_text(item.get("content")))
                elif isinstance(item, str):
                    texts.append(item)
            user = "\n".join(texts)
        else:
            raise BadRequest(
                '"input" is required', param="input", code="missing_required_parameter"
            )
        history: list[Message] = []
        previous = opt_str(data, "previous_response_id")
        if previous:
            with self.state.lock:
                stored = self.state.conversations.get(previous)
            if stored is None:  # [inf]
                raise BadRequest(
                    f"Response with id '{previous}' not found", param="previous_response_id"
                )
            history = list(stored)
        system = opt_str(data, "system_prompt")
        if system and not history:
            history.append({"role": "system", "content": system})
        return [*history, {"role": "user", "content": user}]

    def _v1_result(
        self,
        inst: Instance,
        loaded_now: bool,
        messages: Sequence[Message],
        result: Inference | None,
        store: bool,
    ) -> JsonObj:
        body: JsonObj = {"model_instance_id": inst.id}
        if result is None:
            body["output"] = []
            body["stats"] = {"input_tokens": 0, "total_output_tokens": 0}
            return body
        c = result.completion
        body["output"] = [{"type": "message", "content": c.text}]
        generation = result.generation_seconds
        stats: JsonObj = {
            "input_tokens": c.prompt_tokens,
            "total_output_tokens": c.completion_tokens,
            "reasoning_output_tokens": 0,
            "tokens_per_second": c.completion_tokens / generation if generation > 0 else 0.0,
            "time_to_first_token_seconds": round(result.prompt_seconds, 6),
        }
        if loaded_now:
            stats["model_load_time_seconds"] = inst.load_seconds
        body["stats"] = stats
        if store:
            rid = bodies.response_id()
            with self.state.lock:
                self.state.conversations[rid] = [
                    *messages,
                    {"role": "assistant", "content": c.text},
                ]
            body["response_id"] = rid
        return body

    def _v1_stream(
        self,
        inst: Instance,
        pending: bool,
        name: str,
        messages: Sequence[Message],
        max_tokens: int | None,
        options: JsonObj,
        store: bool,
    ) -> Iterator[bytes]:
        state = self.state

        def event(kind: str, **fields: Any) -> bytes:
            return sse_event(kind, {"type": kind, **fields})

        yield event("chat.start", model_instance_id=inst.id)
        try:
            if pending:
                yield event("model_load.start", model_instance_id=inst.id)
                state.complete_load(inst)
                yield event("model_load.progress", model_instance_id=inst.id, progress=1.0)
                yield event(
                    "model_load.end",
                    model_instance_id=inst.id,
                    load_time_seconds=inst.load_seconds,
                )
            else:
                state.wait_ready(inst)
        except LoadFailure as exc:
            message = bodies.failed_to_load(name, exc.reason)
            yield event("error", error={"type": "model_load_failed", "message": message})
            yield event("chat.end", result=self._v1_result(inst, False, messages, None, False))
            return
        with self._model_busy(inst) as busy:
            yield event("prompt_processing.start")
            generated = self._generate(inst, messages, max_tokens, options)
            try:
                try:
                    item = next(generated)
                except ContextOverflow as exc:
                    busy.close()
                    _, text = self._overflow_text(exc, streaming=True)
                    yield event("error", error={"type": "invalid_request", "message": text})
                    yield event(
                        "chat.end", result=self._v1_result(inst, False, messages, None, False)
                    )
                    return
                except LoadFailure as exc:
                    busy.close()
                    message = bodies.failed_to_load(inst.id, exc.reason)
                    yield event("error", error={"type": "model_load_failed", "message": message})
                    yield event(
                        "chat.end", result=self._v1_result(inst, False, messages, None, False)
                    )
                    return
                # The first piece (or the whole answer) is here: the prompt has been processed.
                yield event("prompt_processing.progress", progress=1.0)
                yield event("prompt_processing.end")
                yield event("message.start")
                while not isinstance(item, Inference):
                    yield event("message.delta", content=item)
                    if state.settings.truncate_streams:
                        return
                    if state.settings.stall_streams:
                        state.hang()
                    item = next(generated)
                busy.close()  # generation is over: the last events go out with the slot free
                yield event("message.end")
                yield event(
                    "chat.end", result=self._v1_result(inst, pending, messages, item, store)
                )
            finally:
                generated.close()


def _usage(result: Inference) -> JsonObj:
    c = result.completion
    return {
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens + c.completion_tokens,
    }
