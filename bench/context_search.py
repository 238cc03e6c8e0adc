"""Benchmark: lmstrix's context search against a plain binary search of full use probes.

Run: ``.venv/bin/python bench/context_search.py [--verbose]``. Deterministic (seeded), a few
seconds, no server: models and probes are simulated, time is a cost model, not a clock.

Simulated models (50): true *loadable* limits L log-uniform over [2048, 262144]; declared context
= the power of two at or above 1.05 L, sometimes doubled (model cards overstate); a share of the
models only *use* part of what they load (usable U in [0.25 L, 0.9 L]); a share answer a load
above L with a silent auto-fit reduction instead of an error (most to exactly L, some to less).

Cost model (seconds, stated so the figures can be judged):

- load at N (success or failure): ``LOAD_BASE + LOAD_PER_TOKEN * N`` (weights from the page cache
  plus KV-cache allocation);
- use probe: ``new_prompt_tokens / PP_SPEED + GENERATION`` where new tokens are the prompt tokens
  the server has not cached yet. A load clears the cache. lmstrix's needle prompts are nested
  (see ``lmstrix.domain.needle``), so a probe on the instance that ran the previous probe only pays
  for tokens beyond the common prefix. The plain search reloads at every step, so it always pays
  for the whole prompt. The "no prompt cache" row charges lmstrix full prompts too.

Plain search (the method the original lmstrix documents): bisection on ``(lo + hi) // 2`` over
``[min_context, min(declared, threshold)]``; every step loads at the midpoint and, if the load
applied the full size, runs a full use probe there. It stops with the same granularity rule as
lmstrix (``max(256, 1 % of good)``) so both aim at the same precision.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmstrix.domain.context_search import (
    LoadOutcome,
    SearchConfig,
    SearchLoop,
    SearchState,
    UseOutcome,
)

SEED = 20260517
N_MODELS = 50
MIN_CONTEXT = 2048
MAX_LIMIT = 262144
THRESHOLD = 262144  # large enough for every simulated limit (the default 65536 would cap them)
MAX_ITERATIONS = 20  # ContextTester's default

LOAD_BASE = 4.0  # s
LOAD_PER_TOKEN = 25e-6  # s per context token (6.6 s extra at 256k)
PP_SPEED = 600.0  # prompt tokens per second
GENERATION = 2.0  # s to generate the short answer

USABLE_SHARE = 0.3
AUTOFIT_SHARE = 0.3


@dataclass
class SimModel:
    """A simulated model with true limits and the bookkeeping of the cost model."""

    name: str
    declared: int
    loadable: int
    usable: int
    autofit: bool
    autofit_to: int  # what auto-fit applies above the limit (<= loadable)
    seconds: float = 0.0
    loads: int = 0
    uses: int = 0
    loaded: int | None = None
    cached: int = 0  # prompt tokens cached on the loaded instance
    prompt_cache: bool = True
    pp_speed: float = PP_SPEED
    log: list[str] = field(default_factory=list)

    def reset(self, *, prompt_cache: bool = True, pp_speed: float = PP_SPEED) -> None:
        self.seconds, self.loads, self.uses = 0.0, 0, 0
        self.loaded, self.cached, self.prompt_cache = None, 0, prompt_cache
        self.pp_speed = pp_speed
        self.log = []

    def load(self, size: int) -> LoadOutcome:
        self.loads += 1
        cost = LOAD_BASE + LOAD_PER_TOKEN * size
        self.seconds += cost
        self.cached = 0
        if size <= self.loadable:
            self.loaded = size
            outcome = LoadOutcome(True, applied=size, seconds=cost)
        elif self.autofit:
            self.loaded = self.autofit_to
            outcome = LoadOutcome(True, applied=self.autofit_to, seconds=cost)
        else:
            self.loaded = None
            outcome = LoadOutcome(False, error="insufficient system resources", seconds=cost)
        self.log.append(f"load {size} -> {outcome.applied if outcome.ok else 'fail'}")
        return outcome

    def use(self, size: int, context: int) -> UseOutcome:
        assert self.loaded is not None and self.loaded >= size and self.loaded == context
        self.uses += 1
        new = size - (min(self.cached, size) if self.prompt_cache else 0)
        cost = new / self.pp_speed + GENERATION
        self.seconds += cost
        self.cached = size
        ok = size <= self.usable
        self.log.append(f"use {size}@{context} -> {'ok' if ok else 'wrong'}")
        return UseOutcome(ok, prompt_tokens=size, seconds=cost)


def make_models(rng: random.Random) -> list[SimModel]:
    models = []
    for i in range(N_MODELS):
        loadable = int(math.exp(rng.uniform(math.log(MIN_CONTEXT), math.log(MAX_LIMIT))))
        declared = 1 << math.ceil(math.log2(loadable * 1.05))
        if rng.random() < 0.4:
            declared *= 2
        usable = loadable
        if rng.random() < USABLE_SHARE:
            usable = max(MIN_CONTEXT, int(loadable * rng.uniform(0.25, 0.9)))
        autofit = rng.random() < AUTOFIT_SHARE
        autofit_to = loadable if rng.random() < 0.7 else int(loadable * rng.uniform(0.75, 1.0))
        models.append(
            SimModel(f"m{i:02d}", declared, loadable, usable, autofit, max(1, autofit_to))
        )
    return models


def granularity(good: int | None) -> int:
    return max(256, (good if good else MIN_CONTEXT) // 100)


@dataclass
class Run:
    found: int | None
    loads: int
    uses: int
    seconds: float
    converged: bool


def run_lmstrix(model: SimModel, *, prompt_cache: bool = True, pp_speed: float = PP_SPEED) -> Run:
    model.reset(prompt_cache=prompt_cache, pp_speed=pp_speed)
    config = SearchConfig(
        declared=model.declared,
        threshold=THRESHOLD,
        min_context=MIN_CONTEXT,
        max_iterations=MAX_ITERATIONS,
    )
    verdict = SearchLoop(model, SearchState.start(config)).run()
    return Run(verdict.optimal, model.loads, model.uses, model.seconds, verdict.converged)


def run_plain(model: SimModel, *, pp_speed: float = PP_SPEED) -> Run:
    """Bisection with a load and a full use probe at every midpoint."""
    model.reset(prompt_cache=False, pp_speed=pp_speed)
    lo, hi = MIN_CONTEXT, min(model.declared, THRESHOLD)
    best: int | None = None
    while lo <= hi and hi - lo + 1 > granularity(best):
        mid = (lo + hi) // 2
        outcome = model.load(mid)
        ok = outcome.ok and outcome.applied == mid and model.use(mid, mid).ok
        if ok:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    if best is None and lo <= hi:  # never landed on a working size: try the minimum itself
        outcome = model.load(lo)
        if outcome.ok and outcome.applied == lo and model.use(lo, lo).ok:
            best = lo
    return Run(best, model.loads, model.uses, model.seconds, True)


@dataclass
class Summary:
    name: str
    runs: list[Run]
    truths: list[int]

    @property
    def total_seconds(self) -> float:
        return sum(r.seconds for r in self.runs)

    def errors(self) -> list[int]:
        return [t - (r.found or 0) for r, t in zip(self.runs, self.truths, strict=True)]

    def above(self) -> int:
        return sum(1 for e in self.errors() if e < 0)

    def outside_granularity(self) -> int:
        return sum(
            1 for r, e in zip(self.runs, self.errors(), strict=True) if e >= granularity(r.found)
        )


def truth(model: SimModel) -> int:
    return min(model.usable, model.declared, THRESHOLD)


def summarise(
    models: list[SimModel], pp_speed: float = PP_SPEED
) -> tuple[Summary, Summary, Summary]:
    truths = [truth(m) for m in models]
    ours = Summary("lmstrix", [run_lmstrix(m, pp_speed=pp_speed) for m in models], truths)
    nocache = Summary(
        "lmstrix, no prompt cache",
        [run_lmstrix(m, prompt_cache=False, pp_speed=pp_speed) for m in models],
        truths,
    )
    plain = Summary(
        "plain binary search", [run_plain(m, pp_speed=pp_speed) for m in models], truths
    )
    return ours, nocache, plain


def table(rows: list[Summary], baseline: Summary) -> str:
    head = (
        f"{'method':<26} {'loads/model':>11} {'uses/model':>10} {'worst error':>12} "
        f"{'worst %':>8} {'above':>5} {'>gran':>5} {'sim. time':>10} {'vs plain':>8}"
    )
    lines = [head, "-" * len(head)]
    for s in rows:
        n = len(s.runs)
        errors = s.errors()
        worst = max(errors)
        worst_pct = max(e / t for e, t in zip(errors, s.truths, strict=True)) * 100
        lines.append(
            f"{s.name:<26} {sum(r.loads for r in s.runs) / n:>11.2f} "
            f"{sum(r.uses for r in s.runs) / n:>10.2f} {worst:>12,d} {worst_pct:>7.2f}% "
            f"{s.above():>5d} {s.outside_granularity():>5d} "
            f"{s.total_seconds / 3600:>9.2f}h {s.total_seconds / baseline.total_seconds:>7.1%}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="one line per simulated model")
    args = parser.parse_args()
    models = make_models(random.Random(SEED))
    n_usable = sum(1 for m in models if m.usable < m.loadable)
    n_autofit = sum(1 for m in models if m.autofit)
    print(
        f"{N_MODELS} simulated models, seed {SEED}: loadable limits log-uniform in "
        f"[{MIN_CONTEXT}, {MAX_LIMIT}], {n_usable} with usable < loadable, {n_autofit} with "
        f"silent auto-fit reduction"
    )
    print(
        f"bounds [min_context={MIN_CONTEXT}, min(declared, threshold={THRESHOLD})], "
        f"max_iterations={MAX_ITERATIONS}, granularity max(256, 1% of good)"
    )
    print(
        f"cost model: load = {LOAD_BASE:g} s + {LOAD_PER_TOKEN * 1e6:g} us x N; use probe = "
        f"new prompt tokens / {PP_SPEED:g} tok/s + {GENERATION:g} s generation"
    )
    print()
    ours, nocache, plain = summarise(models)
    print(table([ours, nocache, plain], plain))
    print()
    print("error = true usable limit - size found (tokens); above = results above the true limit;")
    print(">gran = results more than the granularity below it")

    if args.verbose:
        print()
        print(
            f"{'model':<5} {'declared':>8} {'loadable':>8} {'usable':>8} {'fit':>7} "
            f"{'found':>8} {'L':>3} {'U':>3} {'time':>7} | {'plain':>8} {'L':>3} {'U':>3} "
            f"{'time':>7}"
        )
        for m, a, b in zip(models, ours.runs, plain.runs, strict=True):
            fit = str(m.autofit_to) if m.autofit else "-"
            print(
                f"{m.name:<5} {m.declared:>8} {m.loadable:>8} {m.usable:>8} {fit:>7} "
                f"{a.found or 0:>8} {a.loads:>3} {a.uses:>3} {a.seconds:>6.0f}s | "
                f"{b.found or 0:>8} {b.loads:>3} {b.uses:>3} {b.seconds:>6.0f}s"
            )

    print()
    print("sensitivity of the time ratio to prompt-processing speed (same models, same loads):")
    cells = []
    for speed in (250.0, 600.0, 1500.0, 4000.0):
        fast, uncached, base = summarise(models, speed)
        cells.append(
            f"{speed:>6g} tok/s: {fast.total_seconds / base.total_seconds:6.1%} "
            f"(no cache {uncached.total_seconds / base.total_seconds:6.1%})"
        )
    print("\n".join("  " + cell for cell in cells))

    ratio = ours.total_seconds / plain.total_seconds
    checks = [
        ("never above the true limit", ours.above() == 0),
        ("within the granularity below it", ours.outside_granularity() == 0),
        ("every search converged", all(r.converged for r in ours.runs)),
        (f"simulated time {ratio:.1%} of plain <= 40%", ratio <= 0.40),
    ]
    print()
    for label, ok in checks:
        print(f"[{'PASS' if ok else 'FAIL'}] {label}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
