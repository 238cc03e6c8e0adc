"""Context budgeting: how big a context a request needs, whether it fits, and how long an answer
may be.

Three pure pieces, shared by the inference facade (``out_ctx="auto"`` and its pre-check) and the
context tester (sizing its probe prompts):

- :class:`TokenCalibration`: a characters-per-token ratio learned from what a model's server
  really reported (``usage.prompt_tokens`` against the characters sent). Exact tokenizers are
  not available client-side (LM Studio does not expose one over HTTP), so estimates start from a
  deliberately pessimistic English default and converge on the model's own ratio as soon as one
  real answer has been seen.
- :class:`ContextManager`: per-model calibrations, ``estimate_tokens``, the strategies of
  ``calculate_optimal_context`` and ``validate_context_size`` (the documented public API).
- :func:`resolve_out_ctx`: turns the user's ``out_ctx`` (an int, ``"auto"``, ``"N%"`` or -1) and
  ``max_tokens`` into the one number sent to LM Studio as ``max_tokens``.

Nothing here does I/O; the only state is the calibration table, guarded by a lock so one manager
can be shared by threads.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from lmstrix.domain.errors import ContextLimitExceededError, ValidationError

#: Default ratio for text never seen from a model. Real BPE tokenizers give about 4 characters
#: per token on English prose and fewer on code or non-English text; 3.5 errs on the side of
#: over-estimating tokens, which is the safe side for a "does it fit" pre-check.
DEFAULT_CHARS_PER_TOKEN = 3.5

#: How many tokens' worth of evidence the default ratio counts for. One real observation of a
#: few hundred tokens already outweighs it; a long probe prompt makes it negligible.
PRIOR_WEIGHT_TOKENS = 64

#: Context sizes returned by ``calculate_optimal_context`` are multiples of this.
CONTEXT_ROUNDING = 256

#: ``out_ctx="auto"`` never asks for more than this many output tokens: a bigger default turns a
#: runaway generation into minutes of wasted compute (the upstream "unlimited maxTokens never
#: finishing" issue).
AUTO_OUT_CTX_CAP = 4096

#: Tokens kept free by ``out_ctx="auto"`` besides prompt and answer: chat-template tokens the
#: client cannot see plus the error of a token estimate.
DEFAULT_OUT_CTX_MARGIN = 64

Strategy = Literal["conservative", "balanced", "aggressive"]


@dataclass(frozen=True, slots=True)
class TokenCalibration:
    """Characters per token for one model, learned from ``(chars, tokens)`` observations.

    The ratio is ``(chars + prior_ratio * prior_weight) / (tokens + prior_weight)``: the default
    acts as ``prior_weight`` tokens of evidence, so one real observation dominates quickly while a
    tiny, noisy one (a 5-token "hi") cannot swing the estimate wildly. Immutable: ``observe``
    returns a new calibration, so a calibration can be handed around (or persisted) safely.
    """

    chars: int = 0
    tokens: int = 0
    prior_chars_per_token: float = DEFAULT_CHARS_PER_TOKEN
    prior_weight: int = PRIOR_WEIGHT_TOKENS

    @property
    def chars_per_token(self) -> float:
        """The current estimate of characters per token."""
        weight = self.prior_weight
        return (self.chars + self.prior_chars_per_token * weight) / (self.tokens + weight)

    @property
    def observed(self) -> bool:
        """True once a real observation has been folded in."""
        return self.tokens > 0

    def observe(self, chars: int, tokens: int) -> TokenCalibration:
        """Fold in one observation: ``tokens`` were reported for ``chars`` characters sent.

        Non-positive pairs carry no information (an empty prompt, a server that reports 0) and
        are ignored rather than rejected, because they come from servers, not from users.
        """
        if chars <= 0 or tokens <= 0:
            return self
        return TokenCalibration(
            self.chars + chars, self.tokens + tokens, self.prior_chars_per_token, self.prior_weight
        )

    def estimate(self, text: str) -> int:
        """Estimated tokens of ``text`` (rounded up; 0 only for the empty string)."""
        return self.estimate_chars(len(text))

    def estimate_chars(self, chars: int) -> int:
        """Estimated tokens of a text of ``chars`` characters."""
        if chars <= 0:
            return 0
        return max(1, math.ceil(chars / self.chars_per_token))

    def chars_for(self, tokens: int) -> int:
        """About how many characters hold ``tokens`` tokens (the inverse of ``estimate``)."""
        return max(0, int(tokens * self.chars_per_token))


@dataclass(frozen=True, slots=True)
class ContextStrategy:
    """How much room a strategy keeps: ``headroom`` x (prompt + output), at least ``min_margin``
    tokens, and never more than ``cap`` x the model's context limit in total."""

    name: str
    headroom: float
    min_margin: int
    cap: float


#: The strategies of ``calculate_optimal_context``; see its docstring for the reasoning.
STRATEGIES: Mapping[str, ContextStrategy] = {
    "conservative": ContextStrategy("conservative", headroom=0.25, min_margin=512, cap=0.75),
    "balanced": ContextStrategy("balanced", headroom=0.10, min_margin=256, cap=0.90),
    "aggressive": ContextStrategy("aggressive", headroom=0.02, min_margin=64, cap=1.00),
}


