"""The pure pieces of the context-test job: planning (what is refused), registry verdicts, and
the use probe's prompt sizing (over a stub client that counts tokens like the emulator)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pytest

from lmstrix.api.client import LMStudioClient
from lmstrix.api.exceptions import (
    ContextLimitExceededError,
    InferenceError,
    ModelLoadError,
    ValidationError,
)
from lmstrix.core.models import Model
from lmstrix.domain.context_search import SearchConfig, SearchResult, SearchState, StopReason
from lmstrix.domain.host_types import ChatResult, LoadedInstance, LoadResult, ModelRecord
from lmstrix.domain.probe_sizing import FitCache, PromptBudget, TokenFit
from lmstrix.jobs.context_test import (
    DEFAULT_OUTPUT_TOKENS,
    REASONING_OUTPUT_TOKENS,
    HttpProbe,
    Known,
    Speed,
    partial_columns,
    plan_context_test,
    search_verdict,
    single_verdict,
)
from lmstrix.jobs.context_test.http_probe import MAX_SIZING_ATTEMPTS
from lmstrix.testing import rules
from lmstrix.testing.tokenizer import count_chat_tokens, render_chat


def model(**fields: Any) -> Model:
    base: dict[str, Any] = {"id": "acme/m", "host": "h1", "name": "m", "declared_context": 32768}
    return Model(**{**base, **fields})


# -- planning --------------------------------------------------------------------------------


def test_plan_budget_and_range() -> None:
    plan = plan_context_test(model(), threshold=16384)
    assert plan.output_tokens == DEFAULT_OUTPUT_TOKENS
    assert (plan.search_config().lower, plan.search_config().upper) == (2048, 16384)
    thinker = plan_context_test(model(capabilities=["reasoning"]))
    assert thinker.output_tokens == REASONING_OUTPUT_TOKENS
    assert plan_context_test(model(), output_tokens=8).output_tokens == 8
    single = plan_context_test(model(), ctx=4096).search_config()
    assert (single.lower, single.upper) == (4096, 4096)
    # a model that declares less than the minimum is tested at what it declares
    tiny = plan_context_test(model(declared_context=1024)).search_config()
    assert (tiny.lower, tiny.upper) == (1024, 1024)
    # ... unless the search is asked to go lower
    small = plan_context_test(model(declared_context=1024), min_context=256).search_config()
    assert (small.lower, small.upper) == (256, 1024)
    assert plan_context_test(model(), ctx=256).ctx == 256


@pytest.mark.parametrize(
    ("fields", "kwargs", "field", "words"),
    [
        ({"type": "embedding"}, {}, "model_id", "embedding model"),
        ({}, {"threshold": 1000}, "threshold", "minimum context size 2048"),
        ({}, {"threshold": 0}, "threshold", "greater than or equal to 1"),
        ({}, {"ctx": 100}, "ctx", ">= 256"),
        ({}, {"min_context": 255}, "min_context", ">= 256"),
        ({}, {"min_context": 4096, "threshold": 2048}, "min_context", "above the threshold"),
        ({}, {"min_context": 512, "ctx": 4096}, "min_context", "exactly one size"),
        ({}, {"min_context": 256, "output_tokens": 150}, "output_tokens", "too little room"),
        ({}, {"ctx": 65536}, "ctx", "declares"),
        ({"last_known_bad_context": 8192}, {"ctx": 8192}, "ctx", "--force"),
        ({}, {"question": "  "}, "prompt", "empty"),
        ({}, {"output_tokens": 2000}, "output_tokens", "too little room"),
    ],
)
def test_plan_refuses(
    fields: dict[str, Any], kwargs: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ValidationError) as err:
        plan_context_test(model(**fields), **kwargs)
    assert err.value.field == field and words in str(err.value)


def test_plan_force_or_reset_allow_a_known_bad_size() -> None:
    bad = model(last_known_bad_context=8192)
    assert plan_context_test(bad, ctx=8192, force=True).ctx == 8192
    assert plan_context_test(bad, ctx=9000, reset=True).reset is True


# -- verdicts --------------------------------------------------------------------------------


def res(
    optimal: int | None, failure: int | None, stop: StopReason, iterations: int = 5
) -> SearchResult:
    return SearchResult(
        optimal=optimal,
        failure_point=failure,
        loadable=optimal,
        stop_reason=stop,
        lower=2048,
        upper=16384,
        granularity=256,
        iterations=iterations,
        load_probes=iterations,
        use_probes=0,
        seconds=1.0,
    )


def test_search_verdict() -> None:
    known = Known(1, tested=4096, good=4096, bad=None, ttft=9.0, tps=9.0)
    cols = search_verdict(res(8192, 8448, StopReason.CONVERGED), known, Speed(1.5, 40.0))
    assert cols["tested_context"] == cols["last_known_good_context"] == 8192
    assert cols["last_known_bad_context"] == 8448
    assert (cols["test_status"], cols["test_error"]) == ("tested", None)
    assert (cols["time_to_first_token"], cols["tokens_per_second"]) == (1.5, 40.0)
    assert cols["last_tested_at"] is not None
    # no new measurement at a new size: no figures rather than another size's
    cols = search_verdict(res(8192, 8448, StopReason.CONVERGED), known, None)
    assert cols["time_to_first_token"] is None


def test_search_verdict_at_a_lower_cap_keeps_a_larger_size() -> None:
    known = Known(1, tested=30000, good=30000, bad=30208, ttft=2.0, tps=20.0)
    cols = search_verdict(res(16384, None, StopReason.AT_CAP, 0), known, None)
    assert cols["tested_context"] == 30000 and cols["last_known_bad_context"] == 30208
    assert cols["time_to_first_token"] == 2.0
    fresh = search_verdict(res(16384, None, StopReason.AT_CAP), known, None, reset=True)
    assert fresh["tested_context"] == 16384 and fresh["last_known_bad_context"] is None


def test_search_verdict_without_a_working_size() -> None:
    cols = search_verdict(res(None, 2048, StopReason.NO_WORKING_SIZE), Known(1), None)
    assert cols["test_status"] == "failed" and cols["tested_context"] is None
    assert "2048 already fails" in cols["test_error"]
    known = Known(1, bad=2048)
    cols = search_verdict(res(None, 2048, StopReason.NO_WORKING_SIZE, 0), known, None)
    assert "reset" in cols["test_error"]


def test_single_verdict() -> None:
    known = Known(1, tested=8192, good=8192, bad=12000, ttft=1.0, tps=10.0)
    up = single_verdict(12000, True, None, known, Speed(2.0, 5.0))
    assert up["tested_context"] == 12000 and up["last_known_bad_context"] is None
    assert (up["time_to_first_token"], up["test_status"]) == (2.0, "tested")
    below = single_verdict(4096, True, None, known, Speed(0.5, 50.0))
    assert below["tested_context"] == 8192 and below["time_to_first_token"] == 1.0
    down = single_verdict(6000, False, "wrong answer", known, None)
    assert down["tested_context"] is None and down["last_known_good_context"] is None
    assert down["last_known_bad_context"] == 6000 and down["test_status"] == "failed"
    assert down["test_error"] == "failed at 6000: wrong answer"


def test_partial_columns_merge_what_a_stopped_run_learnt() -> None:
    config = SearchConfig(declared=32768, threshold=32768)
    state = SearchState.start(config, in_flight=[20000])
    known = Known(1, tested=4096, good=4096, bad=24000, status="testing")
    cols = partial_columns(state, known, error=None)
    assert cols == {
        "test_status": "tested",
        "last_known_good_context": 4096,
        "last_known_bad_context": 20000,
    }
    below = SearchState.start(config, in_flight=[3000])
    cols = partial_columns(below, known, error="test stopped: x")
    assert cols["last_known_good_context"] is None and cols["last_known_bad_context"] == 3000
    assert cols["test_error"] == "test stopped: x"
    fresh = partial_columns(SearchState.start(config), known, error=None, reset=True)
    assert fresh["last_known_bad_context"] is None and fresh["last_known_good_context"] is None


# -- the probe's sizing ----------------------------------------------------------------------


class StubClient:
    """Counts prompt tokens like the emulator and recalls the needle within ``window``."""

    def __init__(self, window: int, *, overflow_above: int | None = None) -> None:
        self.window = window
        self.overflow_above = overflow_above
        self.prompts: list[int] = []
        self.fail_with: Exception | None = None
        self.models: list[ModelRecord] = []  # what the host reports as loaded

    def chat_completion(
        self, model: str, messages: Sequence[dict[str, str]], **_: Any
    ) -> ChatResult:
        if self.fail_with is not None:
            raise self.fail_with
        tokens = count_chat_tokens(messages)
        self.prompts.append(tokens)
        if self.overflow_above is not None and tokens > self.overflow_above:
            raise ContextLimitExceededError(
                model, prompt_tokens=tokens, context_limit=self.overflow_above
            )
        answer = rules.reply_for(messages, "" if tokens > self.window else render_chat(messages))
        return ChatResult(
            model=model,
            content=answer,
            prompt_tokens=tokens,
            completion_tokens=10,
            total_tokens=tokens + 10,
            finish_reason="stop",
            stop_reason="eosFound",
            tokens_per_second=25.0,
            time_to_first_token=0.5,
            generation_time=0.4,
            wall_time=0.01,
        )

    def list_models(self) -> list[ModelRecord]:
        return self.models

    def load(self, model: str, size: int, **_: Any) -> LoadResult:
        if size > 10000:
            raise ModelLoadError(model, "insufficient system resources", context_length=size)
        return LoadResult(model, f"{model}:2", size, min(size, 9000), load_time_seconds=3.0)


def probe_for(client: StubClient, budget: int = 32) -> HttpProbe:
    return HttpProbe(cast(LMStudioClient, client), "acme/m", output_tokens=budget, fits=FitCache())


def test_budget_keeps_the_answer_room_and_a_small_margin() -> None:
    small = PromptBudget(256, 64)
    assert (small.limit, small.margin, small.target, small.low) == (192, 8, 184, 176)
    big = PromptBudget(65536, 64)
    assert (big.limit, big.margin, big.target) == (65472, 327, 65145)
    assert big.accepts(big.limit) and big.accepts(big.low)
    assert not big.accepts(big.limit + 1) and not big.accepts(big.low - 1)


def test_fit_interpolates_between_counts_and_scales_outside_them() -> None:
    fit = TokenFit()
    assert fit.estimate_chars(350) == 100  # the shared default, 3.5 characters per token
    fit = fit.observe(1000, 210).observe(3000, 610)  # 10 tokens of overhead, 5 chars a token
    assert fit.estimate_chars(2000) == 410  # exact between two counts
    assert fit.estimate_chars(6000) == 1210  # on their line beyond them (far enough apart)
    assert fit.estimate_chars(500) == 110
    close = TokenFit().observe(3000, 610).observe(2900, 589)  # too close to extend as a line
    assert close.estimate_chars(6000) == 1220  # the nearest count's ratio
    assert fit.observe(0, 5) == fit and fit.observe(3000, 600).points[-1] == (3000, 600)
    assert len(fit.observe(3000, 600).points) == 2  # a newer count of the same text replaces


@pytest.mark.parametrize("size", [256, 512, 2048, 8192, 32768, 262_144])
def test_a_fresh_probe_lands_within_the_budget(size: int) -> None:
    client = StubClient(window=10**9)
    outcome = probe_for(client, budget=64).use(size, size)
    budget = PromptBudget(size, 64)
    assert outcome.ok and outcome.prompt_tokens == client.prompts[-1]
    assert budget.accepts(client.prompts[-1])
    assert abs(client.prompts[-1] - budget.target) <= budget.margin
    # the default ratio under-fills; the second send scales by the real ratio (short by the
    # template's share at small sizes), a third lies on the line through two real counts
    assert 2 <= len(client.prompts) <= 3


def test_first_use_probe_is_resent_once_calibrated() -> None:
    client = StubClient(window=100_000)
    probe = probe_for(client)
    outcome = probe.use(8192, 8192)
    assert outcome.ok and outcome.prompt_tokens is not None
    budget = PromptBudget(8192, 32)
    sends = probe.last_sends
    assert len(client.prompts) == sends and 2 <= sends <= 3
    assert client.prompts[0] < budget.low and budget.accepts(client.prompts[-1])
    assert outcome.seconds == pytest.approx(sends * 0.9)  # every send counts
    assert probe.last_speed == Speed(0.5, 25.0)
    # calibrated now: later probes, above or below, land within a send or two (a line through
    # real counts is off only by how unevenly the filler packs into tokens)
    sends = []
    for size in (6144, 2048, 8100, 512, 30000, 4096):
        assert probe.use(size, 32768).ok and PromptBudget(size, 32).accepts(client.prompts[-1])
        sends.append(probe.last_sends)
    assert max(sends) <= 2 and sends.count(1) >= 4, sends


def test_the_fit_is_shared_by_later_probes_of_the_model_on_the_host() -> None:
    fits = FitCache()
    client = StubClient(window=100_000)
    first = HttpProbe(cast(LMStudioClient, client), "acme/m", fits=fits)
    assert first.use(4096, 4096).ok and first.last_sends > 1
    again = HttpProbe(cast(LMStudioClient, client), "acme/m", fits=fits)
    assert again.use(3000, 4096).ok and again.last_sends == 1
    other = HttpProbe(cast(LMStudioClient, client), "acme/other", fits=fits)
    assert not other.fit.observed


def test_a_wrong_answer_from_a_short_prompt_is_resent_at_the_size() -> None:
    client = StubClient(window=1000)
    probe = probe_for(client)
    outcome = probe.use(8192, 8192)
    assert not outcome.ok and outcome.error is None  # a wrong answer, not an error
    assert outcome.answer is not None and "I don't know" in outcome.answer
    assert len(client.prompts) == 2
    assert PromptBudget(8192, 32).accepts(outcome.prompt_tokens or 0)


def test_overflow_recalibrates_and_resends() -> None:
    client = StubClient(window=100_000, overflow_above=4032)  # the loaded context
    probe = probe_for(client)
    dense = TokenFit(default_chars_per_token=40.0)  # a far-off default: over-fills
    probe.fits.put(probe.host, "acme/m", dense)
    outcome = probe.use(4032, 4032)
    assert outcome.ok and len(client.prompts) == 2
    assert client.prompts[0] > 4032 and PromptBudget(4032, 32).accepts(client.prompts[1])


def test_sizing_gives_up_after_the_last_send() -> None:
    client = StubClient(window=100_000, overflow_above=100)  # the loaded instance holds less
    outcome = probe_for(client).use(4096, 4096)
    assert not outcome.ok and "context" in (outcome.error or "").lower()
    assert len(client.prompts) == MAX_SIZING_ATTEMPTS


def test_instance_errors_are_failures_at_the_size() -> None:
    client = StubClient(window=100_000)
    client.fail_with = InferenceError("acme/m", "Model was unloaded.")
    outcome = probe_for(client).use(4096, 4096)
    assert not outcome.ok and "unloaded" in (outcome.error or "")


def test_load_probe_reads_back_what_was_applied() -> None:
    probe = probe_for(StubClient(window=1))
    ok = probe.load(9500)
    assert ok.ok and ok.applied == 9000 and ok.seconds == 3.0
    assert probe.instance_id == "acme/m:2"
    failed = probe.load(20000)
    assert not failed.ok and failed.error == "insufficient system resources"
    assert probe.instance_id is None


def test_use_probe_asks_every_depth_and_names_the_ones_missed() -> None:
    client = StubClient(window=100_000)
    probe = HttpProbe(cast(LMStudioClient, client), "acme/m", output_tokens=32, fits=FitCache())
    outcome = probe.use(4096, 4096)
    assert outcome.ok and outcome.failed_depths == () and not outcome.disturbed
    client.window = 1
    outcome = probe.use(4096, 4096)
    assert not outcome.ok and outcome.failed_depths == (0.0, 0.5, 1.0)


def test_a_screen_is_a_cut_of_the_instance_layout() -> None:
    client = StubClient(window=100_000)
    probe = probe_for(client)
    assert probe.use(2048, 8192).ok
    assert PromptBudget(2048, 32).accepts(client.prompts[-1])


def test_another_clients_instance_flags_the_probe_as_disturbed() -> None:
    client = StubClient(window=100_000)
    probe = probe_for(client)
    probe.load(4096)
    mine = LoadedInstance(id="acme/m:2", context_length=4096)
    client.models = [ModelRecord(key="acme/m", loaded_instances=(mine,))]
    assert not probe.use(4096, 4096).disturbed
    other = LoadedInstance(id="other/x", context_length=8192)
    client.models.append(ModelRecord(key="other/x", loaded_instances=(other,)))
    assert probe.use(4096, 4096).disturbed
