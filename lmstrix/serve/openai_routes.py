"""``/v1/models``, ``/v1/chat/completions`` and ``/v1/completions``, through the queue."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lmstrix.core.gateway import Gateway
from lmstrix.core.inference_result import InferenceResult
from lmstrix.core.inference_stream import AsyncInferenceStream
from lmstrix.domain.errors import LMStrixError, ModelNotFoundError, ValidationError
from lmstrix.domain.model import Model
from lmstrix.domain.openai_api import (
    ChunkMaker,
    CompletionCall,
    chat_completion,
    error_body,
    model_entry,
    parse_chat,
    parse_completion,
    text_completion,
    usage,
)
from lmstrix.serve.errors import describe, error_response
from lmstrix.serve.streaming import EventStream, sse, unless_disconnected


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def json_body(request: Request) -> Mapping[str, Any]:
    try:
        body = json.loads(await request.body() or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError("body", None, f"must be a JSON object ({exc})") from None
    if not isinstance(body, dict):
        raise ValidationError("body", type(body).__name__, "must be a JSON object")
    return body


def _entries(models: list[Model]) -> list[dict[str, Any]]:
    """One entry per model id; a model on several hosts lists them all."""
    by_id: dict[str, list[Model]] = {}
    for m in models:
        by_id.setdefault(m.id, []).append(m)
    out = []
    for model_id, same in sorted(by_id.items()):
        first = same[0]
        seen = min((m.first_seen for m in same if m.first_seen), default=None)
        out.append(
            model_entry(
                model_id,
                int(seen.timestamp()) if seen else 0,
                [m.host for m in same],
                first.tested_context,
                first.declared_context,
                test_status=first.test_status,
                architecture=first.architecture,
                quantization=first.quantization,
                size_bytes=first.size_bytes,
                per_host={
                    m.host: {
                        "tested_context": m.tested_context,
                        "declared_context": m.declared_context,
                        "test_status": m.test_status,
                        "tokens_per_second": m.tokens_per_second,
                    }
                    for m in same
                },
            )
        )
    return out


async def list_models(request: Request) -> Response:
    import asyncio

    models = await asyncio.to_thread(_gateway(request).models)
    return JSONResponse({"object": "list", "data": _entries(models)})


async def get_model(request: Request) -> Response:
    import asyncio

    model_id = request.path_params["model"]
    models = await asyncio.to_thread(_gateway(request).models)
    entries = [e for e in _entries(models) if e["id"] == model_id]
    if not entries:
        return error_response(ModelNotFoundError(model_id))
    return JSONResponse(entries[0])


def _usage_of(result: InferenceResult) -> dict[str, int]:
    return usage(result.prompt_tokens, result.response_tokens)


def _failure(result: InferenceResult) -> Response:
    """A job that ran and failed on the model's side (or was cancelled)."""
    return JSONResponse(
        error_body(result.error or "the job failed", "server_error", code="job_failed"),
        status_code=500,
    )


async def _answer(request: Request, call: CompletionCall, chat: bool) -> Response:
    gateway = _gateway(request)
    if call.stream:
        stream = await gateway.stream(call)
        assert stream.job_id is not None
        job_id = stream.job_id
        maker = ChunkMaker(job_id, call.model, int(time.time()), chat, call.include_usage)
        return EventStream(
            _events(stream, maker), lambda: gateway.abandon(job_id), {"x-lmstrix-job": job_id}
        )
    created = int(time.time())
    result = await unless_disconnected(request.receive, gateway.complete(call), lambda: None)
    if result is None:  # the client went away; its job was cancelled with the wait
        return Response(status_code=499)
    if not result.succeeded:
        return _failure(result)
    build = chat_completion if chat else text_completion
    body = build(
        result.job_id, call.model, created, result.response, result.stop_reason, _usage_of(result)
    )
    return JSONResponse(body, headers={"x-lmstrix-job": result.job_id})


async def _events(stream: AsyncInferenceStream, maker: ChunkMaker) -> AsyncIterator[bytes]:
    first = maker.first()
    if first is not None:
        yield sse(first)
    try:
        async for piece in stream:
            yield sse(maker.piece(piece))
    except LMStrixError as exc:
        yield sse(describe(exc)[1])
        yield sse("[DONE]")
        return
    result = stream.result
    assert result is not None
    if not result.succeeded:
        yield sse(error_body(result.error or "the job failed", "server_error", code="job_failed"))
        yield sse("[DONE]")
        return
    yield sse(maker.last(result.stop_reason))
    use = maker.usage(_usage_of(result))
    if use is not None:
        yield sse(use)
    yield sse("[DONE]")


async def chat_completions(request: Request) -> Response:
    return await _answer(request, parse_chat(await json_body(request)), chat=True)


async def completions(request: Request) -> Response:
    return await _answer(request, parse_completion(await json_body(request)), chat=False)


ROUTES = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", get_model, methods=["GET"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
]
