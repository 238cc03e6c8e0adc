"""What a job asks for, validated before a row is written.

A job row stores its request as JSON and a worker may run it hours later on another machine, so
bad values must be refused at submit time, with the field named, not discovered by the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from lmstrix.domain.errors import ValidationError


@dataclass(frozen=True, slots=True)
class InferenceOptions:
    """What a caller sets for one inference besides the model and the prompt, as ``infer()``
    takes it (``out_ctx`` still unresolved). Passed whole from the facades to the request."""

    out_ctx: int | str = "auto"
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int | None = None
    system_prompt: str | None = None
    context_data: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    """One chat completion: the prompt, sampling settings and the context to load the model at."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(min_length=1)
    system_prompt: str | None = None
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(-1, ge=-1)
    max_tokens: int | None = Field(None, ge=-1)
    # The context length to load the model at (None: whatever the worker thinks sane).
    context_length: int | None = Field(None, ge=1)
    context_data: dict[str, Any] | None = None


def validate_request(cls: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    """``cls(**data)`` with pydantic's errors turned into lmstrix's, naming the first bad field."""
    try:
        return cls.model_validate(data)
    except PydanticValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"]) or cls.__name__
        value = err.get("input")
        raise ValidationError(field, value, err["msg"]) from None


def inference_request(**data: Any) -> InferenceRequest:
    req = validate_request(InferenceRequest, data)
    assert isinstance(req, InferenceRequest)
    return req
