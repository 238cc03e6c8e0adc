"""The pure context-limit search (lmstrix.domain.context_search) over simulated models."""

from __future__ import annotations

import math
from contextlib import suppress
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lmstrix.api.exceptions import ValidationError
from lmstrix.domain.context_search import (
    LoadOutcome,
    Outcome,
    ProbeKind,
    ProbeRequest,
    SearchConfig,
    SearchLoop,
    SearchResult,
    SearchState,
    StopReason,
    TestPoint,
    UseOutcome,
    in_flight_point,
    next_probe,
    record,
    result,
    stop_reason,
)
from lmstrix.testing.search_sim import Population, SimModel


class Sim(SimModel):
    """A simulated model (:mod:`lmstrix.testing.search_sim`) that can die on its n-th call."""

    def __init__(
        self,
        loadable: int,
        usable: int,
        autofit_to: int | None = None,
        *,
        population: Population = Population.PROMPT_RULE,
        middle: int | None = None,
        crash_at: int | None = None,
    ) -> None:
        limits = {0.0: usable}
        if middle is not None:
            limits[0.5] = middle
        super().__init__(population, loadable, limits, autofit_to=autofit_to)
        self.crash_at = crash_at

    def copy(self, crash_at: int | None = None) -> Sim:
        return Sim(
            self.loadable,
            self.limits[0.0],
            self.autofit_to,
            population=self.population,
            middle=self.limits.get(0.5),
            crash_at=crash_at,
        )

    def _tick(self) -> None:
        if self.crash_at is not None and len(self.calls) == self.crash_at:
            raise RuntimeError("worker killed")

    def load(self, size: int) -> LoadOutcome:
        self._tick()
        return super().load(size)

    def use(self, size: int, context: int) -> UseOutcome:
        self._tick()
        return super().use(size, context)


def run(sim: Sim, config: SearchConfig, state: SearchState | None = None) -> SearchResult:
    return SearchLoop(sim, state or SearchState.start(config)).run()


def sizes(sim: Sim, kind: str | None = None) -> list[int]:
    return [s for k, s, _ in sim.calls if kind is None or k == kind]


def verdicts(sim: Sim) -> list[int]:
    """Sizes of the use probes that ran at their own load."""
    return [s for k, s, c in sim.calls if k == "use" and c == s]


# -- configuration ------------------------------------------------------------------------------


def test_config_bounds_and_default_granularity() -> None:
    config = SearchConfig(declared=131072)
    assert (config.lower, config.upper) == (2048, 65536)  # threshold 65536 caps by default
    assert config.granularity_at(None) == 256
    assert config.granularity_at(10_000) == 256
    assert config.granularity_at(60_000) == 600
    assert SearchConfig(declared=8192, threshold=262144).upper == 8192
    assert SearchConfig(declared=1000).lower == 1000  # declares less than min: tested at 1000
    assert SearchConfig(declared=8192, granularity=64).granularity_at(8000) == 64


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"declared": 8192, "threshold": 1024}, "threshold"),
        ({"declared": 0}, "declared"),
        ({"declared": 8192, "min_context": -1}, "min_context"),
        ({"declared": 8192, "max_iterations": 0}, "max_iterations"),
        ({"declared": 8192, "granularity": 0}, "granularity"),
        ({"declared": True}, "declared"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, Any], field_name: str) -> None:
    with pytest.raises(ValidationError) as err:
        SearchConfig(**kwargs)
    assert err.value.field == field_name


# -- the main paths -----------------------------------------------------------------------------