def _check_count(field: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, value, "must be an integer")
    if value < minimum:
        raise ValidationError(field, value, f"must be >= {minimum}")
    return value


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


class ContextManager:
    """Token estimates per model and context-size decisions built on them.

    ``observe(model_id, chars, tokens)`` is called by whoever sees a real ``usage.prompt_tokens``
    (the inference facade, the context tester); ``estimate_tokens(text, model_id)`` then uses that
    model's ratio. Unknown models use the shared default.
    """

    def __init__(
        self,
        *,
        default_chars_per_token: float = DEFAULT_CHARS_PER_TOKEN,
        calibrations: Mapping[str, TokenCalibration] | None = None,
    ) -> None:
        if not default_chars_per_token > 0:
            raise ValidationError(
                "default_chars_per_token", default_chars_per_token, "must be positive"
            )
        self._default = TokenCalibration(prior_chars_per_token=default_chars_per_token)
        self._calibrations: dict[str, TokenCalibration] = dict(calibrations or {})
        self._lock = threading.Lock()

    # -- token estimation --------------------------------------------------------------------

    def calibration(self, model_id: str | None = None) -> TokenCalibration:
        """The calibration in force for ``model_id`` (the default when never observed)."""
        if model_id is None:
            return self._default
        with self._lock:
            return self._calibrations.get(model_id, self._default)

    def observe(self, model_id: str, chars: int, tokens: int) -> TokenCalibration:
        """Record that ``chars`` characters sent to ``model_id`` were ``tokens`` prompt tokens."""
        with self._lock:
            updated = self._calibrations.get(model_id, self._default).observe(chars, tokens)
            self._calibrations[model_id] = updated
            return updated

    def calibrations(self) -> dict[str, TokenCalibration]:
        """A snapshot of every per-model calibration (to persist it)."""
        with self._lock:
            return dict(self._calibrations)

    def estimate_tokens(self, text: str, model_id: str | None = None) -> int:
        """Estimated tokens of ``text`` for ``model_id`` (its calibration, else the default)."""
        return self.calibration(model_id).estimate(text)

    # -- decisions ---------------------------------------------------------------------------

    def calculate_optimal_context(
        self,
        prompt_length: int,
        desired_output: int,
        model_max_context: int,
        strategy: str = "balanced",
    ) -> int:
        """The context size to load for a prompt of ``prompt_length`` tokens and an answer of
        ``desired_output`` tokens.

        A bigger context costs memory and load time, a smaller one risks truncation when the
        token estimate was low or the answer runs long. The strategies trade one for the other:

        ================  ==========================  =============  ==========================
        strategy          headroom over prompt+output  at least       may use of the model limit
        ================  ==========================  =============  ==========================
        ``conservative``  25 %                         512 tokens     75 %
        ``balanced``      10 %                         256 tokens     90 %
        ``aggressive``    2 %                          64 tokens      100 %
        ================  ==========================  =============  ==========================

        The cap keeps a conservative caller away from the top of the model's range, where long
        contexts are slowest and quality degrades first; ``aggressive`` uses everything the
        model (or its tested limit) allows. The result is rounded up to a multiple of 256
        (allocation-friendly, and stable across small prompt changes so an already-loaded
        instance can be reused), and lowered to the cap when rounding alone overshoots it.

        Raises ``ContextLimitExceededError`` when prompt, output and headroom do not fit under
        the strategy's cap (the message says how many tokens were needed), ``ValidationError``
        for negative sizes or an unknown strategy.
        """
        prompt_length = _check_count("prompt_length", prompt_length, minimum=0)
        desired_output = _check_count("desired_output", desired_output, minimum=0)
        model_max_context = _check_count("model_max_context", model_max_context, minimum=1)
        chosen = STRATEGIES.get(strategy) if isinstance(strategy, str) else None
        if chosen is None:
            raise ValidationError(
                "strategy", strategy, "must be one of " + ", ".join(sorted(STRATEGIES))
            )
        need = prompt_length + desired_output
        headroom = max(math.ceil(need * chosen.headroom), chosen.min_margin)
        wanted = need + headroom
        cap = int(model_max_context * chosen.cap)
        if wanted > cap:
            raise ContextLimitExceededError(
                None,
                prompt_tokens=prompt_length,
                context_limit=model_max_context,
                requested_output=desired_output,
                reason=(
                    f"the {chosen.name} strategy keeps {headroom} tokens of headroom and uses at "
                    f"most {cap} tokens ({chosen.cap:.0%} of the limit); need {wanted}"
                ),
            )
        return min(_round_up(wanted, CONTEXT_ROUNDING), cap)

    def validate_context_size(
        self,
        prompt: str,
        output_tokens: int,
        model_context_limit: int,
        model_id: str | None = None,
    ) -> bool:
        """True when ``prompt`` (estimated for ``model_id``) plus ``output_tokens`` fits in
        ``model_context_limit`` tokens.

        A yes/no pre-check, no headroom added: callers that want a margin use
        ``calculate_optimal_context``. Bad arguments raise ``ValidationError``.
        """
        if not isinstance(prompt, str):
            raise ValidationError("prompt", prompt, "must be a string")
        output_tokens = _check_count("output_tokens", output_tokens, minimum=0)
        model_context_limit = _check_count("model_context_limit", model_context_limit, minimum=1)
        return self.estimate_tokens(prompt, model_id) + output_tokens <= model_context_limit

    def resolve_out_ctx(
        self,
        out_ctx: int | str,
        *,
        max_tokens: int | None = None,
        prompt_tokens: int,
        context_limit: int,
        margin: int = DEFAULT_OUT_CTX_MARGIN,
        auto_cap: int = AUTO_OUT_CTX_CAP,
    ) -> int:
        """:func:`resolve_out_ctx`, offered on the manager for the facade's convenience."""
        return resolve_out_ctx(
            out_ctx,
            max_tokens=max_tokens,
            prompt_tokens=prompt_tokens,
            context_limit=context_limit,
            margin=margin,
            auto_cap=auto_cap,
        )


