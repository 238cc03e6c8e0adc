"""The pure context-limit search (lmstrix.domain.context_search) over simulated models."""

from __future__ import annotations

import math
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
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


@dataclass
class Sim:
    """A model with true limits: loads up to ``loadable`` (above: an error, or a silent
    reduction to ``autofit_to``), answers correctly up to ``usable`` tokens."""

    loadable: int
    usable: int
    autofit_to: int | None = None
    loaded: int | None = None
    calls: list[tuple[str, int, int | None]] = field(default_factory=list)
    crash_at: int | None = None  # raise on this call index (0-based): the worker died

    def _tick(self, kind: str, size: int, context: int | None) -> None:
        if self.crash_at is not None and len(self.calls) == self.crash_at:
            raise RuntimeError("worker killed")
        self.calls.append((kind, size, context))

    def load(self, size: int) -> LoadOutcome:
        self._tick("load", size, None)
        if size <= self.loadable:
            self.loaded = size
            return LoadOutcome(True, applied=size, seconds=1.0)
        if self.autofit_to is not None:
            self.loaded = self.autofit_to
            return LoadOutcome(True, applied=self.autofit_to, seconds=1.0)
        self.loaded = None
        return LoadOutcome(False, error="insufficient system resources", seconds=1.0)

    def use(self, size: int, context: int) -> UseOutcome:
        self._tick("use", size, context)
        assert self.loaded == context, "use probe on an instance that is not loaded"
        assert size <= context, "use probe larger than the loaded context"
        ok = size <= self.usable
        return UseOutcome(ok, prompt_tokens=size, answer="x" if ok else "I don't know.")


def run(sim: Sim, config: SearchConfig, state: SearchState | None = None) -> SearchResult:
    return SearchLoop(sim, state or SearchState.start(config)).run()


def sizes(sim: Sim, kind: str | None = None) -> list[int]:
    return [s for k, s, _ in sim.calls if kind is None or k == kind]


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


def test_loads_and_works_at_the_cap_costs_one_load_and_one_use() -> None:
    sim = Sim(loadable=100_000, usable=100_000)
    verdict = run(sim, SearchConfig(declared=32768))
    assert sim.calls == [("load", 32768, None), ("use", 32768, 32768)]
    assert verdict.optimal == 32768
    assert verdict.failure_point is None
    assert verdict.stop_reason is StopReason.AT_CAP
    assert verdict.converged
    assert (verdict.load_probes, verdict.use_probes, verdict.iterations) == (1, 1, 2)
    assert [p.outcome for p in verdict.points] == [Outcome.OK, Outcome.OK]


def test_loads_first_then_a_single_use_probe_at_the_loadable_limit() -> None:
    sim = Sim(loadable=40_000, usable=40_000)
    verdict = run(sim, SearchConfig(declared=131072, threshold=131072))
    assert sim.calls[0] == ("load", 131072, None)
    assert sizes(sim, "use") == [verdict.optimal]  # the one expensive probe
    assert verdict.optimal is not None
    assert 40_000 - verdict.granularity < verdict.optimal <= 40_000
    assert verdict.failure_point is not None and verdict.failure_point > 40_000
    assert verdict.stop_reason is StopReason.CONVERGED
    assert verdict.loadable == verdict.optimal


def test_usable_below_loadable_searches_down_on_the_loaded_instance() -> None:
    sim = Sim(loadable=60_000, usable=20_000)
    verdict = run(sim, SearchConfig(declared=65536))
    assert verdict.optimal is not None
    assert 20_000 - verdict.granularity < verdict.optimal <= 20_000
    first_use = next(i for i, c in enumerate(sim.calls) if c[0] == "use")
    after = sim.calls[first_use:]
    assert all(kind == "use" for kind, _, _ in after)  # no reload during the downward phase
    contexts = {context for _, _, context in after}
    assert len(contexts) == 1 and contexts.pop() == verdict.loadable
    assert verdict.loadable is not None and verdict.loadable > 59_000


def test_reload_for_use_loads_at_exactly_each_use_size() -> None:
    sim = Sim(loadable=60_000, usable=20_000)
    verdict = run(sim, SearchConfig(declared=65536, reload_for_use=True))
    assert verdict.optimal is not None and verdict.optimal <= 20_000
    for kind, size, context in sim.calls:
        if kind == "use":
            assert context == size


