"""A tiny SSE parser for tests: ``parse_sse(text)`` -> ``[(event name or None, data), ...]``."""

from __future__ import annotations

import json
from typing import Any


def parse_sse(text: str) -> list[tuple[str | None, str]]:
    frames: list[tuple[str | None, str]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        event: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:") :].lstrip())
        frames.append((event, "\n".join(data)))
    return frames


def sse_json(text: str) -> list[tuple[str | None, Any]]:
    """Like :func:`parse_sse` with each data decoded as JSON (``[DONE]`` kept as a string)."""
    return [(e, d if d == "[DONE]" else json.loads(d)) for e, d in parse_sse(text)]