_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_INTEGER = re.compile(r"^\s*[-+]?\d+\s*$")
_OUT_CTX_ACCEPTS = "use a positive integer, -1 (no limit), 'auto' or a percentage like '25%'"


def resolve_out_ctx(
    out_ctx: int | str,
    *,
    max_tokens: int | None = None,
    prompt_tokens: int,
    context_limit: int,
    margin: int = DEFAULT_OUT_CTX_MARGIN,
    auto_cap: int = AUTO_OUT_CTX_CAP,
) -> int:
    """The ``max_tokens`` to send to LM Studio for a request.

    - ``max_tokens`` given: it wins (the OpenAI-style name is the more explicit one); it must be
      a positive integer or -1.
    - an int > 0 (or a string of one, as the CLI passes it): exactly that many tokens.
    - ``-1``: no limit; -1 is passed through to LM Studio, which then stops at the context edge.
    - ``"auto"``: what fits, ``context_limit - prompt_tokens - margin``, capped at ``auto_cap``
      so a model that never stops cannot run for minutes; raises ``ContextLimitExceededError``
      when the prompt leaves no room at all.
    - ``"N%"``: ``N`` percent of ``context_limit`` (0 < N <= 100), at least 1 token; whether it
      then fits next to the prompt is the caller's pre-check, as for an explicit int.

    Zero, other negatives, bools and anything else raise ``ValidationError`` naming ``out_ctx``.
    """
    prompt_tokens = _check_count("prompt_tokens", prompt_tokens, minimum=0)
    context_limit = _check_count("context_limit", context_limit, minimum=1)
    margin = _check_count("margin", margin, minimum=0)
    auto_cap = _check_count("auto_cap", auto_cap, minimum=1)
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            raise ValidationError("max_tokens", max_tokens, "must be a positive integer or -1")
        if max_tokens == 0 or max_tokens < -1:
            raise ValidationError("max_tokens", max_tokens, "must be a positive integer or -1")
        return max_tokens
    if isinstance(out_ctx, bool):
        raise ValidationError("out_ctx", out_ctx, _OUT_CTX_ACCEPTS)
    value: int
    if isinstance(out_ctx, int):
        value = out_ctx
    elif isinstance(out_ctx, str):
        text = out_ctx.strip().lower()
        if text == "auto":
            room = context_limit - prompt_tokens - margin
            if room <= 0:
                raise ContextLimitExceededError(
                    None,
                    prompt_tokens=prompt_tokens,
                    context_limit=context_limit,
                    reason=f"out_ctx='auto' keeps {margin} tokens of margin and found no room",
                )
            return min(room, auto_cap)
        percent = _PERCENT.match(text)
        if percent:
            share = float(percent.group(1))
            if not 0 < share <= 100:
                raise ValidationError(
                    "out_ctx", out_ctx, f"a percentage must be in (0, 100]; {_OUT_CTX_ACCEPTS}"
                )
            return max(1, int(context_limit * share / 100))
        if not _INTEGER.match(text):
            raise ValidationError("out_ctx", out_ctx, _OUT_CTX_ACCEPTS)
        value = int(text)
    else:
        raise ValidationError("out_ctx", out_ctx, _OUT_CTX_ACCEPTS)
    if value == -1 or value > 0:
        return value
    raise ValidationError("out_ctx", out_ctx, _OUT_CTX_ACCEPTS)


__all__ = [
    "AUTO_OUT_CTX_CAP",
    "CONTEXT_ROUNDING",
    "DEFAULT_CHARS_PER_TOKEN",
    "DEFAULT_OUT_CTX_MARGIN",
    "STRATEGIES",
    "ContextManager",
    "ContextStrategy",
    "Strategy",
    "TokenCalibration",
    "resolve_out_ctx",
]
