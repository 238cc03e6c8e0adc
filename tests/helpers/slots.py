"""What every host must see from lmstrix's workers, with parallel slots in play."""

from __future__ import annotations

from lmstrix.testing.counters import Counters


def assert_host_discipline(counters: Counters, slots: int = 4) -> None:
    """Never two loads at once, never an instance unloaded (swapped) under a running request,
    and at most ``slots`` requests at once on any instance."""
    assert counters.max_loads_in_flight <= 1, "two loads at once"
    assert counters.unloads_while_busy == 0, "an instance unloaded while requests ran on it"
    assert all(n <= slots for n in counters.max_concurrency.values()), counters.max_concurrency
