"""``/v1/files`` and ``/v1/batches``: OpenAI's files and batches API, over the batch layer.

An upload is a ``multipart/form-data`` body with ``purpose=batch`` and a ``file`` part. The body
is read up to ``[serve] max_file_bytes`` (plus a little for the form's own lines); a larger one
is read to its end without being kept, and refused with 413, so the client sees the answer
instead of a broken connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from lmstrix.core.batch_files import BatchFiles
from lmstrix.core.gateway import Gateway
from lmstrix.domain.errors import ValidationError
from lmstrix.domain.openai_files import FileTooLarge, page_limit
from lmstrix.serve.openai_routes import json_body

FORM_SLACK = 16 * 1024  # the multipart boundaries, part headers and the purpose field


def _files(request: Request) -> BatchFiles:
    gateway: Gateway = request.app.state.gateway
    return gateway.files


async def _run(request: Request, method: Any, *args: Any) -> Response:
    return JSONResponse(await asyncio.to_thread(method, *args))


async def _bounded_body(request: Request, bound: int) -> bytes:
    """The body, or ``FileTooLarge`` once it passes ``bound`` (the rest is read, not kept)."""
    body = bytearray()
    too_large = False
    async for chunk in request.stream():
        if too_large or len(body) + len(chunk) > bound:
            too_large = True
            continue
        body.extend(chunk)
    if too_large:
        raise FileTooLarge(None, bound - FORM_SLACK)
    return bytes(body)


async def _once(data: bytes) -> AsyncGenerator[bytes, None]:
    yield data


async def upload(request: Request) -> Response:
    files = _files(request)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ValidationError(
            "file", None, "send the file as multipart/form-data with purpose=batch"
        )
    body = await _bounded_body(request, files.max_file_bytes + FORM_SLACK)
    parser = MultiPartParser(request.headers, _once(body), max_files=1, max_fields=4)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ValidationError("file", None, f"the form could not be read ({exc.message})") from None
    part = form.get("file")
    if not isinstance(part, UploadFile):
        raise ValidationError("file", None, "is missing: send the batch file as the 'file' part")
    try:
        content = await part.read()
    finally:
        await form.close()
    return await _run(request, files.upload, form.get("purpose"), part.filename, content)


async def get_file(request: Request) -> Response:
    return await _run(request, _files(request).file, request.path_params["file_id"])


async def list_files(request: Request) -> Response:
    q = request.query_params
    limit = page_limit(q.get("limit"), default=100)
    return await _run(request, _files(request).files, limit, q.get("after"), q.get("purpose"))


async def file_content(request: Request) -> Response:
    pieces = await asyncio.to_thread(_files(request).content, request.path_params["file_id"])

    async def send(it: Iterator[bytes]) -> AsyncIterator[bytes]:
        done = object()
        while (piece := await asyncio.to_thread(next, it, done)) is not done:
            assert isinstance(piece, bytes)
            yield piece

    return StreamingResponse(send(pieces), media_type="application/jsonl")


async def create_batch(request: Request) -> Response:
    return await _run(request, _files(request).create_batch, await json_body(request))


async def get_batch(request: Request) -> Response:
    return await _run(request, _files(request).batch, request.path_params["batch_id"])


async def list_batches(request: Request) -> Response:
    q = request.query_params
    return await _run(request, _files(request).batches, page_limit(q.get("limit")), q.get("after"))


async def cancel_batch(request: Request) -> Response:
    return await _run(request, _files(request).cancel, request.path_params["batch_id"])


ROUTES = [
    Route("/v1/files", upload, methods=["POST"]),
    Route("/v1/files", list_files, methods=["GET"]),
    Route("/v1/files/{file_id}", get_file, methods=["GET"]),
    Route("/v1/files/{file_id}/content", file_content, methods=["GET"]),
    Route("/v1/batches", create_batch, methods=["POST"]),
    Route("/v1/batches", list_batches, methods=["GET"]),
    Route("/v1/batches/{batch_id}", get_batch, methods=["GET"]),
    Route("/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
]
