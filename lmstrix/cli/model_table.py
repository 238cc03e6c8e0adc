"""The registry as a table for people: compact enough for an 80-column terminal.

``lmstrix list`` and ``lmstrix demo`` print it; ``--json`` has the exact numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.markup import escape
from rich.table import Table

from lmstrix.domain.model import Model

STATUS_LABELS = {
    "untested": "untested",
    "testing": "[yellow]testing[/]",
    "tested": "[green]tested[/]",
    "failed": "[red]failed[/]",
}

_CAP_LETTERS = {"vision": "V", "tools": "T", "tool_use": "T", "reasoning": "R"}


def _caps(names: Sequence[str]) -> str:
    letters = sorted({_CAP_LETTERS.get(n, n[:1].upper()) for n in names})
    return "".join(letters) or "-"


def _ctx(v: int | None) -> str:
    """Context sizes as people say them: 131072 -> 128k, 12000 -> 11.7k."""
    if not v:
        return "-"
    if v < 1024:
        return str(v)
    return f"{v // 1024}k" if v % 1024 == 0 else f"{v / 1024:.1f}k"


def _size(m: Model) -> str:
    return f"{m.size_bytes / 1e9:.1f}G" if m.size_bytes else "-"


def models_table(models: Sequence[Model]) -> Table:
    # Compact enough for an 80-column terminal: contexts in k (1024 tokens), one host column
    # only when there are several hosts. --json has the exact numbers.
    several_hosts = len({m.host for m in models}) > 1
    table = Table(
        title=f"{len(models)} model(s)", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
    )
    table.add_column("Model", overflow="fold", min_width=22)
    if several_hosts:
        table.add_column("Host", overflow="fold", max_width=14)
    for col in ("Size", "Card", "Tested", "Good/Bad", "Status", "Tok/s"):
        table.add_column(col, justify="left" if col == "Status" else "right", no_wrap=True)
    table.add_column("Caps", no_wrap=True)
    table.caption = "Card: declared context. k: 1024 tokens. Caps: V vision, T tools, R reasoning."
    for m in models:
        name = escape(m.id) if m.present else f"[dim]{escape(m.id)} (missing)[/]"
        good_bad = f"{_ctx(m.last_known_good_context)}/{_ctx(m.last_known_bad_context)}"
        row = [
            name,
            *([escape(m.host)] if several_hosts else []),
            _size(m),
            _ctx(m.declared_context),
            _ctx(m.tested_context),
            good_bad,
            STATUS_LABELS.get(m.test_status, escape(m.test_status)),
            f"{m.tokens_per_second:.1f}" if m.tokens_per_second else "-",
            _caps(m.capabilities),
        ]
        table.add_row(*row)
    return table


__all__ = ["models_table"]
