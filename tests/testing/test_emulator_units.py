"""Pure logic of the emulator: tokenizer, rule-based model, state transitions (no HTTP)."""

from __future__ import annotations

from typing import Any

import pytest

from lmstrix.testing import EmulatedModel, RuleBackend, fact_sentence, question
from lmstrix.testing.backend import ContextOverflow, LoadFailure
from lmstrix.testing.rules import UNKNOWN_ANSWER, reply_for
from lmstrix.testing.settings import EmulatorSettings
from lmstrix.testing.sse import parse_sse
from lmstrix.testing.state import (
    EmulatorState,
    MultipleModelsLoaded,
    NoModelsLoaded,
    UnknownInstance,
    UnknownModel,
    WrongModelType,
)
from lmstrix.testing.tokenizer import (
    MESSAGE_OVERHEAD,
    REPLY_PRIMER,
    chat_filler_messages,
    count_chat_tokens,
    count_tokens,
    filler_text,
    pieces,
    render_chat,
    tokenize,
    truncate_tokens,
)

SMALL = EmulatedModel(key="small", max_context_length=1000, loadable_limit=800, usable_limit=100)
EMBED = EmulatedModel(key="embed", type="embedding", max_context_length=512)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# --- tokenizer -------------------------------------------------------------------------------


def test_tokens_are_words_and_single_symbols() -> None:
    assert tokenize("2+3=") == ["2", "+", "3", "="]
    assert tokenize("Hello,  world!") == ["Hello", ",", "world", "!"]
    assert count_tokens("") == 0
    assert count_tokens("naïve café") == 2


def test_chat_template_overhead_is_fixed_and_additive() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+3="},
        {"role": "tool-call", "content": [{"type": "text", "text": "a b"}]},
    ]
    expected = 3 + 4 + 2 + 3 * MESSAGE_OVERHEAD + REPLY_PRIMER
    assert count_chat_tokens(messages) == expected
    assert count_tokens(render_chat(messages)) == expected


@pytest.mark.parametrize("n", [0, 1, 2, 7, 13, 100, 1234])
def test_filler_has_exactly_n_tokens_and_no_needle_words(n: int) -> None:
    text = filler_text(n, seed=n)
    assert count_tokens(text) == n
    words = set(tokenize(text.lower()))
    assert not words & {"the", "is", "what"}
    assert filler_text(n, seed=n) == text


def test_chat_filler_messages_hit_the_prompt_size() -> None:
    assert count_chat_tokens(chat_filler_messages(500)) == 500


def test_pieces_rejoin_and_truncate_keeps_whole_tokens() -> None:
    text = "  Hello, world! 1 2 3 "
    assert "".join(pieces(text)) == text
    assert len(pieces(text)) == count_tokens(text)
    assert truncate_tokens(text, 3) == "  Hello, world"
    assert truncate_tokens(text, 99) == text


# --- rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "answer"),
    [
        ("2+3=", "5"),
        ("What is 7 / 2?", "3.5"),
        ("compute 6 x 7", "42"),
        ("count to 4", "1 2 3 4"),
        ("Say: hi there", "hi there"),
        ("hello", "You said: hello"),
    ],
)
def test_rule_replies(prompt: str, answer: str) -> None:
    assert reply_for(user(prompt), render_chat(user(prompt))) == answer


def test_needle_is_recalled_only_inside_the_attended_window() -> None:
    content = f"{fact_sentence('vault code', '7391')} {filler_text(40)} {question('vault code')}"
    prompt_tokens = count_chat_tokens(user(content))
    fact_start = 3  # "[user]\n" precedes the fact
    backend = RuleBackend()
    seen = EmulatedModel(key="m", usable_limit=prompt_tokens - fact_start)
    missed = EmulatedModel(key="m", usable_limit=prompt_tokens - fact_start - 1)
    answer = backend.load(seen, 4096).complete(user(content), max_tokens=None)
    assert answer.text == "The vault code is 7391."
    forgot = backend.load(missed, 4096).complete(user(content), max_tokens=None)
    assert forgot.text == UNKNOWN_ANSWER
    assert "7391" not in forgot.text


