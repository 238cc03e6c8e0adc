"""Whether a request fits its model's context: checked before a job is queued, so a request that
cannot fit fails at once with the numbers instead of minutes later on the host.

Resolving ``out_ctx`` itself is :func:`lmstrix.domain.context.resolve_out_ctx`.
"""

from __future__ import annotations

from lmstrix.domain.errors import ContextLimitExceededError


def check_fits(model_id: str, prompt_tokens: int, output_tokens: int, limit: int) -> None:
    """Raise ``ContextLimitExceededError`` when prompt + output (``-1``: any) exceed ``limit``."""
    if prompt_tokens >= limit:
        raise ContextLimitExceededError(
            model_id,
            prompt_tokens=prompt_tokens,
            context_limit=limit,
            reason="the prompt alone fills the context",
        )
    if output_tokens > 0 and prompt_tokens + output_tokens > limit:
        raise ContextLimitExceededError(
            model_id,
            prompt_tokens=prompt_tokens,
            requested_output=output_tokens,
            context_limit=limit,
        )


def empty_answer_overflow(
    model_id: str, prompt_tokens: int, context_limit: int | None
) -> ContextLimitExceededError | None:
    """The overflow an *empty* answer means, or None. Some LM Studio builds answer a prompt that
    does not fit with HTTP 200 and nothing in it; when the prompt (estimated) fills the context
    the host serves, that empty answer is read as the overflow it is."""
    if context_limit is None or prompt_tokens < context_limit:
        return None
    return ContextLimitExceededError(
        model_id,
        prompt_tokens=prompt_tokens,
        context_limit=context_limit,
        reason="the host sent an empty answer for a prompt that fills its context",
    )
