"""``context_data``: named blocks of text placed before a prompt.

``infer(..., context_data={"document": text, "notes": Path("notes.md")})`` sends the model::

    ## document

    <the text>

    ## notes

    <the file's text>

    ---

    <the prompt>

Each block is a name (one line of text) and either its text (a ``str``) or a file path
(``os.PathLike``, e.g. ``pathlib.Path``; a ``str`` is always text, never a path). Blocks come in
the order given, each under a ``## <name>`` header, and a ``---`` line separates them from the
prompt. The whole composed text is the prompt: it is what counts against the model's context and
what the job's row stores. Files are read by the facades (``InferenceManager``, with
``ContextLoader``) in the caller's process when the call is made; here, everything is pure.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from lmstrix.domain.errors import ValidationError

#: What ``infer(context_data=...)`` takes: block name -> text, or -> a file to read.
ContextData = Mapping[str, str | os.PathLike[str]]

ACCEPTS = "a dict of block names to text (str) or to file paths (pathlib.Path)"
SEPARATOR = "---"


def block_field(name: str) -> str:
    """How errors name one block: ``context_data['document']``."""
    return f"context_data[{name!r}]"


def check_context_data(value: Any) -> dict[str, str | os.PathLike[str]]:
    """``value`` as a plain dict when it is valid ``context_data``; ``ValidationError`` naming
    the block otherwise. None means no blocks."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError("context_data", value, f"must be {ACCEPTS}")
    out: dict[str, str | os.PathLike[str]] = {}
    for name, block in value.items():
        if not isinstance(name, str) or not name.strip() or "\n" in name or "\r" in name:
            raise ValidationError(
                "context_data", name, "block names must be non-empty strings on one line"
            )
        if not isinstance(block, str | os.PathLike):
            raise ValidationError(
                block_field(name),
                block,
                f"must be text (str) or a file path (pathlib.Path), not {type(block).__name__}",
            )
        out[name] = block
    return out


def compose_prompt(context_data: Mapping[str, Any] | None, prompt: str) -> str:
    """The prompt as sent: each block under its ``## name`` header, in order, then ``---`` and
    ``prompt``. Without blocks, ``prompt`` itself. Every block must be text by now: a path
    left in raises ``ValidationError`` (the facades load files; the queue takes text)."""
    blocks = check_context_data(context_data)
    if not blocks:
        return prompt
    parts: list[str] = []
    for name, block in blocks.items():
        if not isinstance(block, str):
            raise ValidationError(
                block_field(name),
                os.fspath(block),
                "is a file path: InferenceManager reads files, the job queue takes their text "
                "(read it with ContextLoader().load_text_file(path))",
            )
        text = block.strip("\n")
        parts.append(f"## {name.strip()}\n\n{text}\n\n")
    parts.append(f"{SEPARATOR}\n\n{prompt}")
    return "".join(parts)


__all__ = [
    "ACCEPTS",
    "SEPARATOR",
    "ContextData",
    "block_field",
    "check_context_data",
    "compose_prompt",
]
