"""Needle prompts (lmstrix.domain.needle): sizing, nesting, the emulator's grammar, the checker."""

from __future__ import annotations

import re

import pytest

from lmstrix.api.exceptions import ValidationError
from lmstrix.core.context import TokenCalibration
from lmstrix.domain.needle import (
    Needle,
    answer_recalls,
    build_needle_prompt,
    filler_words,
    make_needle,
)
from lmstrix.testing import rules
from lmstrix.testing.backend import EmulatedModel
from lmstrix.testing.tokenizer import count_chat_tokens, count_tokens


def test_needle_is_deterministic_and_in_the_emulator_grammar() -> None:
    needle = make_needle(7)
    assert needle == make_needle(7)
    assert len({make_needle(seed) for seed in range(20)}) > 10
    assert needle.fact == rules.fact_sentence(needle.subject, needle.value)
    assert needle.question == rules.question(needle.subject)
    assert rules.recall(needle.fact, needle.subject) == needle.value
    assert re.fullmatch(r"\d{4}", needle.value)


def test_filler_never_reads_as_a_fact_or_a_question() -> None:
    stream = filler_words(3)
    words = [next(stream) for _ in range(5000)]
    lowered = {re.sub(r"\W", "", w.lower()) for w in words}
    assert not lowered & {"the", "is", "what"}
    text = " ".join(words)
    assert "?" not in text and "!" not in text
    assert not re.search(r"\d", text)
    again = filler_words(3)
    assert [next(again) for _ in range(5000)] == words  # deterministic


@pytest.mark.parametrize("target", [60, 61, 500, 2048, 8192, 32768])
def test_sized_to_the_target_with_an_exact_counter(target: int) -> None:
    prompt = build_needle_prompt(target, count_tokens, seed=1)
    assert prompt.tokens == count_tokens(prompt.text)
    assert target - 2 <= prompt.tokens <= target  # at most a "word." pair short
    assert prompt.text.index(prompt.needle.fact) < 100  # the fact is near the start
    # the question comes last, right after the instruction how to answer it
    assert prompt.text.endswith(f"\n\nAnswer with the code only. {prompt.needle.question}")


def test_a_256k_prompt_is_built_in_a_few_counter_calls() -> None:
    """The cost of sizing is the counter's work (a real tokenizer, or an HTTP round trip), so
    what is bounded is how often, and over how much text, the counter is called."""
    counted: list[int] = []

    def counting(text: str) -> int:
        counted.append(len(text))
        return count_tokens(text)

    prompt = build_needle_prompt(262_144, counting, seed=2)
    assert 262_142 <= prompt.tokens <= 262_144
    assert len(counted) <= 12
    assert sum(counted) <= 12 * len(prompt.text)  # never a word-by-word scan


def test_prompts_of_one_seed_are_nested() -> None:
    small = build_needle_prompt(3000, count_tokens, seed=4)
    large = build_needle_prompt(9000, count_tokens, seed=4)
    tail = "\n\nAnswer with the code only. " + small.question
    assert small.text.endswith(tail) and large.text.endswith(tail)
    assert large.text.startswith(small.text[: -len(tail)])
    assert small.needle == large.needle


def test_calibrated_estimate_sizes_prompts_for_a_real_tokenizer() -> None:
    first = build_needle_prompt(4000, seed=5)  # default estimate: 3.5 chars per token
    real = count_tokens(first.text)
    calibration = TokenCalibration().observe(len(first.text), real)
    sized = build_needle_prompt(50_000, calibration.estimate, seed=5)
    assert abs(count_tokens(sized.text) - 50_000) / 50_000 < 0.02


def test_emulator_recalls_the_fact_only_inside_its_usable_window() -> None:
    model = EmulatedModel("m", max_context_length=65536, usable_limit=10_000)
    instance = rules.RuleInstance(model, 65536)
    inside = build_needle_prompt(9_900, count_tokens, seed=6)
    outside = build_needle_prompt(10_100, count_tokens, seed=6)
    assert count_chat_tokens(inside.messages()) < 10_000
    answer = instance.complete(inside.messages(), max_tokens=32).text
    assert inside.passed(answer) and answer_recalls(answer, inside.needle)
    answer = instance.complete(outside.messages(), max_tokens=32).text
    assert answer == rules.UNKNOWN_ANSWER and not outside.passed(answer)


def test_answer_checker_is_loose_on_form_and_strict_on_content() -> None:
    needle = Needle("violet lantern code", "kestrel-4729")
    for answer in (
        "kestrel-4729",
        "KESTREL 4729",
        "The violet lantern code is kestrel-4729.",
        "  **Kestrel-4729**  ",
    ):
        assert answer_recalls(answer, needle), answer
    for wrong in ("", None, "I don't know.", "kestrel-4728", "4729", "kestrel"):
        assert not answer_recalls(wrong, needle), wrong


def test_custom_question_accepts_any_non_empty_answer() -> None:
    prompt = build_needle_prompt(500, count_tokens, question="Summarise the notes.")
    assert prompt.custom_question
    assert prompt.text.endswith("\n\nSummarise the notes.")
    assert prompt.passed("They are about rivers.")
    assert not prompt.passed("   ")
    with pytest.raises(ValidationError):
        build_needle_prompt(500, count_tokens, question="  ")


def test_bad_targets_are_rejected() -> None:
    with pytest.raises(ValidationError) as err:
        build_needle_prompt(10, count_tokens)
    assert err.value.field == "target_tokens"
    with pytest.raises(ValidationError):
        build_needle_prompt(2048.0, count_tokens)  # type: ignore[arg-type]
