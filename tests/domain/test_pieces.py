"""PieceAssembler: whatever order and loss the channel shows a reader, the text handed on plus
the remainder from the row is the answer, once, with nothing missing or doubled."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lmstrix.domain.pieces import Piece, PieceAssembler


def _pieces(texts: list[str], attempt: int = 1) -> list[Piece]:
    return [Piece(attempt, i, t) for i, t in enumerate(texts)]


def test_in_order_pieces_are_handed_on_as_they_come() -> None:
    asm = PieceAssembler()
    assert [asm.accept(p) for p in _pieces(["He", "llo", "!"])] == ["He", "llo", "!"]
    assert asm.accept(Piece(0, 0, final=True)) is None
    assert asm.final
    assert asm.remainder("Hello!") == ""


def test_a_gap_holds_back_the_rest_and_the_row_fills_it() -> None:
    asm = PieceAssembler()
    out = [asm.accept(p) for p in [Piece(1, 0, "a"), Piece(1, 2, "c"), Piece(1, 3, "d")]]
    assert out == ["a", None, None]
    assert asm.remainder("abcd") == "bcd"


def test_a_reader_that_joins_after_trimming_gets_everything_from_the_row() -> None:
    asm = PieceAssembler()
    assert asm.accept(Piece(1, 5, "f")) is None
    assert asm.remainder("abcdef") == "abcdef"


def test_a_new_attempt_starts_over_and_is_counted_as_a_restart() -> None:
    asm = PieceAssembler()
    for p in _pieces(["x", "y"], attempt=1):
        asm.accept(p)
    assert asm.accept(Piece(2, 0, "A")) == "A"
    assert asm.restarts == 1
    assert asm.accept(Piece(1, 2, "z")) is None  # a late piece of the old attempt
    assert asm.delivered == "A"
    assert asm.remainder("AB") == "B"


def test_a_retry_before_any_text_is_not_a_restart() -> None:
    asm = PieceAssembler()
    assert asm.accept(Piece(2, 0, "A")) == "A"
    assert asm.restarts == 0


def test_a_remainder_that_does_not_continue_the_pieces_is_not_invented() -> None:
    asm = PieceAssembler()
    asm.accept(Piece(1, 0, "abc"))
    assert asm.remainder("xyz") == ""
    assert asm.remainder("ab") == ""


answers = st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=30)


@settings(max_examples=300)
@given(answers, st.data())
def test_any_loss_pattern_ends_with_the_whole_answer_once(
    texts: list[str], data: st.DataObject
) -> None:
    # The channel keeps a suffix (trimmed from the front, or the reader joined late) and the
    # reader may stop reading at any point; what it hands on plus the remainder is the answer.
    published = _pieces(texts)
    first = data.draw(st.integers(0, len(published)), label="first kept")
    last = data.draw(st.integers(first, len(published)), label="read up to")
    asm = PieceAssembler()
    handed = [t for p in published[first:last] if (t := asm.accept(p)) is not None]
    answer = "".join(texts)
    assert "".join(handed) + asm.remainder(answer) == answer
    if first == 0:
        assert handed == texts[:last]
