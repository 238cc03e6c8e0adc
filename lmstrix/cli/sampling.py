"""The sampling options of ``infer``, ``infer --stream`` and ``submit infer``: one set of click
options, handed to the command as the keyword arguments ``InferenceManager.submit`` and
``stream`` take (values are checked there, with the API's errors)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from lmstrix.domain.sampling import not_sent, not_taken

# The command-line options' parameter names, as InferenceManager takes them.
NAMES = (
    "out_ctx",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "system_prompt",
    "repeat_penalty",
    "min_p",
    "stop",
    "seed",
)
# Left out of the call when not given: the model's own default applies.
_OPTIONAL = ("repeat_penalty", "min_p", "stop", "seed")


def _out_ctx(value: str) -> int | str:
    try:
        return int(value)
    except ValueError:
        return value


def call_options(given: dict[str, Any]) -> dict[str, Any]:
    """The options of one command line as ``submit()`` keywords: ``--out-ctx`` as a number
    where it is one, ``--stop`` as a list, options not given left out."""
    out = dict(given)
    out["out_ctx"] = _out_ctx(out["out_ctx"])
    out["stop"] = list(out["stop"]) or None
    return {k: v for k, v in out.items() if not (k in _OPTIONAL and v is None)}


def warn_not_sent(sampling: dict[str, Any]) -> None:
    """Once the job is queued: a warning line for options its host will not be sent (the worker
    logs it too, but maybe on another machine)."""
    dropped = not_taken(sampling)
    if dropped:
        click.echo(f"warning: {not_sent(dropped)}", err=True)


def sampling_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options, handed to ``fn`` as one ``sampling`` keyword (a dict for ``submit()``)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["sampling"] = call_options({n: kwargs.pop(n) for n in NAMES})
        return fn(*args, **kwargs)

    for option in reversed(
        [
            click.option(
                "--out-ctx",
                default="auto",
                show_default=True,
                help='Output tokens: N, -1 (no limit), "auto" or "N%".',
            ),
            click.option("--max-tokens", type=int, help="Max output tokens (wins over --out-ctx)."),
            click.option("--temperature", type=float, default=0.7, show_default=True),
            click.option("--top-p", type=float, default=1.0, show_default=True),
            click.option("--top-k", type=int, default=-1, show_default=True),
            click.option("--system", "system_prompt", help="System prompt."),
            click.option(
                "--repeat-penalty", type=float, help="Penalty for repeated tokens (1: none)."
            ),
            click.option("--min-p", type=float, help="Min-p sampling threshold (0 to 1)."),
            click.option(
                "--stop",
                multiple=True,
                metavar="TEXT",
                help="End the answer before this text (repeatable).",
            ),
            click.option("--seed", type=int, help="Seed, for answers that can be repeated."),
        ]
    ):
        wrapper = option(wrapper)
    return wrapper


__all__ = ["NAMES", "call_options", "sampling_options", "warn_not_sent"]
