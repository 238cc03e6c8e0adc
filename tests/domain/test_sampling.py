"""Which sampling fields reach which chat endpoint, and how ``stop`` and the ranges are checked."""

from __future__ import annotations

import pytest

from lmstrix.domain.errors import ValidationError
from lmstrix.domain.requests import MAX_STOP_STRINGS, InferenceOptions, stop_strings
from lmstrix.domain.sampling import (
    CHAT_COMPLETIONS_FIELDS,
    NATIVE_CHAT_FIELDS,
    not_taken,
    sampling_body,
)


def test_chat_completions_take_stop_and_seed_but_not_min_p() -> None:
    given = {"temperature": 0.5, "min_p": 0.1, "stop": "END", "seed": 1, "top_k": None}
    body, dropped = sampling_body(given, CHAT_COMPLETIONS_FIELDS)
    assert body == {"temperature": 0.5, "stop": ["END"], "seed": 1}
    assert dropped == ["min_p"]


def test_native_chat_takes_min_p_but_not_stop_or_seed() -> None:
    body, dropped = sampling_body({"min_p": 0.1, "stop": ("a",), "seed": 1}, NATIVE_CHAT_FIELDS)
    assert body == {"min_p": 0.1}
    assert dropped == ["seed", "stop"]


def test_not_taken_ignores_keys_that_are_not_sampling_options() -> None:
    assert not_taken({"out_ctx": "auto", "max_tokens": 5, "min_p": 0.2}) == ["min_p"]
    assert not_taken({"min_p": None}) == []


def test_stop_is_one_string_or_a_list_of_non_empty_strings() -> None:
    assert stop_strings("x") == ("x",)
    assert stop_strings(["a", "b"]) == ("a", "b")
    assert stop_strings(()) is None
    for bad in (3, ["a", ""], ["a", 1], b"x", ["s"] * (MAX_STOP_STRINGS + 1)):
        with pytest.raises(ValidationError) as err:
            stop_strings(bad)
        assert err.value.field == "stop"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("repeat_penalty", 0.0),
        ("repeat_penalty", "1.1"),
        ("min_p", -0.1),
        ("min_p", float("nan")),
        ("seed", 1.0),
        ("seed", True),
        ("seed", -2),
    ],
)
def test_options_are_checked_strictly(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as err:
        InferenceOptions.of(**{field: value})
    assert err.value.field == field


def test_options_keep_what_was_given() -> None:
    o = InferenceOptions.of(repeat_penalty=1, min_p=0.05, stop=["a"], seed=0)
    assert (o.repeat_penalty, o.min_p, o.stop, o.seed) == (1, 0.05, ("a",), 0)
