"""Which context length to load a model at: pure arithmetic, decided at submit time.

Loading at the registry's *tested* context (the largest size known to work on that host) means
every job of a model asks for the same size, so consecutive jobs reuse the loaded instance
instead of reloading it at a slightly different size. Untested models get a sane default rather
than their declared maximum, which is often larger than the machine can hold.
"""

from __future__ import annotations

DEFAULT_CONTEXT = 8192


def choose_load_context(tested: int | None, declared: int | None, needed: int = 0) -> int:
    """The context to load at: tested, else the default (grown to ``needed``, capped by the
    declared maximum)."""
    if tested:
        return tested
    ctx = max(DEFAULT_CONTEXT, needed)
    if declared:
        ctx = min(ctx, declared)
    return ctx


def load_context_for(requested: int | None) -> int:
    """The worker's view: what the job asked for, else the default."""
    return requested if requested else DEFAULT_CONTEXT
