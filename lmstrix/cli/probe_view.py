"""The probes of a running context test as people watch them: a live table on a terminal, one
line per finished probe otherwise (a log, a pipe)."""

from __future__ import annotations

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from lmstrix.core.context_tester import ProbeRow

OUTCOME_LABELS = {
    "in_flight": "[yellow]running[/]",
    "ok": "[green]ok[/]",
    "reduced": "[yellow]reduced[/]",
    "failed": "[red]failed[/]",
}


def probe_cells(index: int, row: ProbeRow) -> list[str]:
    """A probe as table cells: #, kind, size, outcome, seconds, detail."""
    seconds = "" if row.seconds is None else f"{row.seconds:.2f}s"
    detail = ""
    if row.kind == "load" and row.applied_context and row.applied_context != row.size:
        detail = f"applied {row.applied_context}"
    elif row.kind == "use" and row.prompt_tokens:
        detail = f"{row.prompt_tokens} prompt tokens"
    if row.error:
        # LM Studio's messages run to paragraphs; their first sentence says what happened.
        first = row.error.split(". ", 1)[0].rstrip(".")
        detail = f"{detail}; {first}" if detail else first
    return [str(index), row.kind, str(row.size), row.outcome, seconds, detail[:100]]


class ProbeView:
    """One row per probe: a live table on a terminal, a line per finished probe otherwise."""

    def __init__(self, console: Console, title: str) -> None:
        self.console = console
        self.title = title
        self.rows: dict[int, ProbeRow] = {}
        self.live: Live | None = None

    def __enter__(self) -> ProbeView:
        if self.console.is_terminal:
            self.live = Live(self._table(), console=self.console, auto_refresh=False)
            self.live.__enter__()
        else:
            self.console.print(self.title, markup=False, highlight=False)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def update(self, row: ProbeRow) -> None:
        self.rows[row.id] = row
        if self.live is not None:
            self.live.update(self._table(), refresh=True)
        elif row.outcome != "in_flight":
            cells = probe_cells(len(self.rows), row)
            self.console.print(
                f"  {cells[0]:>3} {cells[1]:<4} {cells[2]:>7} {cells[3]:<8} {cells[4]:>8}  "
                f"{cells[5]}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

    def _table(self) -> Table:
        table = Table(title=escape(self.title), title_justify="left")
        for name, justify in (
            ("#", "right"),
            ("probe", "left"),
            ("size", "right"),
            ("outcome", "left"),
            ("time", "right"),
            ("detail", "left"),
        ):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for i, row in enumerate(self.rows.values(), 1):
            cells = [escape(c) for c in probe_cells(i, row)]
            cells[3] = OUTCOME_LABELS.get(row.outcome, cells[3])
            table.add_row(*cells)
        return table


__all__ = ["ProbeView", "probe_cells"]
