"""A recording wrapper around the real model's backend, for tests of streaming and cancellation.

Why: "a hang-up (or a cancel) stops the generation at the next chunk" is checkable by counting:
how many pieces the model made, whether its answer finished on its own, whether its stream was
closed, and where what the test saw ("hung up", "cancel seen", marked with :meth:`mark`) falls
among the pieces. Tests assert on that order and those counts, never on durations: a wall-clock
bound also counts everything else the machine is doing (two shared cores). Each event keeps its
time, for printing only; speed is measured in bench/.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from lmstrix.testing.backend import Completion, EmulatedModel, Message
from lmstrix.testing.real_model import RealModelBackend, RealModelInstance

PIECE, FINISHED, CLOSED = "piece", "finished", "closed"


class TimedInstance:
    """A real instance that logs, in order, what its latest stream did: each piece the model
    made (``"piece"``), its answer ending on its own (``"finished"``), the stream's close
    (``"closed"``), and the marks a test adds. ``answers`` lists every ``Completion`` it gave."""

    def __init__(self, inner: RealModelInstance) -> None:
        self.inner = inner
        self.events: list[tuple[str, float]] = []  # (what, time.monotonic(): for printing)
        self.closed = threading.Event()
        self.finished = False
        self.answers: list[Completion] = []
        self._lock = threading.Lock()

    @property
    def applied_context(self) -> int:
        return self.inner.applied_context

    @property
    def url(self) -> str:
        return self.inner.url

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        return self.inner.count_prompt_tokens(messages)

    def complete(self, messages: Sequence[Message], **options: Any) -> Completion:
        answer = self.inner.complete(messages, **options)
        self.answers.append(answer)
        return answer

    def stream(self, messages: Sequence[Message], **options: Any) -> Iterator[str | Completion]:
        with self._lock:
            self.events = []
        self.closed.clear()
        self.finished = False
        items = self.inner.stream(messages, **options)
        try:
            for item in items:
                if isinstance(item, str):
                    self._log(PIECE)
                else:
                    self.answers.append(item)
                    self.finished = True
                    self._log(FINISHED)
                yield item
        finally:
            items.close()
            self._log(CLOSED)
            self.closed.set()

    def mark(self, what: str) -> None:
        """Log that the test saw ``what`` happen now, between the pieces made before and after."""
        self._log(what)

    def _log(self, what: str) -> None:
        with self._lock:
            self.events.append((what, time.monotonic()))

    def log(self) -> list[str]:
        """What happened so far in the latest stream, in order."""
        with self._lock:
            return [what for what, _ in self.events]

    @property
    def pieces(self) -> int:
        """Pieces the model made in the latest stream."""
        return self.log().count(PIECE)

    def pieces_after(self, mark: str) -> int:
        """Pieces the model made after ``mark`` was first logged (``ValueError`` if it was not)."""
        log = self.log()
        return log[log.index(mark) + 1 :].count(PIECE)

    def ms_between(self, first: str, then: str) -> float:
        """Milliseconds from the first ``first`` to the first ``then`` event: for printing."""
        with self._lock:
            at = {what: t for what, t in reversed(self.events)}
        return (at[then] - at[first]) * 1000

    def close(self) -> None:
        self.inner.close()


class TimedBackend:
    """Wraps a :class:`RealModelBackend`; ``instances`` lists every instance it loaded."""

    def __init__(self, inner: RealModelBackend) -> None:
        self.inner = inner
        self.instances: list[TimedInstance] = []

    def load(self, model: EmulatedModel, context_length: int) -> TimedInstance:
        instance = TimedInstance(self.inner.load(model, context_length))
        self.instances.append(instance)
        return instance

    def close(self) -> None:
        self.inner.close()


def llama_slot(instance: TimedInstance | RealModelInstance) -> dict[str, Any]:
    """llama.cpp's only slot, as its own ``/slots`` route reports it."""
    slots = httpx.get(f"{instance.url}/slots", timeout=5, trust_env=False).json()
    slot: dict[str, Any] = slots[0]
    return slot


def generating(instance: TimedInstance | RealModelInstance) -> bool:
    """Whether llama.cpp's only slot is generating right now."""
    return bool(llama_slot(instance)["is_processing"])


def tokens_in_slot(instance: TimedInstance | RealModelInstance) -> int:
    """Tokens llama.cpp holds in its slot: the last request's prompt and the tokens it generated
    for it (the last one sampled but not fed back), 0 before any request. Read when the slot is
    idle, minus the prompt, it says how far the last generation went."""
    return int(llama_slot(instance).get("n_prompt_tokens") or 0)
