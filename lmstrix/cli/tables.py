"""Tables for people at a terminal: one line per row, fitted to the terminal's width.

The widths are decided here, not by rich (which folds cells, or drops whole columns, when a
table is too wide): the short columns (status, numbers) keep their width, and the long ones
(ids, models, hosts) share what is left, each cell cut with an ellipsis where its column ends
(an id keeps its start). A cell is never wrapped, so no word is split over two lines. ``--wide``
prints every cell whole, however wide the lines get. Errors do not go into cells: commands print
them under the table, one line each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from lmstrix.cli.cells import cut, one_line

GAP = 2  # characters between two columns
FLOOR = 8  # a shrinking column keeps at least this many characters (or its header's)
WIDE = 100_000  # the console width of --wide: wider than any row

Cell = str | Text


def wide_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--wide", is_flag=True, help="Show every cell whole (lines may exceed the terminal)."
    )(fn)


def fit_widths(natural: Sequence[int], shrink: Sequence[bool], width: int) -> list[int]:
    """Column widths whose sum with the gaps is at most ``width`` where that can be: fixed
    columns keep ``natural``, shrinking ones share the rest (a narrow one keeps its natural
    width and leaves the rest to the wider ones)."""
    widths = list(natural)
    if sum(natural) + GAP * (len(natural) - 1) <= width:
        return widths
    room = (
        width
        - GAP * (len(natural) - 1)
        - sum(n for n, s in zip(natural, shrink, strict=True) if not s)
    )
    todo = sorted((n, i) for i, (n, s) in enumerate(zip(natural, shrink, strict=True)) if s)
    while todo:
        share = room // len(todo)
        n, i = todo.pop(0)
        widths[i] = min(n, max(share, FLOOR))
        room -= widths[i]
    return widths


def _text(cell: Cell) -> Text:
    text = cell.copy() if isinstance(cell, Text) else Text(cell)
    text.plain = one_line(text.plain) if "\n" in text.plain else text.plain
    return text


def fitted_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    *,
    shrink: Sequence[str] = (),
    right: Sequence[str] = (),
    wide: bool = False,
    width: int | None = None,
) -> Table:
    """The rows under these headers, fitted to ``width`` (the terminal's by default) unless
    ``wide``. Columns named in ``shrink`` give way; ``right`` ones are right-aligned."""
    cells = [[_text(c) for c in row] for row in rows]
    natural = [max([len(h), *(len(r[i].plain) for r in cells)]) for i, h in enumerate(headers)]
    if wide:
        widths = natural
    else:
        limit = width if width is not None else Console().width
        widths = fit_widths(natural, [h in shrink for h in headers], limit)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, show_edge=False)
    for header, w in zip(headers, widths, strict=True):
        table.add_column(
            cut(header, w), no_wrap=True, width=w, justify="right" if header in right else "left"
        )
    for row in cells:
        for text, w in zip(row, widths, strict=True):
            if len(text.plain) > w:
                text.truncate(w, overflow="ellipsis")
        table.add_row(*row)
    return table


def print_table(table: Table, *, wide: bool = False) -> None:
    """Print a :func:`fitted_table` to stdout (``wide``: lines as long as the rows)."""
    console = Console(width=WIDE) if wide else Console()
    console.print(table, no_wrap=True, crop=not wide)


__all__ = ["GAP", "WIDE", "fit_widths", "fitted_table", "print_table", "wide_option"]
