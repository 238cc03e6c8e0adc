"""The emulator's clock: simulated by default so tests never sleep, real for demos.

Simulated: model work (loads, prompt processing, generation) advances ``now()`` by its computed
duration instantly, and tests move time with :meth:`Clock.advance` (TTL expiry). Real: work sleeps
``duration * time_scale`` and ``now()`` follows the monotonic clock (plus any ``advance``).
Either way ``spent`` totals the simulated seconds of model work, for benchmarks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from lmstrix.testing.settings import EmulatorSettings


class Clock:
    def __init__(
        self, settings: EmulatorSettings, sleep: Callable[[float], object] = time.sleep
    ) -> None:
        self._settings = settings
        self._sleep = sleep
        self._lock = threading.Lock()
        self._origin = time.monotonic()
        self._offset = 0.0
        self._simulated = 0.0  # time advanced by simulated work
        self.spent = 0.0

    @property
    def real(self) -> bool:
        return self._settings.clock == "real"

    def now(self) -> float:
        with self._lock:
            if self.real:
                return time.monotonic() + self._offset
            return self._origin + self._simulated + self._offset

    def advance(self, seconds: float) -> None:
        """Move time forward (TTL tests) without counting it as model work."""
        with self._lock:
            self._offset += seconds

    def spend(self, seconds: float, *, pace: bool = True) -> None:
        """Account ``seconds`` of model work; in real mode also sleep it if ``pace``."""
        seconds = max(seconds, 0.0)
        with self._lock:
            self.spent += seconds
            if not self.real:
                self._simulated += seconds
        if pace and self.real:
            self.pause(seconds)

    def pause(self, seconds: float) -> None:
        """Sleep in real mode only (pacing of streamed tokens already accounted)."""
        if self.real and seconds > 0:
            self._sleep(seconds * self._settings.time_scale)
