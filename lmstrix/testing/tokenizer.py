"""The emulator's tokenizer: simple, deterministic and exactly countable.

Why not a real tokenizer: tests must be able to predict token counts to the unit (to place a
fact just inside or just outside a context window, or to hit an overflow by exactly one token),
without shipping vocabularies. So a token is defined by one regular expression::

    \\w+ | [^\\w\\s]

i.e. a run of word characters (letters, digits, underscore; Unicode-aware) or any single other
non-space character. Whitespace is never a token and separates tokens. ``"2+3="`` is 4 tokens,
``"Hello, world!"`` is 4 tokens.

Chat template. Each message is rendered as ``[role]\\n<content>\\n[end]\\n`` and the prompt
ends with the generation primer ``[assistant]\\n``. ``[``, ``role`` and ``]`` are one token each,
so every message costs ``MESSAGE_OVERHEAD`` = 6 tokens on top of its content, and the primer costs
``REPLY_PRIMER`` = 3. Because tokens never span whitespace, the count is additive::

    count_chat_tokens(messages) == count_tokens(render_chat(messages))
                                == sum(count_tokens(content) + 6) + 3

``usage.prompt_tokens`` of every emulator response is exactly this number (with the rule-based
backend). Non-alphanumeric roles are normalised to ``\\w+`` so the overhead stays fixed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
MESSAGE_OVERHEAD = 6
REPLY_PRIMER = 3

# Filler vocabulary: lowercase, and free of "the", "is" and "what", so filler can never be
# mistaken for a fact or a question of the needle grammar (see ``rules.py``).
_FILLER_VOCABULARY = """
amber basalt cedar delta ember fjord granite harbor island juniper kelp lantern meadow nectar
orchard pebble quarry river saffron tundra umber valley willow yarrow zephyr anchor bramble canyon
dune estuary fern glacier heath inlet jetty knoll lagoon marsh north oasis prairie ridge summit
thicket upland vista wharf
"""
_FILLER_WORDS = tuple(_FILLER_VOCABULARY.split())


def tokenize(text: str) -> list[str]:
    """The tokens of ``text``."""
    return TOKEN_PATTERN.findall(text)


def count_tokens(text: str) -> int:
    """How many tokens ``text`` has."""
    return sum(1 for _ in TOKEN_PATTERN.finditer(text))


def token_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character offsets of every token, in order."""
    return [m.span() for m in TOKEN_PATTERN.finditer(text)]


def truncate_tokens(text: str, n: int) -> str:
    """The prefix of ``text`` that holds exactly its first ``n`` tokens (no trailing space)."""
    if n <= 0:
        return ""
    spans = token_spans(text)
    if n >= len(spans):
        return text
    return text[: spans[n - 1][1]]


def pieces(text: str) -> list[str]:
    """Split ``text`` into one piece per token, whitespace attached to the following token.

    ``"".join(pieces(t)) == t`` always; used to stream a reply token by token.
    """
    spans = token_spans(text)
    if not spans:
        return [text] if text else []
    out: list[str] = []
    start = 0
    for _, end in spans:
        out.append(text[start:end])
        start = end
    out[-1] += text[start:]
    return out


def message_text(content: Any) -> str:
    """The text of a message ``content``: a string, or OpenAI content parts (text parts kept)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, Mapping):
                if isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif isinstance(part.get("content"), str):
                    texts.append(part["content"])
            elif isinstance(part, str):
                texts.append(part)
        return "\n".join(texts)
    return str(content)


def _role(role: Any) -> str:
    cleaned = re.sub(r"\W+", "_", str(role or "user"))
    return cleaned or "user"


def render_chat(messages: Iterable[Mapping[str, Any]]) -> str:
    """The templated prompt the emulated model sees (see the module docstring)."""
    parts = [
        f"[{_role(m.get('role'))}]\n{message_text(m.get('content'))}\n[end]\n" for m in messages
    ]
    parts.append("[assistant]\n")
    return "".join(parts)


def count_chat_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Prompt tokens of chat ``messages`` including the template overhead."""
    return (
        sum(count_tokens(message_text(m.get("content"))) + MESSAGE_OVERHEAD for m in messages)
        + REPLY_PRIMER
    )


def filler_text(n_tokens: int, *, seed: int = 0) -> str:
    """Neutral prose of exactly ``n_tokens`` tokens (sentences of lowercase words and periods).

    Deterministic for a given ``seed``; contains no fact or question of the needle grammar.
    """
    rng = random.Random(seed)
    words: list[str] = []
    remaining = n_tokens
    while remaining > 0:
        length = min(rng.randint(6, 12), remaining - 1)
        if length <= 0:
            # A single token left: a lone period (joins the previous sentence's period).
            words.append(".")
            break
        sentence = [rng.choice(_FILLER_WORDS) for _ in range(length)]
        words.append(" ".join(sentence) + ".")
        remaining -= length + 1
    text = " ".join(words)
    return text.replace(" .", ".")


def chat_filler_messages(n_tokens: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """One user message whose templated prompt is exactly ``n_tokens`` tokens (min 10)."""
    content_tokens = max(n_tokens - MESSAGE_OVERHEAD - REPLY_PRIMER, 1)
    return [{"role": "user", "content": filler_text(content_tokens, seed=seed)}]
