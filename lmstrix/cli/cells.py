"""Table cells that fit their column: one line, cut with an ellipsis, never wrapped mid-word.

A table that is too wide for the terminal makes rich fold its cells, which splits ids and words
across lines. These helpers cut a cell to a width before it reaches rich, so every row stays one
line: ids are cut where the width ends, text at the last whole word that fits.
"""

from __future__ import annotations

ELLIPSIS = "…"


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) turned into one space."""
    return " ".join(text.split())


def cut(text: str, width: int) -> str:
    """``text`` if it fits in ``width`` characters, else its start and an ellipsis (for ids,
    where any prefix still tells the reader which one it is)."""
    if len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + ELLIPSIS


def cut_words(text: str, width: int) -> str:
    """``text`` on one line; if longer than ``width``, the whole words that fit and an ellipsis.
    A first word longer than the width is cut like an id (there is no word boundary to use)."""
    line = one_line(text)
    if len(line) <= width:
        return line
    room = max(width - 1, 0)
    head = line[: room + 1]  # one more: a space just past the room means the word ended there
    boundary = head.rfind(" ")
    if boundary <= 0:
        return cut(line, width)
    return line[:boundary].rstrip() + ELLIPSIS


def seconds_text(seconds: float) -> str:
    """A duration as people read it: ``0.42s``, ``12s``, ``3m``, ``1.5h``, ``2.0d``."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86_400:.1f}d"


__all__ = ["ELLIPSIS", "cut", "cut_words", "one_line", "seconds_text"]
