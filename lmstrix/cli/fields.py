"""A record printed as readable ``key: value`` lines, YAML-like, for ``jobs show`` and others.

Nested dicts are indented under their key, lists get ``-`` items, text of several lines is a
``|`` block, timestamps are ISO-8601 UTC (as in the JSON output) and None is left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from lmstrix.domain.clock import iso_utc

INDENT = "  "


def _scalar(value: Any) -> str:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else str(value)
    return str(value)


def field_lines(data: Mapping[str, Any], depth: int = 0) -> list[str]:
    """``data`` as indented ``key: value`` lines (see the module docstring)."""
    pad = INDENT * depth
    out: list[str] = []
    for key, value in data.items():
        if value is None or value == {} or value == []:
            continue
        if isinstance(value, Mapping):
            out.append(f"{pad}{key}:")
            out.extend(field_lines(value, depth + 1))
        elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
            out.append(f"{pad}{key}:")
            for item in value:
                if isinstance(item, Mapping):
                    lines = field_lines(item, depth + 2)
                    if lines:
                        first = lines[0].lstrip()
                        out.append(f"{pad}{INDENT}- {first}")
                        out.extend(lines[1:])
                else:
                    out.append(f"{pad}{INDENT}- {_scalar(item)}")
        elif isinstance(value, str) and "\n" in value:
            out.append(f"{pad}{key}: |")
            out.extend(f"{pad}{INDENT}{line}" for line in value.splitlines())
        else:
            out.append(f"{pad}{key}: {_scalar(value)}")
    return out


__all__ = ["field_lines"]
