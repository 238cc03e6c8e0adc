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
from lmstrix.api.types import ChatResult, LoadResult
from lmstrix.core.context_search import SearchConfig, SearchResult, SearchState, StopReason
from lmstrix.core.models import Model
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
from lmstrix.testing.tokenizer import count_chat_tokens


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


@pytest.mark.parametrize(
    ("fields", "kwargs", "field", "words"),
    [
        ({"type": "embedding"}, {}, "model_id", "embedding model"),
        ({}, {"threshold": 1000}, "threshold", "minimum context size 2048"),
        ({}, {"threshold": 0}, "threshold", "greater than or equal to 1"),
        ({}, {"ctx": 100}, "ctx", ">= 512"),
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
        text = messages[-1]["content"]
        fact = text.split("Remember this fact, you will be asked about it at the end. ")[1]
        answer = fact.split("\n")[0] if tokens <= self.window else "I don't know."
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

    def load(self, model: str, size: int, **_: Any) -> LoadResult:
        if size > 10000:
            raise ModelLoadError(model, "insufficient system resources", context_length=size)
        return LoadResult(model, f"{model}:2", size, min(size, 9000), load_time_seconds=3.0)


def probe_for(client: StubClient, budget: int = 32) -> HttpProbe:
    return HttpProbe(cast(LMStudioClient, client), "acme/m", output_tokens=budget)


def test_first_use_probe_is_resent_once_calibrated() -> None:
    client = StubClient(window=100_000)
    probe = probe_for(client)
    outcome = probe.use(8192, 8192)
    assert outcome.ok and outcome.prompt_tokens is not None
    target = 8192 - 32
    assert len(client.prompts) == 2  # the default estimate under-fills; one re-send fixes it
    assert client.prompts[0] < target - 16 <= client.prompts[1] <= target + 16
    assert outcome.seconds == pytest.approx(2 * 0.9)
    assert probe.last_speed == Speed(0.5, 25.0)
    # calibrated now: the next probe is sized right the first time
    assert probe.use(6144, 8192).ok and len(client.prompts) == 3
    assert abs(client.prompts[2] - (6144 - 32)) <= 16


def test_a_wrong_answer_from_a_short_prompt_decides_at_once() -> None:
    client = StubClient(window=1000)
    outcome = probe_for(client).use(8192, 8192)
    assert not outcome.ok and outcome.error is None  # a wrong answer, not an error
    assert len(client.prompts) == 1 and outcome.answer == "I don't know."


def test_overflow_recalibrates_and_resends() -> None:
    client = StubClient(window=100_000, overflow_above=4032)  # the loaded context
    probe = probe_for(client)
    probe.calibration = probe.calibration.observe(40_000, 1000)  # far off: over-fills
    outcome = probe.use(4032, 4032)
    assert outcome.ok and len(client.prompts) == 2
    assert client.prompts[0] > 4032 and abs(client.prompts[1] - 4000) <= 16


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
