"""What a ``context_test`` job asks for, and the validation that refuses bad input before a row
is written (pure: no I/O).

Why here and not in the worker: a job row may run hours later on another machine, so anything
that cannot be tested (an embedding model, a size above what the model declares, a budget that
leaves no room for a prompt) must be refused at submit time, with the field named, and no probe
ever run for it. The worker validates the row again (:func:`parse_request`), since rows can be
written by hand.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lmstrix.domain.context_search import (
    DEFAULT_MAX_ITERATIONS,
    DEFAULT_MIN_CONTEXT,
    DEFAULT_THRESHOLD,
    SearchConfig,
)
from lmstrix.domain.errors import ValidationError
from lmstrix.domain.model import Model
from lmstrix.domain.needle import DEFAULT_DEPTHS, check_depths
from lmstrix.domain.probe_sizing import PromptBudget
from lmstrix.domain.requests import validate_request

#: Tokens kept for the answer of a use probe. The needle answer is about 15 tokens; the rest is
#: slack for models that add a sentence. Small on purpose: the answer's positions are part of
#: what the probe proves, so a large unused budget would overstate the tested size.
DEFAULT_OUTPUT_TOKENS = 64
#: Reasoning models think before answering, and the thinking counts against ``max_tokens``.
REASONING_OUTPUT_TOKENS = 1024
#: The smallest context any probe uses (``--ctx`` and ``--min-context``): llama.cpp and LM Studio
#: allocate contexts in steps of 256, and a needle prompt plus an answer fit in one step.
MIN_PROBE_CONTEXT = 256
#: The least room a use probe's prompt must have: the needle's instruction, fact and question
#: take about 60 tokens, and at least as much filler must separate the fact from the question,
#: or the probe tests nothing about reading the start of a long context.
MIN_PROMPT_TOKENS = 128


class ContextTestRequest(BaseModel):
    """What a ``context_test`` job row asks for. ``ctx`` set: test exactly that one size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    declared: int = Field(ge=1)
    threshold: int = Field(DEFAULT_THRESHOLD, ge=1)
    min_context: int = Field(DEFAULT_MIN_CONTEXT, ge=1)
    max_iterations: int = Field(DEFAULT_MAX_ITERATIONS, ge=1)
    granularity: int | None = Field(None, ge=1)
    reset: bool = False
    ctx: int | None = Field(None, ge=1)
    question: str | None = Field(None, min_length=1)
    output_tokens: int = Field(DEFAULT_OUTPUT_TOKENS, ge=1)
    seed: int = 0
    # Where a use probe's needles sit (shares of the prompt: 0 the start, 1 the end).
    depths: tuple[float, ...] = DEFAULT_DEPTHS

    @field_validator("depths", mode="before")
    @classmethod
    def _depths(cls, value: object) -> tuple[float, ...]:
        return check_depths(value)

    def search_config(self) -> SearchConfig:
        """The search's parameters. A single size is a search whose range is that size."""
        if self.ctx is not None:
            return SearchConfig(
                declared=self.ctx,
                threshold=self.ctx,
                min_context=self.ctx,
                max_iterations=6,  # load, pre-screen, use, and once more if the instance died
                granularity=self.granularity,
            )
        return SearchConfig(
            declared=self.declared,
            threshold=self.threshold,
            min_context=self.min_context,
            max_iterations=self.max_iterations,
            granularity=self.granularity,
        )