def test_exact_auto_fit_costs_two_loads_and_one_use() -> None:
    sim = Sim(loadable=45_000, usable=45_000, autofit_to=45_000)
    verdict = run(sim, SearchConfig(declared=131072, threshold=131072))
    assert sim.calls[:2] == [("load", 131072, None), ("use", 45_000, 45_000)]
    assert sim.calls[2][0] == "load" and 45_000 < sim.calls[2][1] <= 45_000 + 450
    assert len(sim.calls) == 3
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
    assert sizes(sim, "load") == [131072]  # everything else ran on the auto-fitted instance


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
    state = record(state, ProbeRequest(ProbeKind.USE, 32768, 32768), UseOutcome(False))
    assert state.loaded == 32768 and state.points[-1].outcome is Outcome.WRONG
    follow = next_probe(state)
    assert follow is not None and follow.kind is ProbeKind.USE and follow.context == 32768


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
        outcome = (
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
    assert all(30_000 < s < 40_000 for s in sizes(sim))
    assert verdict.optimal is not None and verdict.optimal > 39_000
    assert verdict.failure_point == 40_000


def test_converged_prior_knowledge_needs_no_probe() -> None:
    sim = Sim(loadable=100_000, usable=100_000)
    config = SearchConfig(declared=131072)
    state = SearchState.start(config, known_good=30_000, known_bad=30_200)
    verdict = run(sim, config, state)
    assert sim.calls == []
    assert verdict.optimal == 30_000 and verdict.stop_reason is StopReason.CONVERGED


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

limits = st.integers(min_value=500, max_value=300_000)


@st.composite
def models(draw: st.DrawFn) -> tuple[Sim, SearchConfig]:
    loadable = draw(limits)
    usable = draw(st.integers(min_value=1, max_value=loadable))
    autofit = draw(st.none() | st.integers(min_value=1, max_value=loadable))
    declared = draw(st.integers(min_value=loadable, max_value=600_000))
    min_context = draw(st.sampled_from([256, 1024, 2048, 4096]))
    threshold = draw(st.integers(min_value=min_context, max_value=400_000))
    granularity = draw(st.none() | st.integers(min_value=1, max_value=5000))
    align = draw(st.sampled_from([1, 256, 1024]))
    reload_for_use = draw(st.booleans())
    config = SearchConfig(
        declared=declared,
        threshold=threshold,
        min_context=min_context,
        granularity=granularity,
        max_iterations=80,
        align=align,
        reload_for_use=reload_for_use,
    )
    return Sim(loadable, usable, autofit_to=autofit), config


def check_verdict(verdict: SearchResult, sim: Sim, config: SearchConfig, ceiling: int) -> None:
    """The target: never above the true usable limit (nor the caps); within the granularity."""
    truth = min(sim.usable, config.upper, ceiling - 1)
    for size in sizes(sim):
        assert config.lower <= size <= config.upper
        assert size < ceiling
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


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models())
# Auto-fit reduces to a size far below the limit: the bet on it costs two probes (35 probes).
@example(
    (
        Sim(loadable=100_000, usable=256, autofit_to=256),
        SearchConfig(
            declared=162_989, threshold=162_989, min_context=256, granularity=5, max_iterations=80
        ),
    )
)
# A narrow bracket with a wide alignment: rounding down used to leave the upper part nearly
# whole, two wasted probes (37 probes; 35 since _split rounds only where it costs no step).
@example(
    (
        Sim(loadable=200_433, usable=200_013, autofit_to=256),
        SearchConfig(
            declared=264_231,
            threshold=267_911,
            min_context=256,
            granularity=9,
            max_iterations=80,
            align=1024,
        ),
    )
)
def test_property_never_above_and_within_granularity(model: tuple[Sim, SearchConfig]) -> None:
    given_sim, config = model
    sim = Sim(given_sim.loadable, given_sim.usable, given_sim.autofit_to)  # an @example is reused
    verdict = run(sim, config)
    check_verdict(verdict, sim, config, config.upper + 1)
    assert verdict.stop_reason is not StopReason.MAX_ITERATIONS
    # Each bisection (of the loadable limit, then of the usable one) takes at most `bits` probes:
    # its range is below `upper` and every split halves it. Around them: the load at the top;
    # when auto-fit reduces it, a use at the applied size and a load just above it (a bet that
    # auto-fit found the limit: 3 probes in all when it did, 2 extra when it did not); a reload
    # when the last bisection load did not leave the model at the loadable limit; the use at that
    # limit. That is 2 * bits + 5; with reload_for_use every use-bisection step is also a load.
    bits = math.ceil(math.log2(max(2, config.upper / (config.granularity or 256))))
    reloads = bits if config.reload_for_use else 0
    assert verdict.iterations <= 2 * bits + 5 + reloads
    seen_bad = config.upper + 1
    for point in verdict.points:  # never probes at or above a failure of this run
        assert point.size < seen_bad
        if point.failed:
            seen_bad = min(seen_bad, point.size)


@settings(max_examples=200, deadline=None)
@given(models(), st.integers(min_value=3, max_value=20))
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
    )
    verdict = run(sim, limited)
    assert verdict.iterations <= budget
    check_verdict(verdict, sim, limited, limited.upper + 1)


@settings(max_examples=200, deadline=None)
@given(models(), st.data())
def test_property_resume_never_probes_at_or_above_known_bad(
    model: tuple[Sim, SearchConfig], data: st.DataObject
) -> None:
    sim, config = model
    truth = min(sim.usable, config.upper)
    assume(truth >= config.lower)
    known_bad = data.draw(st.integers(min_value=config.lower + 1, max_value=config.upper + 1))
    good_max = min(truth, known_bad - 1)
    known_good = data.draw(st.none() | st.integers(min_value=config.lower, max_value=good_max))
    state = SearchState.start(config, known_good=known_good, known_bad=known_bad)
    verdict = run(sim, config, state)
    check_verdict(verdict, sim, config, known_bad)
    if known_good is not None:
        assert verdict.optimal is not None and verdict.optimal >= known_good


@settings(max_examples=200, deadline=None)
@given(models(), st.integers(min_value=0, max_value=30))
def test_property_crash_then_resume(model: tuple[Sim, SearchConfig], crash_at: int) -> None:
    sim, config = model
    rows: list[TestPoint] = []

    def before(_state: SearchState, request: ProbeRequest) -> None:
        rows.append(in_flight_point(request))

    def after(_state: SearchState, point: TestPoint) -> None:
        rows[-1] = point

    crashing = Sim(sim.loadable, sim.usable, sim.autofit_to, crash_at=crash_at)
    with suppress(RuntimeError):
        SearchLoop(crashing, SearchState.start(config), before=before, after=after).run()
    ceiling = config.upper + 1
    for row in rows:
        if row.outcome is Outcome.INTERRUPTED:
            ceiling = min(ceiling, row.size)
    completed = [r for r in rows if r.outcome is not Outcome.INTERRUPTED]
    interrupted = [r for r in rows if r.outcome is Outcome.INTERRUPTED]
    state = SearchState.start(config, history=completed, in_flight=interrupted)
    verdict = run(sim, config, state)
    check_verdict(verdict, sim, config, ceiling)
