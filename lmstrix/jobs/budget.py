"""Output budgets: how many tokens a job may generate, and whether prompt + output fit.

Pure arithmetic, checked before a job is queued, so a request that cannot fit fails at once with
the numbers instead of minutes later on the host.

``out_ctx``: an int (that many tokens), ``-1`` (no limit: as much as fits), ``"auto"`` (what fits:
limit minus prompt minus a safety margin, capped by a sane default) or ``"N%"`` (that share of
what fits). ``max_tokens``, when given, wins.
"""

from __future__ import annotations

import math
import re

from lmstrix.api.exceptions import ContextLimitExceededError, ValidationError

AUTO_CAP = 4096
MARGIN_FRACTION = 0.05
MIN_MARGIN = 64
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def estimate_tokens(text: str) -> int:
    """A deliberately high estimate (about 3.5 characters a token), so "fits" errs safe."""
    return math.ceil(len(text) / 3.5) if text else 0


def margin_for(limit: int) -> int:
    return max(MIN_MARGIN, int(limit * MARGIN_FRACTION))


def resolve_out_ctx(
    out_ctx: int | str,
    max_tokens: int | None,
    prompt_tokens: int,
    context_limit: int | None,
    model_id: str | None = None,
) -> int:
    """The ``max_tokens`` to send (-1: unlimited). Raises when prompt + output cannot fit."""
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens == 0:
            raise ValidationError("max_tokens", max_tokens, "must be a positive integer or -1")
        if max_tokens < -1:
            raise ValidationError("max_tokens", max_tokens, "must be a positive integer or -1")
        wanted: int | str = max_tokens
    else:
        wanted = out_ctx
    room = None
    if context_limit:
        room = context_limit - prompt_tokens - margin_for(context_limit)
        if room <= 0:
            raise ContextLimitExceededError(
                model_id,
                prompt_tokens=prompt_tokens,
                context_limit=context_limit,
                reason="the prompt alone fills the context",
            )
    if isinstance(wanted, bool):
        raise ValidationError("out_ctx", wanted, 'must be an int, -1, "auto" or "N%"')
    if isinstance(wanted, int):
        if wanted == -1:
            return room if room is not None else -1
        if wanted <= 0:
            raise ValidationError("out_ctx", wanted, 'must be positive, -1, "auto" or "N%"')
        if room is not None and wanted > room:
            raise ContextLimitExceededError(
                model_id,
                prompt_tokens=prompt_tokens,
                context_limit=context_limit,
                requested_output=wanted,
            )
        return wanted
    if not isinstance(wanted, str):
        raise ValidationError("out_ctx", wanted, 'must be an int, -1, "auto" or "N%"')
    if wanted.strip().lower() == "auto":
        return min(room, AUTO_CAP) if room is not None else AUTO_CAP
    m = _PERCENT.match(wanted)
    if m:
        share = float(m.group(1))
        if not 0 < share <= 100:
            raise ValidationError("out_ctx", wanted, "a percentage must be within (0, 100]")
        base = room if room is not None else AUTO_CAP
        return max(1, int(base * share / 100))
    try:
        return resolve_out_ctx(int(wanted), None, prompt_tokens, context_limit, model_id)
    except ValueError:
        raise ValidationError("out_ctx", wanted, 'must be an int, -1, "auto" or "N%"') from None
