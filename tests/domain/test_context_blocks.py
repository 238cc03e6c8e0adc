"""context_data composition: pure rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmstrix.domain.context_blocks import check_context_data, compose_prompt
from lmstrix.domain.errors import ValidationError


def test_no_blocks_leave_the_prompt_alone() -> None:
    assert compose_prompt(None, "hi") == "hi"
    assert compose_prompt({}, "hi") == "hi"


def test_blocks_in_order_under_headers_then_the_prompt() -> None:
    out = compose_prompt({"b doc": "\n\nsecond?\n", "a": ""}, "Q")
    assert out == "## b doc\n\nsecond?\n\n## a\n\n\n\n---\n\nQ"


def test_shapes_are_checked() -> None:
    path = Path("notes.md")
    assert check_context_data({"n": path, "t": "x"}) == {"n": path, "t": "x"}
    for bad, field in (
        ([("a", "b")], "context_data"),
        ({"a\nb": "x"}, "context_data"),
        ({"a": 1}, "context_data['a']"),
        ({"a": None}, "context_data['a']"),
    ):
        with pytest.raises(ValidationError) as err:
            check_context_data(bad)
        assert err.value.field == field
    with pytest.raises(ValidationError, match="is a file path"):
        compose_prompt({"n": path}, "Q")
