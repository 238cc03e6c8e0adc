"""Simulated models for the context search (pure, no HTTP): the property tests and
``bench/context_search.py`` drive the very search loop the context-test job runs with these.

Two populations, with recall that depends on where each needle sits (see
:mod:`lmstrix.domain.needle`: a probe holds one needle per depth, and passes when every one is
recalled):

- **prompt-rule** models forget a needle once the prompt is longer than that depth's limit,
  whatever size they are loaded at (as the emulator's rule model does with its window);
- **load-size** models recall everything when loaded at or below a depth's limit; loaded above
  it, they lose that depth's needle once the prompt fills more than half the window (quality
  set by the size loaded at, as with rope-scaled models).

Loads fail above ``loadable`` (or are silently reduced to ``autofit_to``). The true limit, the
largest size that works when loaded at that size and filled, is :attr:`SimModel.truth`.

Cost model (seconds; a stated model, not a clock): a load costs ``LOAD_BASE + LOAD_PER_TOKEN *
N``; a use probe costs the prompt tokens the server has not cached yet at ``pp_speed`` plus the
answer's ``GENERATION``. The cache is the longest common prefix with the previous prompt on the
same instance (a load clears it). The prompts sent to one instance are cuts of one layout (its
needles placed for the size it was loaded at, see ``build_needle_prompt``),
so two of them share ``min(M, N)`` tokens; a cut holds the needles placed before its end, and
the end needle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from lmstrix.domain.context_search import LoadOutcome, UseOutcome
from lmstrix.domain.needle import DEFAULT_DEPTHS

LOAD_BASE = 4.0
LOAD_PER_TOKEN = 25e-6
PP_SPEED = 600.0
GENERATION = 2.0


class Population(StrEnum):
    PROMPT_RULE = "prompt-rule"
    LOAD_SIZE = "load-size"


@dataclass
class SimModel:
    """A model with true limits, a probe for :class:`~lmstrix.domain.context_search.SearchLoop`
    and the bookkeeping of the cost model. ``limits`` maps a needle depth to its limit (depths
    not named have no limit of their own)."""

    population: Population
    loadable: int
    limits: Mapping[float, int]
    autofit_to: int | None = None
    depths: tuple[float, ...] = DEFAULT_DEPTHS
    prompt_cache: bool = True
    pp_speed: float = PP_SPEED
    seconds: float = 0.0
    loads: int = 0
    uses: int = 0
    loaded: int | None = None
    cached_size: int | None = None
    calls: list[tuple[str, int, int | None]] = field(default_factory=list)

    def truth(self, upper: int) -> int:
        """The largest size that works loaded at that size and filled (capped at ``upper``)."""
        limit = min([self.loadable, upper, *(self.limits.get(d, upper) for d in self.depths)])
        return limit

    def reset(self) -> None:
        self.seconds, self.loads, self.uses = 0.0, 0, 0
        self.loaded, self.cached_size = None, None
        self.calls = []

    def recalled(self, depth: float, fill: int, context: int) -> bool:
        limit = self.limits.get(depth)
        if limit is None:
            return True
        if self.population is Population.PROMPT_RULE:
            return fill <= limit
        return context <= limit or 2 * fill <= context

    def load(self, size: int) -> LoadOutcome:
        self.calls.append(("load", size, None))
        self.loads += 1
        cost = LOAD_BASE + LOAD_PER_TOKEN * size
        self.seconds += cost
        self.cached_size = None
        if size <= self.loadable:
            self.loaded = size
            return LoadOutcome(True, applied=size, seconds=cost)
        if self.autofit_to is not None:
            self.loaded = self.autofit_to
            return LoadOutcome(True, applied=self.autofit_to, seconds=cost)
        self.loaded = None
        return LoadOutcome(False, error="insufficient system resources", seconds=cost)

    def use(self, size: int, context: int) -> UseOutcome:
        self.calls.append(("use", size, context))
        assert self.loaded == context, "use probe on an instance that is not loaded"
        assert size <= context, "use probe larger than the loaded context"
        self.uses += 1
        shared = 0
        if self.prompt_cache and self.cached_size is not None:
            shared = min(self.cached_size, size)
        cost = (size - shared) / self.pp_speed + GENERATION
        self.seconds += cost
        self.cached_size = size
        held = [d for d in self.depths if d in (0, 1) or d * context < size]
        failed = tuple(d for d in held if not self.recalled(d, size, context))
        return UseOutcome(not failed, prompt_tokens=size, seconds=cost, failed_depths=failed)


def plain_search(
    model: SimModel, lower: int, upper: int, granularity: int | None = None
) -> int | None:
    """The plain search the benchmark compares with: bisection over ``[lower, upper]`` that loads
    at the midpoint and fills it at every step (no cache: every step reloads)."""
    model.reset()
    cache, model.prompt_cache = model.prompt_cache, False
    lo, hi, best = lower, upper, None
    try:
        while lo <= hi and hi - lo + 1 > (granularity or max(256, (best or lower) // 100)):
            mid = (lo + hi) // 2
            outcome = model.load(mid)
            ok = outcome.ok and outcome.applied == mid and model.use(mid, mid).ok
            if ok:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        if best is None and lo <= hi:
            outcome = model.load(lo)
            if outcome.ok and outcome.applied == lo and model.use(lo, lo).ok:
                best = lo
    finally:
        model.prompt_cache = cache
    return best


__all__ = [
    "GENERATION",
    "LOAD_BASE",
    "LOAD_PER_TOKEN",
    "PP_SPEED",
    "Population",
    "SimModel",
    "plain_search",
]
