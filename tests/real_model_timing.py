"""A timing wrapper around the real model's backend, for tests of streaming and cancellation.

Why: "a hang-up stops the generation within a second of the next chunk" is only checkable if
the test knows when the model made each piece and when its stream was closed. Wall-clock bounds
from the test's own point of view also count everything else the machine is doing (two shared
cores), so the tests measure from the next chunk instead, as the requirement is worded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from lmstrix.testing.backend import Completion, EmulatedModel, Message
from lmstrix.testing.real_model import RealModelBackend, RealModelInstance


class TimedInstance:
    """A real instance whose streams record when each piece was made and when they closed."""

    def __init__(self, inner: RealModelInstance) -> None:
        self.inner = inner
        self.piece_times: list[float] = []
        self.closed = threading.Event()
        self.closed_at: float | None = None
        self.finished = False

    @property
    def applied_context(self) -> int:
        return self.inner.applied_context

    @property
    def url(self) -> str:
        return self.inner.url

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        return self.inner.count_prompt_tokens(messages)

    def complete(self, messages: Sequence[Message], **options: Any) -> Completion:
        return self.inner.complete(messages, **options)

    def stream(self, messages: Sequence[Message], **options: Any) -> Iterator[str | Completion]:
        self.closed.clear()
        items = self.inner.stream(messages, **options)
        try:
            for item in items:
                if isinstance(item, str):
                    self.piece_times.append(time.monotonic())
                else:
                    self.finished = True
                yield item
        finally:
            items.close()
            self.closed_at = time.monotonic()
            self.closed.set()

    def first_piece_after(self, moment: float) -> float | None:
        """When the first piece after ``moment`` was made (None: none was)."""
        return next((t for t in self.piece_times if t > moment), None)

    def pieces_after(self, moment: float) -> int:
        return sum(1 for t in self.piece_times if t > moment)

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