def test_loads_and_works_at_the_cap_costs_one_load_and_one_full_prompt() -> None:
    sim = Sim(loadable=100_000, usable=100_000)
    verdict = run(sim, SearchConfig(declared=32768))
    # the pre-screen fills 60 % of the instance; the full prompt extends the same cut
    assert sim.calls == [("load", 32768, None), ("use", 19660, 32768), ("use", 32768, 32768)]
    assert verdict.optimal == 32768
    assert verdict.failure_point is None
    assert verdict.stop_reason is StopReason.AT_CAP
    assert verdict.converged
    assert (verdict.load_probes, verdict.use_probes, verdict.iterations) == (1, 2, 3)
    assert [p.outcome for p in verdict.points] == [Outcome.OK] * 3
    assert [p.screen for p in verdict.points] == [False, True, False]


def test_loads_first_then_a_single_verdict_at_the_loadable_limit() -> None:
    sim = Sim(loadable=40_000, usable=40_000)
    verdict = run(sim, SearchConfig(declared=131072, threshold=131072))
    assert sim.calls[0] == ("load", 131072, None)
    assert verdicts(sim) == [verdict.optimal]  # the one full prompt
    first_use = next(i for i, c in enumerate(sim.calls) if c[0] == "use")
    assert all(kind == "load" for kind, _, _ in sim.calls[:first_use])
    assert verdict.optimal is not None
    assert 40_000 - verdict.granularity < verdict.optimal <= 40_000
    assert verdict.failure_point is not None and verdict.failure_point > 40_000
    assert verdict.stop_reason is StopReason.CONVERGED
    assert verdict.loadable == verdict.optimal


def test_prompt_rule_model_is_screened_on_the_loaded_instance_then_judged_at_its_own_size() -> None:
    sim = Sim(loadable=60_000, usable=20_000)
    verdict = run(sim, SearchConfig(declared=65536))
    assert verdict.optimal is not None
    assert 20_000 - verdict.granularity < verdict.optimal <= 20_000
    # the reported size and the failure just above it were judged loaded at exactly that size
    assert verdict.optimal in verdicts(sim)
    assert verdict.failure_point is not None
    assert verdict.failure_point - verdict.optimal <= verdict.granularity
    judged = {p.size: p for p in verdict.points if p.kind is ProbeKind.USE and not p.screen}
    assert judged[verdict.failure_point].failed
    # the screens ran on the instance at the loadable limit, and pointed right: two more loads
    screens = [p for p in verdict.points if p.screen]
    assert len({p.context for p in screens}) <= 3
    assert len(verdicts(sim)) <= 3
    for kind, size, context in sim.calls:
        if kind == "use":
            assert sim.loadable >= context >= size


def test_load_size_model_is_never_judged_by_a_screen() -> None:
    """Loaded at 60k it recalls prompts up to half the window (30k) although it only works up
    to 20k at its own size: a search trusting a screen would report 30k."""
    sim = Sim(loadable=60_000, usable=20_000, population=Population.LOAD_SIZE)
    verdict = run(sim, SearchConfig(declared=65536))
    assert verdict.optimal is not None
    assert 20_000 - verdict.granularity < verdict.optimal <= 20_000
    assert verdict.optimal in verdicts(sim)
    assert any(p.screen and not p.failed and p.size > 20_000 for p in verdict.points)


def test_load_size_model_above_half_its_loadable_limit() -> None:
    sim = Sim(loadable=60_000, usable=45_000, population=Population.LOAD_SIZE)
    verdict = run(sim, SearchConfig(declared=65536))
    assert verdict.optimal is not None
    assert 45_000 - verdict.granularity < verdict.optimal <= 45_000


def partial_fills(verdict: SearchResult) -> list[TestPoint]:
    """The screens that ran on an instance loaded for a partial fill."""
    return [p for p in verdict.points if p.screen and p.reason.startswith("partial fill")]


