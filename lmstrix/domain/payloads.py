"""What a job's row holds as its result, typed: written by the worker, read by the facades, the
CLI and the batch output file.

The row stores it as JSON and rows outlive versions, so reading is lenient: a key that is missing
or null reads as its no-answer value (a failed job's row holds only its error's details), and
keys this version does not know are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict

from lmstrix.domain.requests import validate_request


class RowPayload(BaseModel):
    """A job result as its row stores it; read leniently (see the module docstring)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | None) -> Self:
        present = {k: v for k, v in (row or {}).items() if v is not None}
        result = validate_request(cls, present)
        assert isinstance(result, cls)
        return result

    def to_row(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class LoadedModelInfo(BaseModel):
    """The model instance that answered, and the context it was loaded at."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str | None = None
    host: str | None = None
    instance_id: str | None = None
    context_length: int | None = None
    requested_context_length: int | None = None
    # True when LM Studio loaded a smaller context than the one asked for.
    reduced: bool = False
    # The job whose run loaded the model also holds, as extra keys, ``load_seconds`` (how long
    # the load took) and ``swapped`` (it replaced another model): see ``load_facts``.

    def load_facts(self) -> tuple[float | None, bool]:
        """``(load_seconds, swapped)`` when this job's run loaded the model, else (None, False)."""
        extra = self.model_extra or {}
        seconds = extra.get("load_seconds")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool):
            return None, False
        return float(seconds), extra.get("swapped") is True


class InferenceJobResult(RowPayload):
    """The result of one chat completion, as an ``inference`` or ``batch_item`` row stores it."""

    response: str = ""
    prompt_tokens: int = 0
    response_tokens: int = 0
    tokens_used: int = 0
    # Generation time as the host reports it (wall time when it reports none).
    inference_time: float = 0.0
    time_to_first_token: float | None = None
    tokens_per_second: float | None = None
    # LM Studio's own stop reason and the OpenAI-style finish reason of the same answer.
    stop_reason: str | None = None
    finish_reason: str | None = None
    wall_time: float | None = None
    model_info: LoadedModelInfo | None = None


class ContextTestResumed(BaseModel):
    """What a context test started from: the sizes already known good and bad, the probes a
    crash left in flight (each counted as a failure), and how many probes came before."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    known_good: int | None = None
    known_bad: int | None = None
    in_flight: list[int] = []
    history: int = 0


class ContextTestJobResult(RowPayload):
    """The result of a ``context_test`` job, as its row stores it: the verdict of the search,
    how it was reached, what it resumed from, and the registry columns it wrote."""

    model_id: str | None = None
    host: str | None = None
    optimal_context: int | None = None
    failure_point: int | None = None
    loadable_context: int | None = None
    stop_reason: str | None = None
    converged: bool = False
    # The one size tested when the caller asked for a single size (``--ctx``), else None.
    single_size: int | None = None
    lower: int | None = None
    upper: int | None = None
    granularity: int | None = None
    iterations: int = 0
    load_probes: int = 0
    use_probes: int = 0
    probe_seconds: float = 0.0
    time_to_first_token: float | None = None
    tokens_per_second: float | None = None
    test_points: list[dict[str, Any]] = []
    # The needle depths not recalled at the failure point (None: no use probe failed there).
    failed_depths: list[float] | None = None
    # Whether another client had an instance loaded on the host during some probe.
    disturbed: bool = False
    resumed: ContextTestResumed | None = None
    # The registry columns the verdict wrote (absent when the test was cancelled first).
    registry: dict[str, Any] | None = None
    cancelled: bool = False
    # What the test could not do on this host (no load control: the loadable limit).
    note: str | None = None

    def to_row(self) -> dict[str, Any]:
        # ``registry``, ``cancelled`` and ``note`` are written only when they say something, so
        # a row reads the same as the ones written before this model existed.
        unset = {k for k in ("registry", "cancelled", "note") if not getattr(self, k)}
        return self.model_dump(mode="json", exclude=unset)
