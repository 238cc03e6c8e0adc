"""Waiting on a condition with a deadline: the only way tests wait for something to happen."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(
    condition: Callable[[], object], timeout: float = 60.0, what: str = "", interval: float = 0.01
) -> None:
    """Return as soon as ``condition()`` is true; fail the test after ``timeout`` seconds.

    The deadline only bounds a failure: a passing test returns at the first true look, so a
    generous default costs nothing and keeps a busy machine from failing a correct test.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)