def test_load_size_model_is_bisected_with_partial_fills_then_one_full_prompt() -> None:
    """Once the model recalled at its own load a prompt its larger instance missed, each size
    gets a partial fill (the share at which that instance missed), the last one a full prompt."""
    sim = Sim(loadable=60_000, usable=45_000, population=Population.LOAD_SIZE)
    verdict = run(sim, SearchConfig(declared=65536))
    assert verdict.optimal is not None
    assert 45_000 - verdict.granularity < verdict.optimal <= 45_000
    partial = partial_fills(verdict)
    assert len(partial) >= 4
    missed = min(
        (p for p in verdict.points if p.screen and p.failed and p.context == sim.calls[7][1]),
        key=lambda p: p.size,
    )  # the smallest prompt the instance at the loadable limit missed
    for p in partial:
        assert p.context is not None
        assert p.size == -(-p.context * missed.size // (missed.context or 1))
        assert p.failed == (p.context > 45_000)
    # full prompts: where the screens failed (it worked), then the largest partial pass, once
    # before the last step (while its instance is loaded) and once more if the last one passed
    full = verdicts(sim)
    assert 2 <= len(full) <= 3 and full[-1] == verdict.optimal
    assert all(size in {p.context for p in partial if not p.failed} for size in full[1:])
    assert verdict.failure_point in {p.context for p in partial if p.failed}


class Deeper(Sim):
    """Loaded above its limit, it misses a needle only past a share of the window that grows
    the closer the load is to the limit (95 % just above it, half from 1.5 times it): partial
    fills at the share its largest instance failed at pass where full prompts fail."""

    def recalled(self, depth: float, fill: int, context: int) -> bool:
        limit = self.limits.get(depth)
        if limit is None or context <= limit:
            return True
        over = min(1.0, (context - limit) / (0.5 * limit))
        return fill <= (0.5 + 0.45 * (1 - over)) * context


def test_partial_passes_that_mislead_are_dropped_for_full_prompts() -> None:
    sim = Deeper(loadable=60_000, usable=36_000, population=Population.LOAD_SIZE)
    config = SearchConfig(declared=65536)
    loop = SearchLoop(sim, SearchState.start(config))
    verdict = loop.run()
    assert verdict.optimal is not None
    assert 36_000 - verdict.granularity < verdict.optimal <= 36_000
    assert verdict.optimal in verdicts(sim)
    # a partial pass was confirmed by a full prompt that failed; no partial fill after it
    points = list(verdict.points)
    misled = next(
        i
        for i, p in enumerate(points)
        if p.reason.startswith("confirm the largest partial pass") and not p.screen and p.failed
    )
    assert any(p.context == points[misled].size and not p.failed for p in partial_fills(verdict))
    assert not any(p.reason.startswith("partial fill") for p in points[misled:])
    assert loop.state.load_dependent and not loop.state.partial_trusted


def test_load_dependence_needs_a_longer_prompt_holding_the_missed_needle() -> None:
    config = SearchConfig(declared=262144, threshold=262144)
    # missed the middle needle filling 60k of an instance loaded at 100k
    miss = TestPoint(ProbeKind.USE, 60_000, Outcome.WRONG, context=100_000, failed_depths=(0.5,))

    def dependent(*passes: TestPoint) -> bool:
        return SearchState.start(config, history=[miss, *passes]).load_dependent

    def passed(size: int, context: int) -> TestPoint:
        return TestPoint(ProbeKind.USE, size, Outcome.OK, context=context)

    assert not dependent(passed(59_000, 59_000))  # shorter
    assert dependent(passed(60_000, 60_000))  # as long, at its own load
    assert not dependent(passed(80_000, 200_000))  # longer, but its middle needle sits at 100k
    assert dependent(passed(110_000, 200_000))
    assert not dependent(passed(80_000, 100_000))  # the same instance size
    start = TestPoint(ProbeKind.USE, 55_000, Outcome.WRONG, context=100_000, failed_depths=(0.0,))
    state = SearchState.start(config, history=[start, passed(80_000, 200_000)])
    assert state.load_dependent  # the start needle is in every prompt
    assert state.fill_share == (55_000, 100_000)  # the smallest share an instance missed at


def test_the_failure_point_says_which_depths_failed() -> None:
    sim = Sim(loadable=60_000, usable=50_000, middle=30_000)
    verdict = run(sim, SearchConfig(declared=65536))
    assert verdict.optimal is not None
    assert 30_000 - verdict.granularity < verdict.optimal <= 30_000
    failed = [
        p for p in verdict.points if p.kind is ProbeKind.USE and p.size == verdict.failure_point
    ]
    assert failed and failed[-1].failed_depths == (0.5,)


def test_screens_off_judges_every_size_at_its_own_load() -> None:
    sim = Sim(loadable=60_000, usable=20_000)
    verdict = run(sim, SearchConfig(declared=65536, screen=False))
    assert verdict.optimal is not None and verdict.optimal <= 20_000
    for kind, size, context in sim.calls:
        if kind == "use":
            assert context == size


def test_exact_auto_fit_costs_two_loads_and_one_verdict() -> None:
    sim = Sim(loadable=45_000, usable=45_000, autofit_to=45_000)
    verdict = run(sim, SearchConfig(declared=131072, threshold=131072))
    assert sim.calls[:3] == [
        ("load", 131072, None),
        ("use", 27_000, 45_000),
        ("use", 45_000, 45_000),
    ]
    assert sim.calls[3][0] == "load" and 45_000 < sim.calls[3][1] <= 45_000 + 450
    assert len(sim.calls) == 4
    assert verdict.optimal == 45_000
    assert verdict.converged
    reduced = verdict.points[0]
    assert (reduced.outcome, reduced.applied) == (Outcome.REDUCED, 45_000)


def test_reduction_below_the_real_limit_is_only_a_lower_bound() -> None:
    sim = Sim(loadable=50_000, usable=50_000, autofit_to=30_000)
    verdict = run(sim, SearchConfig(declared=131072, threshold=131072))
    assert verdict.optimal is not None
    assert 50_000 - verdict.granularity < verdict.optimal <= 50_000


def test_reduced_size_that_is_not_used_triggers_the_downward_search() -> None:
    sim = Sim(loadable=45_000, usable=12_000, autofit_to=45_000)
    verdict = run(sim, SearchConfig(declared=131072, threshold=131072))
    assert verdict.optimal is not None
    assert 12_000 - verdict.granularity < verdict.optimal <= 12_000
    assert verdict.optimal in verdicts(sim)


def test_nothing_works() -> None:
    sim = Sim(loadable=100_000, usable=1000)
    verdict = run(sim, SearchConfig(declared=32768))
    assert verdict.optimal is None
    assert verdict.stop_reason is StopReason.NO_WORKING_SIZE
    assert verdict.failure_point == 2048
    assert min(sizes(sim)) == 2048

    sim = Sim(loadable=1000, usable=1000)
    verdict = run(sim, SearchConfig(declared=32768))
    assert verdict.optimal is None and verdict.stop_reason is StopReason.NO_WORKING_SIZE
    assert sizes(sim, "use") == []


def test_model_declaring_less_than_the_minimum_is_tested_at_its_declared_size() -> None:
    sim = Sim(loadable=1024, usable=1024)
    verdict = run(sim, SearchConfig(declared=1024))
    assert sim.calls == [("load", 1024, None), ("use", 1024, 1024)]
    assert verdict.optimal == 1024 and verdict.stop_reason is StopReason.AT_CAP


def test_max_iterations_stops_early_and_never_reports_an_untested_size() -> None:
    sim = Sim(loadable=40_000, usable=40_000)
    verdict = run(sim, SearchConfig(declared=131072, threshold=131072, max_iterations=3))
    assert verdict.iterations == 3 and len(sim.calls) == 3
    assert verdict.stop_reason is StopReason.MAX_ITERATIONS
    assert not verdict.converged
    assert verdict.optimal is None  # only loads so far: nothing was verified by a use probe


def test_use_error_means_the_instance_is_gone() -> None:
    config = SearchConfig(declared=32768)
    state = SearchState.start(config)
    request = next_probe(state)
    assert request == ProbeRequest(ProbeKind.LOAD, 32768, reason="load at the top of the range")
    state = record(state, request, LoadOutcome(True, applied=32768))
    request = next_probe(state)
    assert request is not None
    assert (request.kind, request.size, request.context) == (ProbeKind.USE, 19660, 32768)
    state = record(state, request, UseOutcome(True))
    request = next_probe(state)
    assert request is not None
    assert (request.kind, request.size, request.context) == (ProbeKind.USE, 32768, 32768)
    state = record(state, request, UseOutcome(False, error="timed out"))
    assert state.loaded is None
    follow = next_probe(state)
    assert follow is not None and follow.kind is ProbeKind.LOAD and follow.size < 32768
    assert state.points[-1].outcome is Outcome.FAILED


def test_wrong_answer_keeps_the_instance() -> None:
    config = SearchConfig(declared=32768)
    state = record(
        SearchState.start(config),
        ProbeRequest(ProbeKind.LOAD, 32768),
        LoadOutcome(True, applied=None),  # applied not reported: as requested
    )
    assert state.loaded == 32768
    state = record(
        state, ProbeRequest(ProbeKind.USE, 32768, 32768), UseOutcome(False, failed_depths=(0.5,))
    )
    assert state.loaded == 32768 and state.points[-1].outcome is Outcome.WRONG
    assert state.points[-1].failed_depths == (0.5,)
    follow = next_probe(state)  # a screen on the instance still loaded there
    assert follow is not None and follow.kind is ProbeKind.USE and follow.context == 32768
    assert follow.size < 32768
    state = record(state, follow, UseOutcome(False))
    assert state.bound == 32768  # a failed screen proves its instance's size bad, no less


def test_record_rejects_the_wrong_outcome_type() -> None:
    state = SearchState.start(SearchConfig(declared=8192))
    with pytest.raises(TypeError):
        record(state, ProbeRequest(ProbeKind.LOAD, 8192), UseOutcome(True))
    with pytest.raises(TypeError):
        record(state, ProbeRequest(ProbeKind.USE, 8192, 8192), LoadOutcome(True))


def test_next_probe_is_a_pure_function_of_the_state() -> None:
    sim = Sim(loadable=30_000, usable=9000)
    config = SearchConfig(declared=65536)
    state = SearchState.start(config)
    while (request := next_probe(state)) is not None:
        assert next_probe(state) == request
        outcome: LoadOutcome | UseOutcome = (
            sim.load(request.size)
            if request.kind is ProbeKind.LOAD
            else sim.use(request.size, request.context or 0)
        )
        state = record(state, request, outcome)
    assert stop_reason(state) is StopReason.CONVERGED
    assert result(state).seconds == pytest.approx(sum(p.seconds for p in state.points))


# -- resume and crash safety --------------------------------------------------------------------


def test_known_good_and_bad_narrow_the_range() -> None:
    sim = Sim(loadable=100_000, usable=100_000)
    config = SearchConfig(declared=131072, threshold=131072)
    state = SearchState.start(config, known_good=30_000, known_bad=40_000)
    verdict = run(sim, config, state)
    assert all(30_000 < s < 40_000 for s in sizes(sim, "load") + verdicts(sim))
    assert verdict.optimal is not None and verdict.optimal > 39_000
    assert verdict.failure_point == 40_000


def test_converged_prior_knowledge_is_confirmed_at_its_own_load() -> None:
    """The registry's good size is what every job will load at: one verdict confirms it."""
    sim = Sim(loadable=100_000, usable=100_000)
    config = SearchConfig(declared=131072)
    state = SearchState.start(config, known_good=30_000, known_bad=30_200)
    verdict = run(sim, config, state)
    assert sim.calls == [("load", 30_000, None), ("use", 18_000, 30_000), ("use", 30_000, 30_000)]
    assert verdict.optimal == 30_000 and verdict.stop_reason is StopReason.CONVERGED


def test_a_known_good_size_that_no_longer_works_is_searched_below() -> None:
    sim = Sim(loadable=100_000, usable=20_000)
    config = SearchConfig(declared=131072)
    state = SearchState.start(config, known_good=30_000, known_bad=30_200)
    verdict = run(sim, config, state)
    assert verdict.optimal is not None
    assert 20_000 - verdict.granularity < verdict.optimal <= 20_000
    assert verdict.optimal in verdicts(sim)


def test_reset_ignores_prior_knowledge() -> None:
    config = SearchConfig(declared=32768)
    state = SearchState.start(config, known_good=4096, known_bad=8192, in_flight=[6000], reset=True)
    assert state == SearchState(config)
    assert next_probe(state) == ProbeRequest(
        ProbeKind.LOAD, 32768, reason="load at the top of the range"
    )


def test_in_flight_size_counts_as_failure() -> None:
    sim = Sim(loadable=100_000, usable=100_000)
    config = SearchConfig(declared=65536)
    state = SearchState.start(config, in_flight=[50_000])
    assert state.bound == 50_000
    verdict = run(sim, config, state)
    assert max(sizes(sim)) < 50_000
    assert verdict.failure_point == 50_000
    assert verdict.optimal is not None and 50_000 - verdict.granularity <= verdict.optimal


def test_in_flight_accepts_requests_and_points() -> None:
    config = SearchConfig(declared=65536)
    request = ProbeRequest(ProbeKind.USE, 30_000, 40_000, reason="r")
    row = in_flight_point(request)
    assert row == TestPoint(ProbeKind.USE, 30_000, Outcome.INTERRUPTED, context=40_000, reason="r")
    assert row.failed and row.loadable is None
    done = TestPoint(ProbeKind.LOAD, 20_000, Outcome.OK)
    state = SearchState.start(config, in_flight=[request, done])
    assert state.bound == 20_000  # a point passed as in flight is interrupted whatever it said


def test_crash_mid_search_then_resume_from_persisted_rows() -> None:
    config = SearchConfig(declared=131072, threshold=131072)
    rows: list[TestPoint] = []

    def before(_state: SearchState, request: ProbeRequest) -> None:
        rows.append(in_flight_point(request))

    def after(_state: SearchState, point: TestPoint) -> None:
        rows[-1] = point

    sim = Sim(loadable=70_000, usable=50_000, crash_at=6)
    with pytest.raises(RuntimeError):
        SearchLoop(sim, SearchState.start(config), before=before, after=after).run()
    assert len(rows) == 7 and rows[-1].outcome is Outcome.INTERRUPTED
    interrupted = rows[-1].size

    completed = [r for r in rows if r.outcome is not Outcome.INTERRUPTED]
    in_flight = [r for r in rows if r.outcome is Outcome.INTERRUPTED]
    sim2 = Sim(loadable=70_000, usable=50_000)
    state = SearchState.start(config, history=completed, in_flight=in_flight)
    verdict = run(sim2, config, state)
    assert all(s < interrupted for s in sizes(sim2))
    expected = min(50_000, interrupted - 1)
    assert verdict.optimal is not None
    assert expected - verdict.granularity < verdict.optimal <= expected
    assert len(sim2.calls) < len(rows) + 12  # the replayed facts were not re-probed


# -- properties ---------------------------------------------------------------------------------
#
# Two populations (lmstrix.testing.search_sim): prompt-rule models forget a needle once the
# prompt is longer than its depth's limit; load-size models lose it when loaded above that limit
# and the prompt fills more than half the window. Both have depth-dependent recall: the middle
# needle's limit may sit below the start's. 200 examples per population and property.

limits = st.integers(min_value=500, max_value=300_000)
EXAMPLES = 200


@st.composite
def models(draw: st.DrawFn, population: Population) -> tuple[Sim, SearchConfig]:
    loadable = draw(limits)
    usable = draw(st.integers(min_value=1, max_value=loadable))
    middle = draw(st.none() | st.integers(min_value=1, max_value=loadable))
    autofit = draw(st.none() | st.integers(min_value=1, max_value=loadable))
    declared = draw(st.integers(min_value=loadable, max_value=600_000))
    min_context = draw(st.sampled_from([256, 1024, 2048, 4096]))
    threshold = draw(st.integers(min_value=min_context, max_value=400_000))
    granularity = draw(st.none() | st.integers(min_value=1, max_value=5000))
    align = draw(st.sampled_from([1, 256, 1024]))
    screen = draw(st.booleans())
    config = SearchConfig(
        declared=declared,
        threshold=threshold,
        min_context=min_context,
        granularity=granularity,
        max_iterations=400,
        align=align,
        screen=screen,
    )
    sim = Sim(loadable, usable, autofit, population=population, middle=middle)
    return sim, config


populations = st.sampled_from(list(Population))


def check_verdict(verdict: SearchResult, sim: Sim, config: SearchConfig, ceiling: int) -> None:
    """The target: never above the true limit (nor the caps), within the granularity below it,
    and the reported size judged loaded at exactly that size."""
    truth = min(sim.truth(config.upper), ceiling - 1)
    for kind, size, context in sim.calls:
        assert config.lower <= size <= config.upper
        assert (context if kind == "use" else size) < ceiling or kind == "use"
    if verdict.optimal is not None:
        assert verdict.optimal <= truth
    if truth < config.lower:
        assert verdict.optimal is None or verdict.optimal < config.lower
        return
    if verdict.stop_reason is StopReason.MAX_ITERATIONS:
        return
    assert verdict.converged
    assert verdict.optimal is not None
    assert truth - verdict.optimal < verdict.granularity or truth == verdict.optimal
    if verdict.failure_point is not None:
        assert verdict.optimal < verdict.failure_point <= verdict.optimal + verdict.granularity


def check_search(given_sim: Sim, config: SearchConfig) -> None:
    sim = given_sim.copy()  # an @example is reused
    loop = SearchLoop(sim, SearchState.start(config))
    verdict = loop.run()
    check_verdict(verdict, sim, config, config.upper + 1)
    if sim.population is Population.PROMPT_RULE:  # its recall is set by the prompt alone
        assert not loop.state.load_dependent
        assert not partial_fills(verdict)
    assert verdict.stop_reason is not StopReason.MAX_ITERATIONS
    if verdict.optimal is not None:
        assert verdict.optimal in verdicts(sim)
    # Each bisection (of the loadable limit, of the screens, of the verdicts) takes at most
    # `bits` steps; a verdict costs up to three probes (load, pre-screen, full prompt).
    bits = math.ceil(math.log2(max(2, config.upper / (config.granularity or 256))))
    assert verdict.iterations <= 5 * bits + 16
    seen_bad = config.upper + 1
    for point in verdict.points:  # never loads or fills at or above a failure of this run
        if point.kind is ProbeKind.LOAD or not point.screen:
            assert point.size < seen_bad
        else:
            assert point.context is not None and point.context <= seen_bad
        if point.bad_size is not None:
            seen_bad = min(seen_bad, point.bad_size)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models(Population.PROMPT_RULE))
