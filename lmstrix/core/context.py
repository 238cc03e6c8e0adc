"""Public import path; the definitions live in :mod:`lmstrix.domain.context`."""

from lmstrix.domain.context import (
    AUTO_OUT_CTX_CAP,
    CONTEXT_ROUNDING,
    DEFAULT_CHARS_PER_TOKEN,
    DEFAULT_OUT_CTX_MARGIN,
    PRIOR_WEIGHT_TOKENS,
    STRATEGIES,
    ContextManager,
    ContextStrategy,
    Strategy,
    TokenCalibration,
    resolve_out_ctx,
)

__all__ = [
    "AUTO_OUT_CTX_CAP",
    "CONTEXT_ROUNDING",
    "DEFAULT_CHARS_PER_TOKEN",
    "DEFAULT_OUT_CTX_MARGIN",
    "PRIOR_WEIGHT_TOKENS",
    "STRATEGIES",
    "ContextManager",
    "ContextStrategy",
    "Strategy",
    "TokenCalibration",
    "resolve_out_ctx",
]
