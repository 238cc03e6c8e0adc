"""Parallel slots of the emulated instances: how many requests one loaded instance serves at
once, and how fast each goes when several share it.

Every loaded instance has ``parallel`` slots (the load's ``parallel`` option, else
``EmulatorSettings.default_parallel``; LM Studio 0.4 loads with 4). A request takes a slot for
its whole answer; more concurrent requests than slots wait at the emulator for one to free, as
they do on the real server. Generation speed follows a configurable curve: with ``c`` requests
on one instance each generates at

    tokens_per_second * (1 + parallel_efficiency * (c - 1)) / c

so the instance's total throughput grows linearly with ``c`` at efficiency 1 (each request as
fast as alone), and stays flat at 0 (one request's speed, shared). The counters record the most
requests that ran at once on each instance.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from lmstrix.testing.counters import CounterBox
from lmstrix.testing.settings import EmulatorSettings

if TYPE_CHECKING:
    from lmstrix.testing.state import Instance


def per_request_speed(base: float, concurrency: int, efficiency: float) -> float:
    """Tokens per second of one request when ``concurrency`` share an instance."""
    c = max(concurrency, 1)
    return base * (1.0 + efficiency * (c - 1)) / c


def slots_of(inst: Instance, settings: EmulatorSettings) -> int:
    """The instance's parallel slots (its load's ``parallel``, else the default)."""
    value = inst.options.get("parallel")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return max(settings.default_parallel, 1)


class SlotGate:
    """The slots of every instance: a request holds one (:meth:`slot`) while it is answered."""

    def __init__(self, settings: EmulatorSettings, counters: CounterBox) -> None:
        self.settings = settings
        self.counters = counters
        self._cond = threading.Condition()
        self._busy: dict[int, int] = {}  # id(instance) -> requests running on it

    def running(self, inst: Instance) -> int:
        with self._cond:
            return self._busy.get(id(inst), 0)

    def speed(self, inst: Instance) -> float:
        """Tokens per second of one request on ``inst`` now."""
        s = self.settings
        return per_request_speed(s.tokens_per_second, self.running(inst), s.parallel_efficiency)

    @contextmanager
    def slot(self, inst: Instance) -> Iterator[None]:
        """Hold one of ``inst``'s slots, waiting for one when all are taken."""
        key, limit = id(inst), slots_of(inst, self.settings)
        with self._cond:
            self._cond.wait_for(lambda: self._busy.get(key, 0) < limit)
            self._busy[key] = running = self._busy.get(key, 0) + 1
        self.counters.concurrency(inst.id, running)
        try:
            yield
        finally:
            with self._cond:
                self._busy[key] -= 1
                if not self._busy[key]:
                    del self._busy[key]
                self._cond.notify_all()

    def unloading(self, inst: Instance) -> None:
        """``inst`` leaves the table: counted when requests still run on it."""
        if self.running(inst):
            self.counters.unloaded_busy()
