"""The simulated models' oracle search (lmstrix.testing.search_sim): the bound the context-search
benchmark prints must itself be sound, whatever prior it is given."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmstrix.testing.search_sim import Population, SimModel, oracle_search, revealing_fill

PRIORS: dict[str, Callable[[int, int], float]] = {
    "uniform": lambda n, loadable: n / loadable,
    "all at the top": lambda n, loadable: 0.0,
    "all at the bottom": lambda n, loadable: 1.0,
}


@pytest.mark.parametrize("depth", [0.0, 0.5])
def test_revealing_fill_is_the_smallest_prompt_an_overloaded_instance_fails(depth: float) -> None:
    model = SimModel(Population.LOAD_SIZE, loadable=8192, limits={depth: 4000})
    model.load(6001)
    assert model.use(revealing_fill(6001) - 1, 6001).ok
    outcome = model.use(revealing_fill(6001), 6001)
    assert not outcome.ok
    assert outcome.failed_depths == (depth,)


@settings(max_examples=60, deadline=None)
@given(
    loadable=st.integers(min_value=2048, max_value=16384),
    start=st.floats(min_value=0.05, max_value=1.0),
    middle=st.floats(min_value=0.05, max_value=1.0),
    autofit=st.booleans(),
    prior=st.sampled_from(sorted(PRIORS)),
    exhaustive=st.booleans(),
)
def test_oracle_is_sound_and_within_the_granularity_whatever_its_prior(
    loadable: int, start: float, middle: float, autofit: bool, prior: str, exhaustive: bool
) -> None:
    limits = {0.0: max(2048, int(loadable * start)), 0.5: max(2048, int(loadable * middle))}
    model = SimModel(
        Population.LOAD_SIZE, loadable, limits, autofit_to=loadable if autofit else None
    )
    found = oracle_search(
        model, 2048, 20000, lambda n: PRIORS[prior](n, loadable), exhaustive=exhaustive
    )
    truth = model.truth(20000)
    assert found is not None
    assert found <= truth
    assert truth - found < max(256, found // 100)
    assert ("use", found, found) in model.calls  # a full prompt, loaded at exactly that size
    assert all(size <= loadable for kind, size, _ in model.calls if kind == "load")


def test_oracle_knows_the_load_size_rule_only() -> None:
    model = SimModel(Population.PROMPT_RULE, loadable=8192, limits={})
    with pytest.raises(ValueError, match="load-size"):
        oracle_search(model, 2048, 8192, lambda n: 0.0)
