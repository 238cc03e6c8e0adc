"""Cutting table cells to a width: one line, whole words, an ellipsis where something was cut."""

from __future__ import annotations

import pytest

from lmstrix.cli.cells import cut, cut_words, one_line


def test_one_line_joins_lines_and_runs_of_spaces() -> None:
    assert one_line("  two\nlines\t and   tabs \n") == "two lines and tabs"


@pytest.mark.parametrize(
    ("text", "width", "shown"),
    [
        ("fits", 4, "fits"),
        ("abcd efghi jk", 13, "abcd efghi jk"),
        ("abcd efghi jk", 12, "abcd efghi…"),
        ("abcd efghi jk", 11, "abcd efghi…"),
        ("abcd efghi jk", 10, "abcd…"),  # "abcd efghi…" would be 11
        ("abcd\n\nefghi jk", 12, "abcd efghi…"),
        ("supercalifragilistic word", 8, "superca…"),  # no word boundary to cut at
        ("ab", 0, "…"),
    ],
)
def test_cut_words_keeps_whole_words(text: str, width: int, shown: str) -> None:
    assert cut_words(text, width) == shown
    assert len(shown) <= max(width, 1)


def test_cut_ends_ids_with_an_ellipsis() -> None:
    assert cut("acme/model-7b", 13) == "acme/model-7b"
    assert cut("acme/model-7b", 8) == "acme/mo…"
