"""Cutting a streamed answer off when its time is up, even while a read waits for the next piece.

httpx's read timeout bounds each wait for data, not a whole response: a stream that keeps
trickling, or stalls just before its time is up, could outlast ``lmstudio.timeout`` by far.
A :class:`Cutoff` shuts the response's socket down at its deadline, which makes a pending read
return at once (the connection is then discarded, never reused). One watchdog thread per process
serves every cut-off: arming one costs a heap push under a lock, not a thread, because the
worker arms one per job.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time

import httpx


class Cutoff:
    """The deadline of one streamed response; ``fired`` says whether it cut the stream off."""

    def __init__(self, resp: httpx.Response, seconds: float) -> None:
        self.fired = False
        self.cancelled = False
        stream = resp.extensions.get("network_stream")
        self._sock: socket.socket | None = (
            stream.get_extra_info("socket") if stream is not None else None
        )
        # Without a socket to reach (another transport) the read timeout bounds each gap.
        if self._sock is not None:
            _watchdog().arm(self, time.monotonic() + max(seconds, 0.0))

    def fire(self) -> None:
        if self.cancelled:
            return
        self.fired = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        """The stream ended first: nothing to cut off."""
        if not self.cancelled:
            self.cancelled = True
            _watchdog().cancelled()


class _Watchdog:
    """One daemon thread firing cut-offs at their deadlines, earliest first."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Cutoff]] = []
        self._order = itertools.count()
        self._stale = 0  # cancelled entries still in the heap
        self._thread = threading.Thread(target=self._loop, name="lmstrix-cutoff", daemon=True)
        self._thread.start()

    def arm(self, cutoff: Cutoff, at: float) -> None:
        with self._cond:
            if self._stale > 1024 and self._stale * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
                self._stale = 0
            heapq.heappush(self._heap, (at, next(self._order), cutoff))
            if self._heap[0][2] is cutoff:  # the earliest now: the thread must wake sooner
                self._cond.notify()

    def cancelled(self) -> None:
        with self._cond:
            self._stale += 1

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                at, _, cutoff = self._heap[0]
                left = at - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(self._heap)
                if cutoff.cancelled:
                    self._stale -= 1
                    continue
            cutoff.fire()


_lock = threading.Lock()
_instance: tuple[int, _Watchdog] | None = None


def _watchdog() -> _Watchdog:
    """The process's watchdog (threads do not survive a fork: a child starts its own)."""
    global _instance
    with _lock:
        if _instance is None or _instance[0] != os.getpid():
            _instance = (os.getpid(), _Watchdog())
        return _instance[1]
