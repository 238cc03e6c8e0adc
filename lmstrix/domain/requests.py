"""What a job asks for, validated before a row is written.

A job row stores its request as JSON and a worker may run it hours later on another machine, so
bad values must be refused at submit time, with the field named, not discovered by the worker.

Types are strict: a number given as a string (``top_k="5"``), a bool given for a number, or a
number given for text is refused, never converted, so what a caller meant is never guessed. An
``int`` is accepted where a ``float`` is expected (``temperature=1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from lmstrix.domain.context_blocks import ContextData, check_context_data
from lmstrix.domain.errors import ValidationError

# pydantic's error types for a value of the wrong type, and how lmstrix words the fix.
_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "finite_number": "a finite number",
    "string_type": "a string",
    "bool_type": "True or False",
    "dict_type": "a dict",
}


@dataclass(frozen=True, slots=True)
class InferenceOptions:
    """What a caller sets for one inference besides the model and the prompt, as ``infer()``
    takes it (``out_ctx`` still unresolved). Passed whole from the facades to the request.

    Validated when it is made, strictly (see the module docstring): a wrong value raises
    ``ValidationError`` naming the field before anything else happens. ``context_data`` is
    checked for its shape here (see :mod:`lmstrix.domain.context_blocks`); file paths in it are
    read by the facades.
    """

    out_ctx: int | str = "auto"
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int | None = None
    system_prompt: str | None = None
    context_data: ContextData | None = None
    repeat_penalty: float | None = None
    min_p: float | None = None
    stop: str | Sequence[str] | None = None
    seed: int | None = None
    # Earlier turns of a conversation, sent before the prompt (the OpenAI-compatible server's
    # multi-turn chats): ``({"role": "user", "content": ...}, {"role": "assistant", ...})``.
    history: tuple[dict[str, Any], ...] | None = None

    def __post_init__(self) -> None:
        # One stop string or several; kept as a tuple, so the options stay immutable.
        object.__setattr__(self, "stop", stop_strings(self.stop))
        values = {k: getattr(self, k) for k in SamplingOptions.model_fields}
        values["stop"] = None if self.stop is None else list(self.stop)
        validate_request(SamplingOptions, values)
        if self.history is not None:
            validate_request(ChatHistory, {"history": list(self.history)})
        if isinstance(self.out_ctx, bool) or not isinstance(self.out_ctx, int | str):
            raise ValidationError(
                "out_ctx",
                self.out_ctx,
                "must be a positive integer, -1 (no limit), 'auto' or a percentage like '25%'",
            )
        check_context_data(self.context_data)

    @classmethod
    def of(cls, **options: Any) -> InferenceOptions:
        """Options from keyword arguments, as ``BatchProcessor.process_batch(**options)`` takes
        them; an unknown name is a ``ValidationError`` listing the known ones."""
        known = [f.name for f in fields(cls)]
        for name, value in options.items():
            if name not in known:
                raise ValidationError(
                    name, value, f"is not an option of infer(); the options are {', '.join(known)}"
                )
        return cls(**options)


class ExtraSampling(TypedDict, total=False):
    """The sampling options ``infer()``, ``stream()`` and ``submit()`` take by keyword after the
    documented ones; each is left out of the request to the host when not given (the model's own
    default applies)."""

    repeat_penalty: float  # over 0; 1 is no penalty
    min_p: float  # 0 to 1
    stop: str | Sequence[str]  # generation ends before any of these strings
    seed: int  # the same seed, prompt and settings give the same answer


MAX_STOP_STRINGS = 16


def stop_strings(value: Any) -> tuple[str, ...] | None:
    """``stop`` as a tuple of non-empty strings: one string, or a list or tuple of them (at
    most ``MAX_STOP_STRINGS``); None for none. Anything else is a ``ValidationError``."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValidationError(
            "stop", value, f"must be a string or a list of strings, not {type(value).__name__}"
        )
    if len(items) > MAX_STOP_STRINGS:
        raise ValidationError("stop", value, f"takes at most {MAX_STOP_STRINGS} strings")
    for item in items:
        if not isinstance(item, str) or not item:
            raise ValidationError("stop", item, "each stop string must be a non-empty string")
    return tuple(items) or None


class SamplingOptions(BaseModel):
    """The caller's sampling settings, strictly typed."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    system_prompt: str | None = None
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(-1, ge=-1)
    max_tokens: int | None = Field(None, ge=-1)
    repeat_penalty: float | None = Field(None, gt=0.0, le=10.0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    stop: list[str] | None = Field(None, max_length=MAX_STOP_STRINGS)
    seed: int | None = Field(None, ge=-1, le=2**63 - 1)


class ChatTurn(BaseModel):
    """One earlier message of a conversation."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    role: Literal["system", "user", "assistant"]
    content: str


class ChatHistory(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    history: list[ChatTurn]


class InferenceRequest(SamplingOptions):
    """One chat completion as queued: the prompt as sent (``context_data`` blocks already
    placed before it), sampling settings, the output budget and the context to load the model
    at."""

    prompt: str = Field(min_length=1)
    # Earlier turns of the conversation, sent before the prompt (None: the prompt alone).
    history: list[ChatTurn] | None = None
    # The context length to load the model at (None: whatever the worker thinks sane).
    context_length: int | None = Field(None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _legacy_context_data(cls, data: Any) -> Any:
        # Rows queued before context_data reached the prompt carry the key (it was never sent,
        # so it is dropped, which is what running them did).
        if isinstance(data, dict) and "context_data" in data:
            data = {k: v for k, v in data.items() if k != "context_data"}
        return data


def _reason(err: Any) -> str:
    expected = _EXPECTED.get(err["type"])
    if expected is None:
        return str(err["msg"])
    value = err.get("input")
    reason = f"must be {expected}, not {type(value).__name__}"
    if isinstance(value, bool):
        return reason + "; a bool is not accepted for a number"
    if isinstance(value, str) and expected in ("an integer", "a number"):
        return reason + f"; pass the number itself ({value.strip()} without quotes)"
    return reason + " (lmstrix does not convert values)"


def validate_request(cls: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    """``cls(**data)`` with pydantic's errors turned into lmstrix's, naming the first bad field
    and what it must be."""
    try:
        return cls.model_validate(data)
    except PydanticValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"]) or cls.__name__
        raise ValidationError(field, err.get("input"), _reason(err)) from None


def inference_request(**data: Any) -> InferenceRequest:
    req = validate_request(InferenceRequest, data)
    assert isinstance(req, InferenceRequest)
    return req
