"""``lmstrix compare``: one prompt on several models, side by side.

A thin wrapper over :class:`~lmstrix.utils.comparison.ModelComparator`: every prompt is queued
first and then waited for, so each host's worker can run its models in the order that needs the
fewest model swaps. The table fits the terminal (one line per model, ids and responses cut with
an ellipsis); ``--json`` has the full responses and errors.

Exit codes: 0 when every model answered, ``SOME_FAILED`` (11) when at least one did not (its row
and a line on stderr say why); errors before anything ran keep their usual codes.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from lmstrix.cli.cells import cut, cut_words, one_line
from lmstrix.cli.errors import SOME_FAILED, handle_errors
from lmstrix.cli.output import echo_json
from lmstrix.cli.prompt_input import prompt_file_option, read_prompt
from lmstrix.utils.comparison import ModelComparator

METRICS = ("response_time", "tokens_per_second", "response_length")
# Fields of each --json object, in order.
JSON_FIELDS = ("model_id", "host", "succeeded", *METRICS, "response", "error", "job_id")

_GAP = 2  # characters between two columns of the table
_MIN_RESPONSE = 16  # the response column gets at least this much before ids are cut further


def _number(value: float | None) -> float | None:
    """A metric for JSON: NaN (not reported, or failed) becomes null."""
    return None if value is None or math.isnan(value) else value


def json_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {f: _number(row.get(f)) if f in METRICS else row.get(f) for f in JSON_FIELDS}
        for row in rows
    ]


def _shown(value: Any, spec: str, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:{spec}}{suffix}"


def comparison_table(rows: Sequence[dict[str, Any]], width: int) -> Table:
    """One line per model, fitted to ``width`` columns: model, generation time, tokens per
    second, response length in characters, and the start of the response (or the error)."""
    numbers = [
        (
            _shown(r["response_time"], ".2f", "s"),
            _shown(r["tokens_per_second"], ".1f"),
            _shown(r["response_length"], "d"),
        )
        for r in rows
    ]
    headers = ("Time", "Tok/s", "Chars")
    widths = [max([len(h), *(len(n[i]) for n in numbers)]) for i, h in enumerate(headers)]
    room = width - sum(widths) - _GAP * (len(headers) + 1)  # for the model and response columns
    longest_id = max(len(r["model_id"]) for r in rows)
    model_width = max(len("Model"), min(longest_id, room - _MIN_RESPONSE, room * 2 // 5))
    response_width = max(room - model_width, len("Response"))

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, show_edge=False)
    table.add_column("Model", no_wrap=True, width=model_width)
    for header, w in zip(headers, widths, strict=True):
        table.add_column(header, justify="right", no_wrap=True, width=w)
    table.add_column("Response", no_wrap=True, width=response_width)
    for row, shown in zip(rows, numbers, strict=True):
        if row["succeeded"]:
            answer = Text(cut_words(row["response"] or "", response_width))
        else:
            error = cut_words(f"failed: {row['error']}", response_width)
            answer = Text(error, style="red")
        table.add_row(Text(cut(row["model_id"], model_width)), *shown, answer)
    return table


@click.command()
@click.argument("prompt", required=False)
@click.option(
    "-m",
    "--model",
    "model_ids",
    multiple=True,
    required=True,
    help="A model to run the prompt on; repeat it: -m A -m B.",
)
@prompt_file_option
@click.option("--max-tokens", type=int, help="Max output tokens of each answer.")
@click.option("--temperature", type=float, default=0.7, show_default=True)
@click.option("--system", "system_prompt", help="System prompt.")
@click.option(
    "--timeout",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds to wait for each model's answer; then that model's job is cancelled.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per model.")
@handle_errors
def compare(
    prompt: str | None,
    model_ids: tuple[str, ...],
    prompt_file: str | None,
    max_tokens: int | None,
    temperature: float,
    system_prompt: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Run PROMPT on every -m model through the queue and compare time, speed and answers.

    PROMPT ``-`` (or none, with input piped in) reads the prompt from standard input. Exits 0
    when every model answered, 11 when some failed (each failure is also one line on stderr).
    """
    text = read_prompt(prompt, prompt_file)
    status = Console(stderr=True).status(f"Comparing {len(model_ids)} model(s)…")
    with ModelComparator(list(model_ids), timeout=timeout) as comparator, status:
        rows = comparator.compare_models(
            text,
            metrics=METRICS,
            max_tokens=max_tokens,
            temperature=temperature,
            system_prompt=system_prompt,
        )
    if as_json:
        echo_json(json_rows(rows))
    else:
        console = Console()
        console.print(comparison_table(rows, console.width))
    failed = [r for r in rows if not r["succeeded"]]
    for row in failed:
        click.echo(f"error: {row['model_id']}: {one_line(row['error'] or 'failed')}", err=True)
    if failed:
        sys.exit(SOME_FAILED)


__all__ = ["compare", "comparison_table", "json_rows"]