def test_last_fact_wins_and_subject_matching_ignores_case_and_spacing() -> None:
    content = "The Door  Color is red. The door color is blue. What is the door color?"
    assert reply_for(user(content), content) == "The door color is blue."


def test_completion_respects_max_tokens_stop_and_context_edge() -> None:
    instance = RuleBackend().load(SMALL, 30)
    capped = instance.complete(user("count to 50"), max_tokens=5)
    assert (capped.text, capped.finish_reason, capped.completion_tokens) == (
        "1 2 3 4 5",
        "length",
        5,
    )
    stopped = instance.complete(user("count to 9"), max_tokens=None, stop=[" 4"])
    assert (stopped.text, stopped.finish_reason) == ("1 2 3", "stop")
    edge = instance.complete(user("count to 50"), max_tokens=None)
    assert edge.prompt_tokens + edge.completion_tokens == 30
    assert edge.finish_reason == "length"
    with pytest.raises(ContextOverflow) as overflow:
        instance.complete(user(filler_text(40)), max_tokens=None)
    assert (overflow.value.prompt_tokens, overflow.value.context_length) == (49, 30)


# --- state -----------------------------------------------------------------------------------


def make_state(**settings: object) -> EmulatorState:
    config = EmulatorSettings()
    config.update(settings)
    return EmulatorState([SMALL, EMBED], RuleBackend(), config)


def test_instances_are_numbered_and_unloaded_by_id() -> None:
    state = make_state()
    ids = [state.load("small", 100).id for _ in range(3)]
    assert ids == ["small", "small:2", "small:3"]
    state.unload("small:2")
    assert state.load("small", 100).id == "small:2"
    with pytest.raises(UnknownInstance):
        state.unload("nope")


def test_load_guardrail_auto_fit_and_overrides() -> None:
    state = make_state()
    with pytest.raises(LoadFailure, match=r"approximately \d+\.\d\d GB of memory"):
        state.load("small", 900)
    state.settings.auto_fit = True
    assert state.load("small", 900).context_length == 800
    state.settings.context_override = 512
    assert state.load("small", 100).context_length == 512
    state.settings.max_applied_context = 300
    assert state.load("small", 100).context_length == 300
    assert [r.applied_context for r in state.counters.snapshot().loads] == [800, 512, 300]
    assert state.counters.snapshot().load_failures == 1


def test_acquire_errors() -> None:
    state = make_state(jit=False)
    with pytest.raises(NoModelsLoaded):
        state.acquire("small", kind="llm")
    with pytest.raises(NoModelsLoaded):
        state.acquire(None, kind="llm")
    state.load("small", 100)
    state.load("small", 100)
    with pytest.raises(MultipleModelsLoaded):
        state.acquire(None, kind="llm")
    with pytest.raises(UnknownModel):
        state.acquire("ghost", kind="llm")
    with pytest.raises(WrongModelType):
        state.acquire("small", kind="embedding")
    instance, pending = state.acquire("small:2", kind="llm")
    assert (instance.id, pending) == ("small:2", False)


def test_jit_reserves_with_default_context_and_ttl_expires_lazily() -> None:
    state = make_state(default_context_length=700)
    instance, pending = state.acquire("small", kind="llm", ttl=10)
    assert pending and instance.status == "loading"
    state.complete_load(instance)
    assert (instance.context_length, instance.ttl) == (700, 10)
    state.clock.advance(9.9)
    assert state.expire_idle() == []
    state.clock.advance(0.2)
    assert state.expire_idle() == ["small"]
    assert [u.reason for u in state.counters.snapshot().unloads] == ["ttl"]


def test_simulated_clock_accounts_load_time() -> None:
    state = make_state(load_seconds=1.5, load_seconds_per_1k_tokens=1.0)
    instance = state.load("small", 500)
    assert instance.load_seconds == 2.0
    assert state.clock.spent == pytest.approx(2.0)


def test_parse_sse_handles_named_and_unnamed_frames() -> None:
    text = 'event: error\ndata: {"a":1}\n\ndata: [DONE]\n\n'
    assert parse_sse(text) == [("error", '{"a":1}'), (None, "[DONE]")]
