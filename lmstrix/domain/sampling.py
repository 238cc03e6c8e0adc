"""Which sampling fields each LM Studio chat endpoint takes, and the body part they make.

LM Studio documents a different set for each of its chat endpoints:

- the OpenAI-compatible ones (``/v1/chat/completions`` and its ``/api/v0`` twin), which lmstrix
  runs inference through: ``temperature``, ``top_p``, ``top_k``, ``repeat_penalty``, ``stop`` and
  ``seed``;
- the native ``/api/v1/chat``: ``temperature``, ``top_p``, ``top_k``, ``min_p`` and
  ``repeat_penalty`` (no ``stop``, no ``seed``).

A field an endpoint does not take is left out of its body rather than sent to be ignored or
refused; the caller is told which ones were left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CHAT_COMPLETIONS_FIELDS = frozenset(
    {"temperature", "top_p", "top_k", "repeat_penalty", "stop", "seed"}
)
NATIVE_CHAT_FIELDS = frozenset({"temperature", "top_p", "top_k", "min_p", "repeat_penalty"})


def sampling_body(
    values: Mapping[str, Any], supported: frozenset[str]
) -> tuple[dict[str, Any], list[str]]:
    """The given (not None) ``values`` an endpoint takes, as body fields (``stop`` as a list),
    and the names of the given ones it does not take, sorted."""
    body: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in values.items():
        if value is None:
            continue
        if key not in supported:
            dropped.append(key)
        elif key == "stop":
            body[key] = [value] if isinstance(value, str) else list(value)
        else:
            body[key] = value
    return body, sorted(dropped)


def not_sent(names: list[str]) -> str:
    """The note for options given that the chat completions endpoint does not take."""
    return f"LM Studio's chat completions endpoint does not take {', '.join(names)}; not sent"


def not_taken(values: Mapping[str, Any]) -> list[str]:
    """The given (not None) sampling options of ``values`` (other keys are ignored) that the
    chat completions endpoint does not take."""
    known = CHAT_COMPLETIONS_FIELDS | NATIVE_CHAT_FIELDS
    given = {k: v for k, v in values.items() if k in known}
    return sampling_body(given, CHAT_COMPLETIONS_FIELDS)[1]


__all__ = [
    "CHAT_COMPLETIONS_FIELDS",
    "NATIVE_CHAT_FIELDS",
    "not_sent",
    "not_taken",
    "sampling_body",
]