# Auto-fit reduces to a size far below the limit: the bet on it costs two probes.
@example(
    (
        Sim(loadable=100_000, usable=256, autofit_to=256),
        SearchConfig(
            declared=162_989, threshold=162_989, min_context=256, granularity=5, max_iterations=400
        ),
    )
)
# A narrow bracket with a wide alignment: rounding down used to leave the upper part nearly
# whole, two wasted probes.
@example(
    (
        Sim(loadable=200_433, usable=200_013, autofit_to=256),
        SearchConfig(
            declared=264_231,
            threshold=267_911,
            min_context=256,
            granularity=9,
            max_iterations=400,
            align=1024,
        ),
    )
)
def test_property_prompt_rule_never_above_and_within_granularity(
    model: tuple[Sim, SearchConfig],
) -> None:
    check_search(*model)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models(Population.LOAD_SIZE))
# Loaded at its limit it recalls prompts up to half the window: screens there mislead.
@example(
    (
        Sim(loadable=60_000, usable=20_000, population=Population.LOAD_SIZE),
        SearchConfig(declared=65536, max_iterations=400),
    )
)
def test_property_load_size_never_above_and_within_granularity(
    model: tuple[Sim, SearchConfig],
) -> None:
    check_search(*model)


@settings(max_examples=EXAMPLES, deadline=None)
@given(populations.flatmap(models), st.integers(min_value=3, max_value=20))
def test_property_any_iteration_budget_is_safe(
    model: tuple[Sim, SearchConfig], budget: int
) -> None:
    sim, config = model
    limited = SearchConfig(
        declared=config.declared,
        threshold=config.threshold,
        min_context=config.min_context,
        granularity=config.granularity,
        max_iterations=budget,
        screen=config.screen,
    )
    verdict = run(sim, limited)
    assert verdict.iterations <= budget
    check_verdict(verdict, sim, limited, limited.upper + 1)


