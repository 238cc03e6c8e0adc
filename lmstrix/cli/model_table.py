"""The registry as a table for people: compact enough for an 80-column terminal.

``lmstrix list`` and ``lmstrix demo`` print it; ``--json`` has the exact numbers.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from rich.table import Table
from rich.text import Text

from lmstrix.cli.tables import fitted_table
from lmstrix.domain.model import Model

STATUS_STYLES = {"testing": "yellow", "tested": "green", "failed": "red"}
COLUMNS = ("Size", "Card", "Tested", "Good/Bad", "Status", "Tok/s", "Caps")
CAPTION = "Card: declared context. k: 1024 tokens. Caps: V vision, T tools, R reasoning."

# The mark of a model whose host the configuration no longer names.
UNCONFIGURED = "(host not configured)"

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


def _model_cell(m: Model, unconfigured: Collection[str]) -> Text:
    if m.host in unconfigured:
        return Text(f"{m.id} {UNCONFIGURED}", style="dim")
    return Text(m.id) if m.present else Text(f"{m.id} (missing)", style="dim")


def models_table(
    models: Sequence[Model], *, wide: bool = False, unconfigured: Collection[str] = ()
) -> Table:
    """One line per model, fitted to the terminal (see :mod:`lmstrix.cli.tables`): contexts in
    k (1024 tokens), a host column only when there are several hosts; models of the
    ``unconfigured`` hosts marked as such, models gone from their host as missing. --json has
    the exact numbers."""
    several_hosts = len({m.host for m in models}) > 1
    headers = ["Model", *(["Host"] if several_hosts else []), *COLUMNS]
    rows: list[list[str | Text]] = []
    for m in models:
        good_bad = f"{_ctx(m.last_known_good_context)}/{_ctx(m.last_known_bad_context)}"
        rows.append(
            [
                _model_cell(m, unconfigured),
                *([m.host] if several_hosts else []),
                _size(m),
                _ctx(m.declared_context),
                _ctx(m.tested_context),
                good_bad,
                Text(m.test_status, style=STATUS_STYLES.get(m.test_status, "")),
                f"{m.tokens_per_second:.1f}" if m.tokens_per_second else "-",
                _caps(m.capabilities),
            ]
        )
    table = fitted_table(
        headers,
        rows,
        shrink=("Model", "Host"),
        right=("Size", "Card", "Tested", "Good/Bad", "Tok/s"),
        wide=wide,
    )
    table.title = f"{len(models)} model(s)"
    table.caption = CAPTION
    return table


__all__ = ["UNCONFIGURED", "models_table"]
