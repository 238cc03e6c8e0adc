"""Streamed answers: ``for piece in manager.stream(...)`` and its asyncio twin.

The job is queued when the stream is made, so ``job_id`` is known before the first piece.
Pieces arrive as the host produces them; when the iteration ends, ``result`` holds the usual
result dict (the whole answer is in the job's row too). Leaving early cancels the job: a
``break`` followed by the stream's end of life, :meth:`InferenceStream.close`, a ``with`` block,
Ctrl-C, or an exception in the loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from lmstrix.core.inference_result import InferenceResult
from lmstrix.jobs.follow import JobFollower
from lmstrix.jobs.store import JobView

OnFinal = Callable[[JobView], None]


class InferenceStream:
    """An iterator of the answer's text pieces; ``result`` is set once it is exhausted."""

    def __init__(self, follower: JobFollower, on_final: OnFinal | None = None) -> None:
        self.job_id = follower.job_id
        self.result: InferenceResult | None = None
        self._follower = follower
        self._on_final = on_final
        self._pieces: Iterator[str] = follower.pieces()

    @property
    def restarts(self) -> int:
        """How often the job began again (its worker died) after some text was handed on."""
        return self._follower.restarts

    def __iter__(self) -> InferenceStream:
        return self

    def __next__(self) -> str:
        try:
            return next(self._pieces)
        except StopIteration:
            self.result = _finish(self._follower, self._on_final)
            raise

    def close(self) -> None:
        """Stop reading; a job that is not over yet is cancelled."""
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> InferenceStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "done" if self.result is not None else "streaming"
        return f"<InferenceStream job {self.job_id} {state}>"


class AsyncInferenceStream:
    """The asyncio twin of :class:`InferenceStream`: ``async for piece in manager.stream(...)``.

    The job is queued on the first ``__anext__``, or at once with
    ``stream = await manager.stream(...)``, which also makes ``job_id`` known before any piece.
    """

    def __init__(
        self, start: Callable[[], Awaitable[JobFollower]], on_final: OnFinal | None = None
    ) -> None:
        self.job_id: str | None = None
        self.result: InferenceResult | None = None
        self._start = start
        self._on_final = on_final
        self._follower: JobFollower | None = None
        self._pieces: AsyncIterator[str] | None = None

    async def started(self) -> AsyncInferenceStream:
        """Queue the job (once) and return the stream, with ``job_id`` set."""
        if self._follower is None:
            self._follower = await self._start()
            self.job_id = self._follower.job_id
            self._pieces = self._follower.apieces()
        return self

    def __await__(self) -> Any:
        return self.started().__await__()

    @property
    def restarts(self) -> int:
        return 0 if self._follower is None else self._follower.restarts

    def __aiter__(self) -> AsyncInferenceStream:
        return self

    async def __anext__(self) -> str:
        await self.started()
        assert self._pieces is not None and self._follower is not None
        try:
            return await self._pieces.__anext__()
        except StopAsyncIteration:
            self.result = _finish(self._follower, self._on_final)
            raise

    async def aclose(self) -> None:
        """Stop reading; a job that is not over yet is cancelled."""
        aclose = getattr(self._pieces, "aclose", None)
        if aclose is not None:
            await aclose()

    async def __aenter__(self) -> AsyncInferenceStream:
        return await self.started()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "done" if self.result is not None else "streaming"
        return f"<AsyncInferenceStream job {self.job_id} {state}>"


def _finish(follower: JobFollower, on_final: OnFinal | None) -> InferenceResult:
    final = follower.final
    assert final is not None, "the pieces end only once the row is final"
    if on_final is not None:
        on_final(final)
    return InferenceResult.from_job(final)


__all__ = ["AsyncInferenceStream", "InferenceStream"]
