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

import math
from collections.abc import Callable, Mapping
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


def revealing_fill(context: int) -> int:
    """The smallest prompt that makes a load-size instance loaded at ``context`` miss a needle
    whose limit is below ``context``: one token over half the window (:meth:`SimModel.recalled`
    passes while ``2 * fill <= context``). At that fill the start and the middle needle are both
    in the prompt, so it reveals every depth's limit."""
    return context // 2 + 1


def oracle_search(
    model: SimModel,
    lower: int,
    upper: int,
    share_below: Callable[[int], float],
    *,
    exhaustive: bool = False,
) -> int | None:
    """The cheapest sound load-size search that knows the population: a bound on what any sound
    search can be expected to cost, not a search lmstrix could run.

    It knows the rule (:func:`revealing_fill`), the loadable limit (for free: no load is spent
    finding it) and the population's prior, ``share_below(n)``: the share of such models whose
    usable limit is below ``n``. What it does not know is this model's usable limit, and a probe
    can only tell it whether that limit is at least N: load at N and send the smallest prompt
    that would reveal a failure there, or a full one (which also proves N). So it plans a
    decision tree over ``[lower, min(upper, loadable)]`` cut into cells one granularity
    (``max(256, 1 %)``) wide, each probe at the size and fill that minimise the expected cost of
    the rest (a bisection weighted by the prior and the cost model). The answer then gets one
    full prompt at its own load (the soundness rule), unless it already had one; when the last
    probe passed there, that prompt extends the cached one. Soundness does not depend on the
    prior: the prior only orders the probes.

    The plan is a dynamic program over the intervals of cells. By default each interval's best
    probe is looked for between the best probes of the two intervals one cell shorter (Knuth's
    bound), which is quadratic but not always exact here; ``exhaustive`` tries every probe
    (cubic: seconds per model at 300 cells) for the exact least expected cost."""
    if model.population is not Population.LOAD_SIZE:
        raise ValueError("the oracle knows the load-size rule only")
    model.reset()
    cells = _cells(lower, min(upper, model.loadable))
    plan = _plan(cells, share_below, model.pp_speed, exhaustive=exhaustive)
    i, j, proven = 0, len(cells) - 1, False
    while i < j:
        m, full = plan[proven][i][j]
        size = cells[m]
        model.load(size)
        if model.use(size if full else revealing_fill(size), size).ok:
            i, proven = m, full
        else:
            j = m - 1
    found = cells[i]
    if proven:
        return found
    if model.loaded != found:
        model.load(found)
    return found if model.use(found, found).ok else None


def _cells(lower: int, upper: int) -> list[int]:
    """Sizes one granularity apart from ``lower`` up to ``upper``: a limit in ``[cells[k],
    cells[k + 1])`` is found within the granularity by answering ``cells[k]``."""
    cells = [lower]
    while cells[-1] + max(256, cells[-1] // 100) < upper:
        cells.append(cells[-1] + max(256, cells[-1] // 100))
    if upper > lower:
        cells.append(upper)
    return cells


def _plan(
    cells: list[int], share_below: Callable[[int], float], pp_speed: float, *, exhaustive: bool
) -> list[list[list[tuple[int, bool]]]]:
    """The decision tree of :func:`oracle_search`, by dynamic programming over the intervals:
    ``plan[proven][i][j]`` is the probe (cell, full prompt?) with the least expected cost when
    the limit lies in cells ``i..j`` and ``cells[i]`` has (or has not) passed a full prompt."""
    n = len(cells)
    bounds = [share_below(c) for c in cells[1:]]
    # a floor on every cell's weight, so that sizes the prior rules out are bisected if the
    # prior is wrong, not scanned one by one
    weight = [b - a + 1e-9 for a, b in zip([0.0, *bounds], [*bounds, 1.0], strict=True)]
    below = [0.0]
    for w in weight:
        below.append(below[-1] + w)

    def load(size: int) -> float:
        return LOAD_BASE + LOAD_PER_TOKEN * size

    half = [load(c) + revealing_fill(c) / pp_speed + GENERATION for c in cells]
    full = [load(c) + c / pp_speed + GENERATION for c in cells]
    rest = [(c - revealing_fill(c)) / pp_speed + GENERATION for c in cells]
    # cost[proven][i][j] = by_end[proven][j][i]: the expected cost of the cells i..j times
    # their weight; ending on a cell that has not passed a full prompt costs a load and one
    cost = [[[0.0] * n for _ in range(n)] for _ in range(2)]
    by_end = [[[0.0] * n for _ in range(n)] for _ in range(2)]
    plan = [[[(i, False)] * n for i in range(n)] for _ in range(2)]
    for i in range(n):
        cost[0][i][i] = by_end[0][i][i] = weight[i] * full[i]
    for span in range(1, n):
        for i in range(n - span):
            j = i + span
            mass = below[j + 1] - below[i]
            for proven in (0, 1):
                # a probe at m leaves cells m..j if it passes, i..m-1 if it fails; unless
                # exhaustive, it is looked for between the best probes of the two intervals one
                # cell shorter (Knuth's bound: quadratic instead of cubic, see oracle_search)
                first, last = i + 1, j
                if not exhaustive and span > 1:
                    first = max(first, plan[proven][i][j - 1][0])
                    last = max(first, plan[proven][i + 1][j][0])
                best, choice = math.inf, (j, False)
                left = cost[proven][i]
                for m in range(first, last + 1):
                    if m < j:
                        up_half, up_full = by_end[0][j][m], by_end[1][j][m]
                    else:  # a half prompt that passes at j needs the rest of the fill
                        up_half, up_full = weight[j] * rest[j], 0.0
                    value_half = mass * half[m] + up_half + left[m - 1]
                    value_full = mass * full[m] + up_full + left[m - 1]
                    if value_half < best:
                        best, choice = value_half, (m, False)
                    if value_full < best:
                        best, choice = value_full, (m, True)
                cost[proven][i][j] = by_end[proven][j][i] = best
                plan[proven][i][j] = choice
    return plan


__all__ = [
    "GENERATION",
    "LOAD_BASE",
    "LOAD_PER_TOKEN",
    "PP_SPEED",
    "Population",
    "SimModel",
    "oracle_search",
    "plain_search",
    "revealing_fill",
]
