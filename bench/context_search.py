"""Benchmark: lmstrix's context search against a plain search, on two populations of models.

Run: ``.venv/bin/python bench/context_search.py [--verbose] [--exact-oracle]``. Deterministic
(seeded), a few seconds, no server: the models, probes and time are simulated
(``lmstrix.testing.search_sim``), and the search is the very loop the context-test job runs
(``SearchLoop``).

Populations (50 models each, the same limits in both; only the recall rule differs):

- **prompt-rule**: a needle is forgotten once the prompt is longer than its depth's limit,
  whatever size the model is loaded at;
- **load-size**: loaded above a depth's limit, the model forgets that needle once the prompt
  fills more than half the window (quality set by the size loaded at, as with rope scaling).

Limits: the loadable limit L log-uniform over [2048, 262144]; declared = the power of two at or
above 1.05 L, sometimes doubled (model cards overstate); 30 % of the models use less than they
load at the start needle (in [0.25 L, 0.95 L]); 30 % lose the middle needle before the start
(in [0.5, 1.0] of the start's limit); 30 % answer a load above L with a silent auto-fit
reduction (mostly to exactly L). The true limit is the largest size that works loaded at that
size and filled with needles at the start, the middle and the end.

Cost model (seconds, stated so the figures can be judged): a load at N costs ``4 s + 25 us x N``
(weights from the page cache plus the KV cache); a prompt costs its tokens not yet in the
server's prompt cache at 600 tokens/s, plus 2 s for the answer. A load clears the cache. The
prompts lmstrix sends to one instance are cuts of one layout, so they share their text.

Plain search: bisection on ``(lo + hi) // 2`` over ``[min_context, min(declared, threshold)]``
that loads at the midpoint and fills it at every step (the cache never helps: every step
reloads), stopping at the same granularity (``max(256, 1 % of good)``).

Oracle bound (load-size only; ``oracle_search``): what a sound search can at best be expected to
cost there, to judge lmstrix's figure against. Sound means the size reported passed a full
prompt on an instance loaded at exactly that size. The oracle knows the rule, the population's
prior (``share_below``, the shares ``make_limits`` draws from) and the loadable limit, for free
(lmstrix spends loads to find it); not the model's usable limit. On a load-size model nothing
but a prompt on an instance loaded at N tells anything about that limit, and only whether it is
at least N, once the prompt fills more than half the window (loads and the prompt cache tell
nothing). So every probe costs a load at N and at least half a window of prompt, and the oracle
places them where the expected cost of the rest is least (a bisection weighted by the prior and
the cost: a dynamic program over the sizes one granularity apart in the plain search's range,
capped at the loadable limit, with the same cost model), choosing per probe a half or a full
prompt, then gives its answer a full prompt at its own load unless it had one. Its errors are
printed like the others' (it is sound whatever its prior). Its plan uses Knuth's bound on where
each probe lies; ``--exact-oracle`` drops it (exact, about ten times slower; the figure moves by
a tenth of a point). The same probes placed by a plain bisection on ``(lo + hi) // 2`` cost much
more (about half the models use all they load, so the first probe belongs at the loadable
limit): a midpoint bisection is no bound.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmstrix.domain.context_search import SearchConfig, SearchLoop, SearchState
from lmstrix.testing.search_sim import (
    GENERATION,
    LOAD_BASE,
    LOAD_PER_TOKEN,
    PP_SPEED,
    Population,
    SimModel,
    oracle_search,
    plain_search,
)

SEED = 20260517
N_MODELS = 50
MIN_CONTEXT = 2048
MAX_LIMIT = 262144
THRESHOLD = 262144  # large enough for every simulated limit (the default 65536 would cap them)
USABLE_SHARE = 0.3
MIDDLE_SHARE = 0.3
AUTOFIT_SHARE = 0.3
USABLE_RANGE = (0.25, 0.95)  # of the loadable limit, for the models using less than they load
MIDDLE_RANGE = (0.5, 1.0)  # of the start's limit, for the models losing the middle first
TARGET_RATIO = 0.5
ORACLE = "oracle bound (knows the rule)"
NAME_WIDTH = len(ORACLE)


@dataclass(frozen=True)
class Limits:
    declared: int
    loadable: int
    start: int
    middle: int
    autofit_to: int | None


def make_limits(rng: random.Random) -> list[Limits]:
    out = []
    for _ in range(N_MODELS):
        loadable = int(math.exp(rng.uniform(math.log(MIN_CONTEXT), math.log(MAX_LIMIT))))
        declared = 1 << math.ceil(math.log2(loadable * 1.05))
        if rng.random() < 0.4:
            declared *= 2
        start = loadable
        if rng.random() < USABLE_SHARE:
            start = max(MIN_CONTEXT, int(loadable * rng.uniform(*USABLE_RANGE)))
        middle = start
        if rng.random() < MIDDLE_SHARE:
            middle = max(MIN_CONTEXT, int(start * rng.uniform(*MIDDLE_RANGE)))
        autofit = None
        if rng.random() < AUTOFIT_SHARE:
            exact = rng.random() < 0.7
            autofit = loadable if exact else int(loadable * rng.uniform(0.75, 1.0))
        out.append(Limits(declared, loadable, start, middle, autofit))
    return out


def sim_of(limits: Limits, population: Population) -> SimModel:
    per_depth = {0.0: limits.start, 0.5: limits.middle}
    return SimModel(population, limits.loadable, per_depth, autofit_to=limits.autofit_to)


@dataclass
class Run:
    found: int | None
    truth: int
    probes: int
    seconds: float
    converged: bool

    @property
    def error(self) -> int:
        return self.truth - (self.found or 0)

    @property
    def granularity(self) -> int:
        return max(256, (self.found or MIN_CONTEXT) // 100)


def run_lmstrix(limits: Limits, population: Population, *, screen: bool = True) -> Run:
    model = sim_of(limits, population)
    config = SearchConfig(
        declared=limits.declared, threshold=THRESHOLD, min_context=MIN_CONTEXT, screen=screen
    )
    verdict = SearchLoop(model, SearchState.start(config)).run()
    truth = model.truth(config.upper)
    return Run(verdict.optimal, truth, len(model.calls), model.seconds, verdict.converged)


def run_plain(limits: Limits, population: Population) -> Run:
    model = sim_of(limits, population)
    upper = min(limits.declared, THRESHOLD)
    found = plain_search(model, MIN_CONTEXT, upper)
    return Run(found, model.truth(upper), len(model.calls), model.seconds, True)


def share_below(ratio: float) -> float:
    """The population's prior, as the oracle knows it: the share of models whose usable limit
    (the start's and the middle's, whichever is lower) is below ``ratio`` times the loadable
    limit, as ``make_limits`` draws them (leaving out the clamp to ``MIN_CONTEXT``, which moves
    no limit past the first size searched, and the rounding down to whole tokens)."""
    start = _share(ratio, USABLE_RANGE)
    middle = _share(ratio, MIDDLE_RANGE)
    both = _share_product(ratio, USABLE_RANGE, MIDDLE_RANGE)
    return (
        (1 - USABLE_SHARE) * MIDDLE_SHARE * middle
        + USABLE_SHARE * (1 - MIDDLE_SHARE) * start
        + USABLE_SHARE * MIDDLE_SHARE * both
    )


def _share(t: float, span: tuple[float, float]) -> float:
    """P(u < t) for u uniform over ``span``."""
    a, b = span
    return min(1.0, max(0.0, (t - a) / (b - a)))


def _share_product(t: float, first: tuple[float, float], second: tuple[float, float]) -> float:
    """P(u * v < t) for u and v uniform over ``first`` and ``second``: the mean over u of
    P(v < t / u), which is 1 up to u = t / d, (t / u - c) / (d - c) up to u = t / c, then 0."""
    (a, b), (c, d) = first, second
    whole = max(0.0, min(b, t / d) - a)
    p, q = max(a, t / d), min(b, t / c)
    part = (t * math.log(q / p) - c * (q - p)) / (d - c) if q > p else 0.0
    return (whole + part) / (b - a)


def run_oracle(limits: Limits, population: Population, *, exhaustive: bool = False) -> Run:
    model = sim_of(limits, population)
    upper = min(limits.declared, THRESHOLD)
    found = oracle_search(
        model,
        MIN_CONTEXT,
        upper,
        lambda n: share_below(n / limits.loadable),
        exhaustive=exhaustive,
    )
    return Run(found, model.truth(upper), len(model.calls), model.seconds, True)


@dataclass
class Row:
    name: str
    runs: list[Run]

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.runs)

    def line(self, baseline: Row) -> str:
        n = len(self.runs)
        worst = max(r.error for r in self.runs)
        worst_pct = max(r.error / r.truth for r in self.runs) * 100
        above = sum(1 for r in self.runs if r.error < 0)
        outside = sum(1 for r in self.runs if r.error >= r.granularity)
        mean_pct = sum(r.error / r.truth for r in self.runs) / n * 100
        return (
            f"{self.name:<{NAME_WIDTH}} {sum(r.probes for r in self.runs) / n:>12.1f} {worst:>9,d} "
            f"{worst_pct:>7.2f}% {mean_pct:>7.2f}% {above:>5d} {outside:>5d} "
            f"{self.seconds / 3600:>8.2f}h {self.seconds / baseline.seconds:>8.1%}"
        )


HEAD = (
    f"{'method':<{NAME_WIDTH}} {'probes/model':>12} {'worst err':>9} {'worst %':>8} {'mean %':>8} "
    f"{'above':>5} {'>gran':>5} {'sim time':>9} {'vs plain':>8}"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="one line per simulated model")
    parser.add_argument(
        "--exact-oracle",
        action="store_true",
        help="plan the oracle without Knuth's bound (exact, about ten times slower)",
    )
    args = parser.parse_args()
    all_limits = make_limits(random.Random(SEED))
    print(
        f"{N_MODELS} simulated models per population, seed {SEED}: loadable limits log-uniform "
        f"in [{MIN_CONTEXT}, {MAX_LIMIT}], {sum(m.start < m.loadable for m in all_limits)} using "
        f"less than they load, {sum(m.middle < m.start for m in all_limits)} losing the middle "
        f"first, {sum(m.autofit_to is not None for m in all_limits)} with auto-fit"
    )
    print(
        f"cost model: load = {LOAD_BASE:g} s + {LOAD_PER_TOKEN * 1e6:g} us x N; prompt = new "
        f"tokens / {PP_SPEED:g} tok/s + {GENERATION:g} s; needles at depths 0, 0.5, 1"
    )
    checks: list[tuple[str, bool]] = []
    for population in Population:
        ours = Row("lmstrix", [run_lmstrix(m, population) for m in all_limits])
        unscreened = Row(
            "lmstrix, no screens", [run_lmstrix(m, population, screen=False) for m in all_limits]
        )
        plain = Row("plain (load+fill N)", [run_plain(m, population) for m in all_limits])
        print()
        rows = [ours, unscreened, plain]
        oracle = None
        if population is Population.LOAD_SIZE:
            oracle = Row(
                ORACLE,
                [run_oracle(m, population, exhaustive=args.exact_oracle) for m in all_limits],
            )
            rows.append(oracle)
        print(f"population: {population.value}")
        print(HEAD)
        print("-" * len(HEAD))
        for row in rows:
            print(row.line(plain))
        if oracle is not None:
            print(
                f"no sound search can be expected below the oracle's "
                f"{oracle.seconds / plain.seconds:.1%} of plain on this population: the "
                f"{TARGET_RATIO:.0%} target is below what any sound search achieves here"
            )
        if args.verbose:
            print(f"  {'decl':>7} {'load':>7} {'truth':>7} {'found':>7} {'probes':>6} {'time':>6}")
            for k, (m, r, p) in enumerate(zip(all_limits, ours.runs, plain.runs, strict=True)):
                line = (
                    f"  {m.declared:>7} {m.loadable:>7} {r.truth:>7} {r.found or 0:>7} "
                    f"{r.probes:>6} {r.seconds:>5.0f}s | plain {p.found or 0:>7} {p.probes:>3} "
                    f"{p.seconds:>5.0f}s"
                )
                if oracle is not None:
                    o = oracle.runs[k]
                    line += f" | oracle {o.found or 0:>7} {o.probes:>3} {o.seconds:>5.0f}s"
                print(line)
        ratio = ours.seconds / plain.seconds
        name = population.value
        checks += [
            (f"{name}: never above the true limit", all(r.error >= 0 for r in ours.runs)),
            (
                f"{name}: within max(256, 1 %) below it",
                all(r.error < r.granularity for r in ours.runs),
            ),
            (f"{name}: every search converged", all(r.converged for r in ours.runs)),
            (f"{name}: simulated time {ratio:.1%} of plain <= 50 %", ratio <= TARGET_RATIO),
        ]
    print()
    print("err = true limit - size found (tokens); above = results above the true limit;")
    print(">gran = results more than the granularity below it")
    print()
    for label, ok in checks:
        print(f"[{'PASS' if ok else 'FAIL'}] {label}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