def plan_context_test(
    model: Model,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    ctx: int | None = None,
    reset: bool = False,
    force: bool = False,
    question: str | None = None,
    output_tokens: int | None = None,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    min_context: int | None = None,
    depths: tuple[float, ...] | None = None,
) -> ContextTestRequest:
    """The request for testing ``model``, or a ``ValidationError`` saying why it cannot be tested.

    Refused: an embedding model (no chat, nothing to recall), a threshold below the minimum
    context, a ``min_context`` below ``MIN_PROBE_CONTEXT`` or above the threshold (or given
    with ``ctx``, which tests one size), ``ctx`` below ``MIN_PROBE_CONTEXT``, above the
    declared size or at/above the last known bad size (that size already failed;
    ``force=True`` tests it anyway, ``reset=True`` forgets it), and an answer budget that leaves
    no room for a prompt. ``min_context`` None is the search's default (2048): most models
    load far more, and a lower bound only costs probes when a model fails even there.
    ``depths`` None places needles at the start, the middle and the end.
    """
    if model.type.startswith("embedding"):
        raise ValidationError(
            "model_id", model.id, "is an embedding model; context tests need a chat model"
        )
    if question is not None and not question.strip():
        raise ValidationError("prompt", question, "must not be empty")
    budget = output_tokens
    if budget is None:
        reasons = "reasoning" in model.capabilities
        budget = REASONING_OUTPUT_TOKENS if reasons else DEFAULT_OUTPUT_TOKENS
    if min_context is not None:
        check_min_context(min_context, threshold)
        if ctx is not None:
            raise ValidationError(
                "min_context", min_context, "applies to a search; --ctx tests exactly one size"
            )
    if ctx is not None:
        if isinstance(ctx, bool) or not isinstance(ctx, int) or ctx < MIN_PROBE_CONTEXT:
            raise ValidationError("ctx", ctx, f"must be an integer >= {MIN_PROBE_CONTEXT}")
        if model.declared_context and ctx > model.declared_context:
            raise ValidationError(
                "ctx", ctx, f"is above the {model.declared_context} tokens {model.id} declares"
            )
        bad = model.last_known_bad_context
        if bad is not None and ctx >= bad and not (force or reset):
            raise ValidationError(
                "ctx",
                ctx,
                f"is at or above {bad}, where {model.id} already failed on {model.host}; "
                "use --force to test it anyway (or --reset to forget earlier results)",
            )
    fields = {
        "declared": model.declared_context or threshold,
        "threshold": threshold,
        "min_context": DEFAULT_MIN_CONTEXT if min_context is None else min_context,
        "max_iterations": max_iterations,
        "reset": reset,
        "ctx": ctx,
        "question": question,
        "output_tokens": budget,
        "depths": DEFAULT_DEPTHS if depths is None else check_depths(depths),
    }
    request = validate_request(ContextTestRequest, fields)
    assert isinstance(request, ContextTestRequest)
    lower = request.search_config().lower  # SearchConfig refuses a threshold below the minimum
    if PromptBudget(lower, budget).low < MIN_PROMPT_TOKENS:
        raise ValidationError(
            "output_tokens", budget, f"leaves too little room for a prompt at {lower} tokens"
        )
    return request


def check_min_context(min_context: object, threshold: int | None = None) -> int:
    """``min_context`` if it is a usable lower bound of a search, else a ``ValidationError``:
    at least ``MIN_PROBE_CONTEXT`` (a smaller context holds no useful probe) and at most the
    threshold (the range would be empty)."""
    if (
        isinstance(min_context, bool)
        or not isinstance(min_context, int)
        or min_context < MIN_PROBE_CONTEXT
    ):
        raise ValidationError(
            "min_context", min_context, f"must be an integer >= {MIN_PROBE_CONTEXT}"
        )
    if threshold is not None and min_context > threshold:
        raise ValidationError(
            "min_context",
            min_context,
            f"is above the threshold {threshold}; lower the minimum or raise the threshold",
        )
    return min_context


def parse_request(data: dict[str, Any]) -> ContextTestRequest:
    """The job row's request, validated again on the worker (rows can be written by hand)."""
    req = validate_request(ContextTestRequest, data)
    assert isinstance(req, ContextTestRequest)
    return req


__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "MIN_PROBE_CONTEXT",
    "MIN_PROMPT_TOKENS",
    "REASONING_OUTPUT_TOKENS",
    "ContextTestRequest",
    "check_min_context",
    "parse_request",
    "plan_context_test",
]
