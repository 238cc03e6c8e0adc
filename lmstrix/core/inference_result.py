"""``InferenceResult``, what ``infer()`` returns, and the one place that builds it from a job.

Every producer of an ``infer()``-shaped result (``InferenceManager`` and its async twin, the batch
processor, the model comparator) goes through :meth:`InferenceResult.from_job` or
:meth:`InferenceResult.failed`, so the keys and their defaults are written once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Never, TypeVar, overload

from lmstrix.domain.enums import JobStatus
from lmstrix.domain.payloads import InferenceJobResult
from lmstrix.jobs.store import JobView

# The keys of the public API, in order.
RESULT_KEYS = (
    "succeeded",
    "response",
    "tokens_used",
    "prompt_tokens",
    "response_tokens",
    "inference_time",
    "time_to_first_token",
    "tokens_per_second",
    "stop_reason",
    "error",
    "model_info",
    "job_id",
)

T = TypeVar("T")


def _optional(convert: Callable[[Any], T]) -> Callable[[Any], T | None]:
    return lambda v: None if v is None else convert(v)


class _Field(Generic[T]):
    """A read-only typed attribute of an :class:`InferenceResult`: its key, converted."""

    def __init__(self, convert: Callable[[Any], T]) -> None:
        self.convert = convert
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _Field[T]: ...
    @overload
    def __get__(self, obj: InferenceResult, owner: type | None = None) -> T: ...
    def __get__(self, obj: InferenceResult | None, owner: type | None = None) -> T | _Field[T]:
        if obj is None:
            return self
        return self.convert(obj[self.name])

    def __set__(self, obj: InferenceResult, value: Never) -> None:
        raise AttributeError(f"property {self.name!r} of 'InferenceResult' object has no setter")


class InferenceResult(dict[str, Any]):
    """The result of ``infer()``: a plain dict (``result["response"]``, JSON-serializable) that
    also reads as a typed object (``result.response``)."""

    succeeded = _Field(bool)
    response = _Field(str)
    tokens_used = _Field(int)
    prompt_tokens = _Field(int)
    response_tokens = _Field(int)
    inference_time = _Field(float)
    time_to_first_token = _Field(_optional(float))
    tokens_per_second = _Field(_optional(float))
    stop_reason = _Field(_optional(str))
    error = _Field(_optional(str))
    model_info: _Field[dict[str, Any]] = _Field(dict)
    job_id = _Field(str)

    @classmethod
    def from_job(cls, job: JobView, *, raise_faults: bool = True) -> InferenceResult:
        """The result of a finished job. Faults the caller must handle are raised (see
        ``LMStrixError.raised_to_caller``) unless ``raise_faults`` is False; other failures give
        ``succeeded=False`` with the row's ``error``."""
        failure = job.failure
        if raise_faults and failure is not None and failure.raised_to_caller:
            raise failure.to_exception()
        r = InferenceJobResult.from_row(job.result)
        succeeded = job.status == JobStatus.SUCCEEDED
        cancelled = job.status == JobStatus.CANCELLED
        error = None if succeeded else job.error_message or job.error_type or job.status
        info = r.model_info.model_dump() if r.model_info else {"id": job.model, "host": job.host}
        return cls._build(
            succeeded=succeeded,
            response=r.response,
            tokens_used=r.tokens_used,
            prompt_tokens=r.prompt_tokens,
            response_tokens=r.response_tokens,
            inference_time=r.inference_time,
            time_to_first_token=r.time_to_first_token,
            tokens_per_second=r.tokens_per_second,
            stop_reason=r.stop_reason or ("cancelled" if cancelled else None),
            error=error,
            model_info=info,
            job_id=job.id,
        )

    @classmethod
    def failed(
        cls, error: str, model_id: str | None, *, job_id: str | None = None
    ) -> InferenceResult:
        """The result of a prompt that never became a finished job (refused before queueing,
        or its wait failed)."""
        return cls._build(succeeded=False, error=error, model_info={"id": model_id}, job_id=job_id)

    @classmethod
    def _build(cls, **values: Any) -> InferenceResult:
        """Every key of the public API, in order; a key not given is the no-answer value."""
        empty: dict[str, Any] = {
            "succeeded": False,
            "response": "",
            "tokens_used": 0,
            "prompt_tokens": 0,
            "response_tokens": 0,
            "inference_time": 0.0,
            "time_to_first_token": None,
            "tokens_per_second": None,
            "stop_reason": None,
            "error": None,
            "model_info": {},
            "job_id": None,
        }
        unknown = values.keys() - empty.keys()
        if unknown:
            raise TypeError(f"InferenceResult has no keys {sorted(unknown)}")
        return cls({key: values.get(key, default) for key, default in empty.items()})


__all__ = ["RESULT_KEYS", "InferenceResult"]
