"""How many tokens a use probe's prompt holds, and how to get there with a tokenizer we cannot see
(pure, apart from a process-wide cache of what was learnt).

Why it matters: a use probe at N claims "the model reads the start of an N-token context". If the
prompt really holds 60 % of N (a guessed 3.5 characters per token against a tokenizer that packs
5.7), the claim is false. LM Studio offers no tokenizer over HTTP, so the only truth is the
``usage.prompt_tokens`` each answer reports, after the fact. Hence:

- :class:`PromptBudget`: the prompt of a probe at N aims at ``N - output_tokens - margin``; the
  answer keeps its room, and the margin absorbs the remaining estimate error so a prompt never
  crowds the answer out. A count within ``margin`` of the aim is accepted; one outside is re-sent
  with the better estimate.
- :class:`TokenFit`: the real counts seen so far, by characters sent. A new size is estimated
  from the nearest observations: on the line through two that bracket it, else on the line
  through the two nearest on its side when they are far enough apart, else by the tokens per
  character of the nearest one. A line is exact for nested prompts (the fixed overhead of the
  chat template and the instructions cancels out); a line through two close counts would
  amplify a word's worth of count noise, and the nearest ratio only errs by the overhead times
  the relative distance, which the next send corrects.
- :class:`FitCache`: fits per host and model for the life of the process, so the second test of a
  model on a worker is sized right from its first probe.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from lmstrix.domain.context import DEFAULT_CHARS_PER_TOKEN

#: The smallest margin kept below the answer's room, in tokens: a count that lands a word off.
MIN_MARGIN = 8
#: The margin as a share of the prompt's room: estimates err in proportion to the text. Half the
#: search's relative granularity (1 %), so an accepted prompt (within two margins of the room)
#: holds the probed size to within that granularity.
MARGIN_SHARE = 0.005
#: Two counts on one side of a size are extended as a line only when this far apart (as a share
#: of the nearer one's characters): closer, a word's worth of count noise would tilt the line.
SPAN_SHARE = 0.2
#: Observations a fit keeps (the most recent): enough to bracket any size probed in a search.
MAX_POINTS = 16


@dataclass(frozen=True, slots=True)
class PromptBudget:
    """What the prompt of a use probe at ``size`` may hold, given the answer's ``output_tokens``.

    ``limit`` is the most the prompt may hold (the answer needs the rest of the context);
    ``target`` is what prompts aim at; a real count in ``[low, limit]`` (within ``margin`` of
    the target) is accepted.
    """

    size: int
    output_tokens: int

    @property
    def limit(self) -> int:
        return self.size - self.output_tokens

    @property
    def margin(self) -> int:
        return max(MIN_MARGIN, int(self.limit * MARGIN_SHARE))

    @property
    def target(self) -> int:
        return self.limit - self.margin

    @property
    def low(self) -> int:
        return self.target - self.margin

    def accepts(self, tokens: int) -> bool:
        """Whether a prompt of ``tokens`` real tokens is a fair probe at ``size``."""
        return self.low <= tokens <= self.limit


@dataclass(frozen=True, slots=True)
class TokenFit:
    """Real prompt-token counts (chat template included) by characters of prompt text sent.

    Immutable: :meth:`observe` returns a new fit, so a fit can be shared between threads.
    Without observations the estimate uses the shared default ratio, which over-counts English
    (so a first prompt falls short rather than overflowing).
    """

    points: tuple[tuple[int, int], ...] = ()  # (chars, tokens), oldest first
    default_chars_per_token: float = DEFAULT_CHARS_PER_TOKEN

    @property
    def observed(self) -> bool:
        return bool(self.points)

    def observe(self, chars: int, tokens: int) -> TokenFit:
        """Fold in one real count. Non-positive pairs (an empty prompt, a server that reports 0)
        carry no information and are ignored; a newer count for the same text replaces the old."""
        if chars <= 0 or tokens <= 0:
            return self
        kept = tuple(p for p in self.points if p[0] != chars)
        return TokenFit((*kept, (chars, tokens))[-MAX_POINTS:], self.default_chars_per_token)

    def estimate(self, text: str) -> int:
        """Estimated real tokens of a prompt whose text is ``text``."""
        return self.estimate_chars(len(text))

    def estimate_chars(self, chars: int) -> int:
        """Estimated real tokens of a prompt of ``chars`` characters (see the module docstring)."""
        if chars <= 0:
            return 0
        if not self.points:
            return max(1, math.ceil(chars / self.default_chars_per_token))
        below = sorted((p for p in self.points if p[0] <= chars), reverse=True)
        above = sorted(p for p in self.points if p[0] >= chars)
        if below and above and above[0][0] > below[0][0]:
            return _line(below[0], above[0], chars)
        side = below or above
        near = side[0]
        far = next((p for p in side[1:] if abs(p[0] - near[0]) >= SPAN_SHARE * near[0]), None)
        if far is not None and (far[1] - near[1]) * (far[0] - near[0]) > 0:
            return _line(far, near, chars)
        return max(1, math.ceil(chars * near[1] / near[0]))


def _line(a: tuple[int, int], b: tuple[int, int], chars: int) -> int:
    """Tokens at ``chars`` on the line through two ``(chars, tokens)`` counts."""
    (c0, t0), (c1, t1) = a, b
    return max(1, math.ceil(t0 + (chars - c0) * (t1 - t0) / (c1 - c0)))


class FitCache:
    """Token fits per ``(host url, model)``, shared by the probes of one process (thread-safe)."""

    def __init__(self) -> None:
        self._fits: dict[tuple[str, str], TokenFit] = {}
        self._lock = threading.Lock()

    def get(self, host: str, model: str) -> TokenFit:
        with self._lock:
            return self._fits.get((host, model), TokenFit())

    def put(self, host: str, model: str, fit: TokenFit) -> None:
        with self._lock:
            self._fits[(host, model)] = fit

    def clear(self) -> None:
        with self._lock:
            self._fits.clear()


#: The process's cache: a worker serves one host, so its tests of a model share what they learn.
SHARED_FITS = FitCache()


__all__ = [
    "MAX_POINTS",
    "MIN_MARGIN",
    "SHARED_FITS",
    "SPAN_SHARE",
    "FitCache",
    "PromptBudget",
    "TokenFit",
]
