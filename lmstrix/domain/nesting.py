"""How deep JSON and TOML that lmstrix reads may nest, checked before the parser sees it.

Python's ``json`` and ``tomllib`` parse nested arrays and tables by recursion, so a few thousand
``[`` in a batch line, a config file or a host's answer end in ``RecursionError`` (and TOML's
dotted keys nest tables without any bracket at all, for the code that walks the result to trip
over). No file lmstrix reads needs more than a handful of levels, so anything deeper than
``MAX_NESTING`` is refused as a parse error of the format, naming the line and column (or the
key), which every reader already reports with its file:

- :func:`loads_json` raises ``json.JSONDecodeError``;
- :func:`loads_toml` raises ``tomllib.TOMLDecodeError``.

The check is a scan of the text that skips strings (and TOML comments), so it costs one regular
expression pass and never recurses itself.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from collections.abc import Mapping
from typing import Any

MAX_NESTING = 64

_OPENERS = "[{"
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_TOML_TOKENS = re.compile(
    r'"""(?:[^\\]|\\.)*?"""|\'\'\'.*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*|[\[\]{}]',
    re.DOTALL,
)


def too_deep(text: str, *, toml: bool = False, limit: int = MAX_NESTING) -> int | None:
    """The offset of the first ``[`` or ``{`` that opens level ``limit + 1`` of ``text``, outside
    strings (and, with ``toml``, comments); None when the text nests no deeper than ``limit``.

    Only brackets are counted; the text need not be valid (the parser reports that later).
    """
    if sum(text.count(c) for c in _OPENERS) <= limit:
        return None
    depth = 0
    for m in (_TOML_TOKENS if toml else _JSON_TOKENS).finditer(text):
        token = m.group(0)
        if token in _OPENERS:
            depth += 1
            if depth > limit:
                return m.start()
        elif token in "]}":
            depth = max(depth - 1, 0)
    return None


def too_deep_key(value: Any, *, limit: int = MAX_NESTING) -> list[str] | None:
    """The path to the first table or array nested deeper than ``limit`` inside ``value``
    (parsed data), or None. Walks without recursion."""
    stack: list[tuple[Any, int, list[str]]] = [(value, 0, [])]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, Mapping):
            items = [(str(k), v) for k, v in node.items()]
        elif isinstance(node, list | tuple):
            items = [(f"[{i}]", v) for i, v in enumerate(node)]
        else:
            continue
        if depth >= limit:
            return path
        stack.extend((v, depth + 1, [*path, k]) for k, v in items)
    return None


def describe(limit: int = MAX_NESTING) -> str:
    """The words of every nesting error."""
    return f"nested more than {limit} levels deep (lmstrix reads at most {limit})"


def _position(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def loads_json(text: str | bytes, *, limit: int = MAX_NESTING) -> Any:
    """``json.loads`` that refuses nesting deeper than ``limit`` with ``JSONDecodeError``
    (whose ``lineno`` and ``colno`` point at the bracket that went too deep)."""
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8")
    pos = too_deep(text, limit=limit)
    if pos is not None:
        raise json.JSONDecodeError(describe(limit), text, pos)
    return json.loads(text)


def _toml_error(message: str, text: str, pos: int | None) -> tomllib.TOMLDecodeError:
    if pos is None:
        return tomllib.TOMLDecodeError(message)
    if sys.version_info >= (3, 14):  # the position arguments and their "(at line ...)" suffix
        return tomllib.TOMLDecodeError(message, text, pos)  # pragma: no cover
    line, column = _position(text, pos)
    return tomllib.TOMLDecodeError(f"{message} (at line {line}, column {column})")


def loads_toml(text: str, *, limit: int = MAX_NESTING) -> dict[str, Any]:
    """``tomllib.loads`` that refuses nesting deeper than ``limit`` (brackets, or tables made
    by dotted keys and headers) with ``TOMLDecodeError`` naming the line and column, or the
    key."""
    pos = too_deep(text, toml=True, limit=limit)
    if pos is not None:
        raise _toml_error(describe(limit), text, pos)
    data = tomllib.loads(text)
    path = too_deep_key(data, limit=limit + 1)  # the document's root table is no bracket
    if path is not None:
        shown = ".".join(path[:8]) + (".…" if len(path) > 8 else "")
        raise _toml_error(f"key {shown} {describe(limit)}", text, None)
    return data


__all__ = ["MAX_NESTING", "describe", "loads_json", "loads_toml", "too_deep", "too_deep_key"]
