"""Following a job as it runs: its streamed pieces in order, then its final row.

One reader per call, blocking (:meth:`JobFollower.pieces`) or asyncio (:meth:`JobFollower.apieces`).
The reader takes pieces from the channel in slices that start short and grow while nothing comes
(a model may take minutes to load), and between empty slices looks at the job's status, so a job
that fails before its first piece, or whose channel is gone, is noticed without a marker. Once
the row is final the channel is drained and the rest of the answer, if the pieces did not carry
it all, comes from the row. A reader that owns its job (``stream()``) cancels it when it stops
early: a ``break``, Ctrl-C, an exception, or the loss of its task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from lmstrix.db import JobStatus
from lmstrix.domain.errors import DatabaseUnavailableError
from lmstrix.domain.pieces import Piece, PieceAssembler
from lmstrix.jobs.notify import Notifier
from lmstrix.jobs.pieces import START, PieceChannel, PiecesUnavailableError
from lmstrix.jobs.store import JobStore, JobView
from lmstrix.jobs.wait import (
    FOREVER,
    NoWorkerWatch,
    Served,
    Slices,
    WaiterBeat,
    abandon_owned,
    await_job,
    cancel_owned,
    wait_for_job,
)

log = logging.getLogger(__name__)

FIRST_SLICE = 0.05
MAX_SLICE = 1.0


class JobFollower:
    """Reads one job's pieces; ``final`` is its row once the reading ended."""

    def __init__(
        self,
        store: JobStore,
        notifier: Notifier,
        channel: PieceChannel,
        job_id: str,
        *,
        timeout: float | None,
        owned: bool,
        served: Served | None = None,
    ) -> None:
        """``owned``: the job is this reader's (it beats on the row while it reads, and stopping
        early cancels the job). ``served``: whether a host has a live worker (a job left queued
        where nobody serves gets one warning)."""
        self.store = store
        self.notifier = notifier
        self.channel = channel
        self.job_id = job_id
        self.timeout = timeout
        self.owned = owned
        self.assembler = PieceAssembler()
        self.final: JobView | None = None
        self._cursor = START
        self._channel_ok = True
        self._db_warned = False
        self._started = time.monotonic()
        self._deadline = self._started + (FOREVER if timeout is None else timeout)
        self._beat = WaiterBeat(store, job_id) if owned else None
        self._watch = NoWorkerWatch(served, job_id) if served is not None else None

    @property
    def restarts(self) -> int:
        """How often the job began again after some of its text was handed on."""
        return self.assembler.restarts

    def _remaining(self) -> float | None:
        if self.timeout is None:
            return None
        return max(self._deadline - time.monotonic(), 0.0)

    def _final_wait(self) -> dict[str, Any]:
        """How the wait for the finished row goes: within what is left of the timeout, and
        owned (beating, cancelling on an early end) when the job is this reader's."""
        return {"timeout": self._remaining(), "cancel_on_timeout": self.owned, "owned": self.owned}

    def _ended(self, final: JobView) -> str:
        """Keep the finished row; the answer's tail the pieces did not carry."""
        self.final = final
        return self.assembler.remainder(_response(final))

    def _lost_channel(self, exc: PiecesUnavailableError) -> None:
        log.warning("job %s: %s", self.job_id, exc)
        self._channel_ok = False

    def _is_final(self) -> bool:
        try:
            return JobStatus(self.store.status(self.job_id)).finished
        except DatabaseUnavailableError as exc:  # the wait for the row rides it out
            if not self._db_warned:
                self._db_warned = True
                log.warning("job %s: %s; still following", self.job_id, exc)
            return False

    def _cancel_if_owned(self) -> None:
        if self.owned and self.final is None:
            abandon_owned(self.store, self.notifier, self.job_id)

    def _look_while_empty(self) -> bool:
        """After a slice without pieces: beat, warn if no worker serves the job's host, and say
        whether the row is final."""
        if self._beat is not None:
            self._beat.beat()
        if self._watch is not None and self._watch.due:
            self._watch.look(self.store.get(self.job_id))
        return self._is_final()

    def _take(self, pieces: list[Piece]) -> list[str]:
        out = []
        for piece in pieces:
            text = self.assembler.accept(piece)
            if text:
                out.append(text)
        return out

    # -- blocking -------------------------------------------------------------------------

    def pieces(self) -> Iterator[str]:
        """The answer's text pieces as they come; afterwards ``final`` holds the row.

        Raises ``InferenceTimeoutError`` past the timeout (an owned job is then cancelled)."""
        try:
            yield from self._stream()
            rest = self._ended(
                wait_for_job(self.store, self.notifier, self.job_id, **self._final_wait())
            )
            if rest:
                yield rest
        except BaseException:
            self._cancel_if_owned()
            raise

    def _stream(self) -> Iterator[str]:
        slices = Slices(FIRST_SLICE, MAX_SLICE)
        while self._channel_ok:
            seconds = slices.next(self._deadline)
            if seconds is None:
                return  # the wait for the row raises the timeout
            try:
                got, self._cursor = self.channel.read(self.job_id, self._cursor, seconds)
            except PiecesUnavailableError as exc:
                self._lost_channel(exc)
                return
            yield from self._take(got)
            if self.assembler.final:
                return
            slices.after(bool(got))
            if got:
                if self._beat is not None:
                    self._beat.beat()
            elif self._look_while_empty():
                yield from self._drain()
                return

    def _drain(self) -> Iterator[str]:
        """The pieces still in the channel of a job whose row is final."""
        while True:
            try:
                got, self._cursor = self.channel.read(self.job_id, self._cursor, 0)
            except PiecesUnavailableError as exc:
                self._lost_channel(exc)
                return
            if not got:
                return
            yield from self._take(got)

    # -- asyncio --------------------------------------------------------------------------

    async def apieces(self) -> AsyncIterator[str]:
        """:meth:`pieces` for asyncio callers, holding no thread while it waits."""
        try:
            async for text in self._astream():
                yield text
            rest = self._ended(
                await await_job(self.store, self.notifier, self.job_id, **self._final_wait())
            )
            if rest:
                yield rest
        except BaseException:
            if self.owned and self.final is None:
                # Not in a thread: the task may be being cancelled, and the cancel must happen.
                cancel_owned(self.store, self.job_id)
            raise

    async def _astream(self) -> AsyncIterator[str]:
        slices = Slices(FIRST_SLICE, MAX_SLICE)
        while self._channel_ok:
            seconds = slices.next(self._deadline)
            if seconds is None:
                return
            try:
                got, self._cursor = await self.channel.read_async(
                    self.job_id, self._cursor, seconds
                )
            except PiecesUnavailableError as exc:
                self._lost_channel(exc)
                return
            for text in self._take(got):
                yield text
            if self.assembler.final:
                return
            slices.after(bool(got))
            if got:
                if self._beat is not None and self._beat.due:
                    await asyncio.to_thread(self._beat.beat)
            elif await asyncio.to_thread(self._look_while_empty):
                while True:
                    try:
                        got, self._cursor = await self.channel.read_async(
                            self.job_id, self._cursor, 0
                        )
                    except PiecesUnavailableError as exc:
                        self._lost_channel(exc)
                        return
                    if not got:
                        return
                    for text in self._take(got):
                        yield text


def _response(job: JobView) -> str:
    result = job.result or {}
    response = result.get("response") if isinstance(result, dict) else None
    return response if isinstance(response, str) else ""


__all__ = ["JobFollower"]
