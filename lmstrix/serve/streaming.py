"""Server-sent events for one caller's job, and noticing that the caller went away.

A client that disconnects cancels its job: the response watches the connection for
``http.disconnect`` while it sends, and on it stops the stream (whose reader cancels the job it
owns) and asks the gateway to cancel the job as well, in case the stream had not started
reading yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

T = TypeVar("T")


def sse(data: dict[str, Any] | str) -> bytes:
    """One SSE event, as OpenAI frames them (``data: ...`` and a blank line)."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


async def disconnected(receive: Receive) -> None:
    """Return once the client has gone (the request body is already read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(
    receive: Receive, work: Awaitable[T], on_gone: Callable[[], None]
) -> T | None:
    """``await work``, or, if the client goes first, cancel it, call ``on_gone`` and return None."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(disconnected(receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    on_gone()
    return None


class EventStream(Response):
    """A response sending ``events`` as SSE; a client that goes away stops it and ``on_gone``
    runs (it cancels the job)."""

    def __init__(
        self,
        events: AsyncIterator[bytes],
        on_gone: Callable[[], None],
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=200)
        self.events = events
        self.on_gone = on_gone
        self.extra_headers = headers or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
            **self.extra_headers,
        }
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            }
        )
        pump = asyncio.ensure_future(self._pump(send))
        watch = asyncio.ensure_future(disconnected(receive))
        try:
            await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
        if pump.done():
            if pump.exception() is None:
                return
            self.on_gone()  # sending failed: the client is gone
            return
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump
        self.on_gone()

    async def _pump(self, send: Send) -> None:
        try:
            async for event in self.events:
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await aclose()
