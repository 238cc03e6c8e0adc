"""What an inference job's row holds as its result, typed: written by the worker, read by the
facades and the batch output file.

The row stores it as JSON and rows outlive versions, so reading is lenient: a key that is missing
or null reads as its no-answer value (a failed job's row holds only its error's details), and
keys this version does not know are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from lmstrix.domain.requests import validate_request


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


class InferenceJobResult(BaseModel):
    """The result of one chat completion, as an ``inference`` or ``batch_item`` row stores it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

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

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | None) -> InferenceJobResult:
        present = {k: v for k, v in (row or {}).items() if v is not None}
        result = validate_request(cls, present)
        assert isinstance(result, InferenceJobResult)
        return result

    def to_row(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
