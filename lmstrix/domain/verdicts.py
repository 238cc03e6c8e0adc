"""What a context test writes to the model's registry row: pure functions from what the search
found (and what the registry knew before) to column values.

Why pure and apart: the verdict rules are where a wrong registry entry would come from (a size
claimed that just failed, a larger size forgotten because a later test used a lower cap, speed
figures of another size), so they are unit-tested without a database, a worker or a host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmstrix.domain.clock import utcnow
from lmstrix.domain.context_search import SearchResult, SearchState, StopReason
from lmstrix.domain.enums import TestStatus


@dataclass(frozen=True, slots=True)
class Speed:
    """What a passing use probe measured (the registry keeps it for the tested size)."""

    time_to_first_token: float | None
    tokens_per_second: float | None


@dataclass(frozen=True, slots=True)
class Known:
    """The registry's test columns of one model before a test (what a verdict builds on)."""

    row_id: int
    tested: int | None = None
    good: int | None = None
    bad: int | None = None
    status: str = TestStatus.UNTESTED.value
    error: str | None = None
    ttft: float | None = None
    tps: float | None = None

    @property
    def settled_status(self) -> str:
        """The status to go back to when a test stops without a verdict."""
        if self.status != TestStatus.TESTING.value:
            return self.status
        return TestStatus.TESTED.value if self.tested else TestStatus.UNTESTED.value


def search_verdict(
    res: SearchResult, known: Known, speed: Speed | None, *, reset: bool = False
) -> dict[str, Any]:
    """The registry columns after a finished search.

    ``tested_context`` and the last known good are the verified size; the last known bad is the
    smallest failure. A search that stopped at the cap keeps a larger size found earlier with a
    higher threshold (a lower cap confirms less, it does not disprove more). ``speed`` is what
    the use probe at the verified size measured in this run; without one (the size was known
    from before) the stored figures stay.
    """
    prev = Known(known.row_id) if reset else known
    good, bad = res.optimal, res.failure_point
    if res.stop_reason is StopReason.AT_CAP and good is not None:
        if prev.good is not None and prev.good > good:
            good = prev.good
        if prev.bad is not None and good is not None and prev.bad > good:
            bad = prev.bad
    ttft, tps = (
        (speed.time_to_first_token, speed.tokens_per_second)
        if speed is not None
        else (prev.ttft, prev.tps)
        if good is not None and good == prev.good
        else (None, None)
    )
    error = None
    if good is None:
        if res.iterations == 0 and bad is not None and bad <= res.lower:
            error = (
                f"already failed at {bad}, at or below the smallest size tested ({res.lower}); "
                "test again with reset to forget earlier results"
            )
        elif res.stop_reason is StopReason.NO_WORKING_SIZE:
            error = f"no context size works: {res.lower} already fails"
        else:
            error = f"no working size found within {res.iterations} probes"
    return {
        "tested_context": good,
        "last_known_good_context": good,
        "last_known_bad_context": bad,
        "test_status": (TestStatus.TESTED if good is not None else TestStatus.FAILED).value,
        "test_error": error,
        "time_to_first_token": ttft,
        "tokens_per_second": tps,
        "last_tested_at": utcnow(),
    }


def single_verdict(
    size: int, passed: bool, error: str | None, known: Known, speed: Speed | None
) -> dict[str, Any]:
    """The registry columns after testing exactly one size.

    A pass raises the tested size if it is larger (and clears a known bad size at or below
    it: the model just worked there). A failure lowers the known bad size, and withdraws a tested
    size at or above it: the registry must never claim a size that just failed.
    """
    tested, good, bad = known.tested, known.good, known.bad
    ttft, tps = known.ttft, known.tps
    if passed:
        if tested is None or size >= tested:
            tested = size
            if speed is not None:
                ttft, tps = speed.time_to_first_token, speed.tokens_per_second
        good = max(good or 0, size)
        if bad is not None and bad <= size:
            bad = None
    else:
        bad = size if bad is None else min(bad, size)
        if tested is not None and tested >= size:
            tested, ttft, tps = None, None, None
        if good is not None and good >= size:
            good = None
    return {
        "tested_context": tested,
        "last_known_good_context": good,
        "last_known_bad_context": bad,
        "test_status": (TestStatus.TESTED if tested else TestStatus.FAILED).value,
        "test_error": None if passed else f"failed at {size}: {error or 'probe failed'}",
        "time_to_first_token": ttft,
        "tokens_per_second": tps,
        "last_tested_at": utcnow(),
    }


def partial_columns(
    state: SearchState, known: Known, *, error: str | None, reset: bool = False
) -> dict[str, Any]:
    """What a stopped (cancelled or failed) test leaves: the facts it learnt merged into the
    last known good and bad sizes, so the next run resumes from them, and the status it found.
    ``tested_context`` stays: only a finished test sets it."""
    good = state.use_good
    bad = state.bound if state.bound <= state.config.upper else None
    if not reset:
        if known.good is not None and (good is None or known.good > good):
            good = known.good
        if known.bad is not None and (bad is None or known.bad < bad):
            bad = known.bad
        if good is not None and bad is not None and good >= bad:
            good = state.use_good  # this run failed below the old good size
    columns: dict[str, Any] = {
        "test_status": known.settled_status,
        "last_known_good_context": good,
        "last_known_bad_context": bad,
    }
    if error is not None:
        columns["test_error"] = error
    return columns


#: The registry columns a job's result repeats (the rest are timestamps and speed figures).
REGISTRY_KEYS = (
    "tested_context",
    "last_known_good_context",
    "last_known_bad_context",
    "test_status",
    "test_error",
)


__all__ = [
    "REGISTRY_KEYS",
    "Known",
    "Speed",
    "partial_columns",
    "search_verdict",
    "single_verdict",
]