@settings(max_examples=EXAMPLES, deadline=None)
@given(populations.flatmap(models), st.data())
def test_property_resume_never_probes_at_or_above_known_bad(
    model: tuple[Sim, SearchConfig], data: st.DataObject
) -> None:
    sim, config = model
    truth = sim.truth(config.upper)
    known_bad = data.draw(st.integers(min_value=config.lower + 1, max_value=config.upper + 1))
    good_max = min(truth, known_bad - 1)
    # A known good size must be true; a model that works at no size in the range has none
    # (drawn, not filtered: filtering these out tripped Hypothesis's health check now and then).
    known_good = (
        data.draw(st.none() | st.integers(min_value=config.lower, max_value=good_max))
        if good_max >= config.lower
        else None
    )
    state = SearchState.start(config, known_good=known_good, known_bad=known_bad)
    verdict = run(sim, config, state)
    check_verdict(verdict, sim, config, known_bad)
    assert all(size < known_bad for kind, size, _ in sim.calls if kind == "load")
    if known_good is not None:
        assert verdict.optimal is not None and verdict.optimal >= known_good
    if verdict.optimal is not None:  # the registry's word is confirmed, never just repeated
        assert verdict.optimal in verdicts(sim)


@settings(max_examples=EXAMPLES, deadline=None)
@given(populations.flatmap(models), st.integers(min_value=0, max_value=30))
def test_property_crash_then_resume(model: tuple[Sim, SearchConfig], crash_at: int) -> None:
    sim, config = model
    rows: list[TestPoint] = []

    def before(_state: SearchState, request: ProbeRequest) -> None:
        rows.append(in_flight_point(request))

    def after(_state: SearchState, point: TestPoint) -> None:
        rows[-1] = point

    crashing = sim.copy(crash_at=crash_at)
    with suppress(RuntimeError):
        SearchLoop(crashing, SearchState.start(config), before=before, after=after).run()
    ceiling = config.upper + 1
    for row in rows:
        if row.outcome is Outcome.INTERRUPTED:
            ceiling = min(ceiling, row.size)
    completed = [r for r in rows if r.outcome is not Outcome.INTERRUPTED]
    interrupted = [r for r in rows if r.outcome is Outcome.INTERRUPTED]
    state = SearchState.start(config, history=completed, in_flight=interrupted)
    resumed = sim.copy()
    verdict = run(resumed, config, state)
    check_verdict(verdict, resumed, config, ceiling)
