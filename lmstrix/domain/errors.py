"""The exceptions lmstrix raises.

Every exception carries the structured facts a caller needs (model id, host URL, token counts,
job id) as attributes and in ``details``, and a message that says what to do next. Nothing here
ever holds a secret: hosts are identified by URL and tokens are never passed in.

An error also crosses processes: a worker stores it in the job's row as an :class:`ErrorPayload`
(class name, message, details) and the caller's side rebuilds it from there. ``details`` names the
constructor's arguments, which is what makes the rebuilding work for every class, and
``raised_to_caller`` says what the facades do with a job that failed with it.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

START_SERVER_HINT = (
    "start LM Studio's server with `lms server start` (or `lms daemon up` for the headless "
    "daemon), or point lmstrix at the right host with LMSTRIX_BASE_URL / LMSTRIX_HOSTS"
)


@dataclass(frozen=True, slots=True)
class ErrorPayload:
    """An error as a job's row stores it: the class name, the message, the details (JSON)."""

    error_type: str
    message: str
    details: dict[str, Any] | None = None

    @classmethod
    def of(cls, exc: BaseException) -> ErrorPayload:
        """Any exception's payload; one that is no :class:`LMStrixError` (a bug) has no details."""
        if isinstance(exc, LMStrixError):
            return exc.to_payload()
        return cls(type(exc).__name__, str(exc))

    @property
    def raised_to_caller(self) -> bool:
        """Whether the facades raise this error rather than return a failed result."""
        known = LMStrixError.registered(self.error_type)
        return known is not None and known.raised_to_caller

    def to_exception(self) -> LMStrixError:
        return LMStrixError.from_payload(self)


class LMStrixError(Exception):
    """Root of every lmstrix error. ``details`` holds the structured facts."""

    #: True for faults the caller must handle (a host that cannot be reached is not an answer):
    #: a job that failed with one is raised again to the caller. Otherwise (a model-side failure)
    #: it becomes a ``succeeded=False`` result.
    raised_to_caller: ClassVar[bool] = False

    # Every subclass by its name, the key a job's row stores it under.
    _by_name: ClassVar[dict[str, type[LMStrixError]]] = {}

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        known = LMStrixError._by_name.get(cls.__name__)
        if known is not None and known.__module__ != cls.__module__:
            raise TypeError(
                f"{cls.__module__}.{cls.__name__}: {known.__module__} already has an error class "
                "of that name, and a job's row could not tell them apart"
            )
        LMStrixError._by_name[cls.__name__] = cls

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    @staticmethod
    def registered(name: str | None) -> type[LMStrixError] | None:
        """The error class called ``name``, if there is one."""
        return None if name is None else LMStrixError._by_name.get(name)

    def to_payload(self) -> ErrorPayload:
        details = jsonable(self.details) if self.details else None
        return ErrorPayload(type(self).__name__, self.message, details)

    @staticmethod
    def from_payload(payload: ErrorPayload) -> LMStrixError:
        """The error a payload describes, with the stored message (which may say more than the
        class's template). An unknown class, or details that do not fit its constructor, give
        a plain :class:`LMStrixError` with that message."""
        details = payload.details or {}
        cls = LMStrixError.registered(payload.error_type)
        exc: LMStrixError | None = None
        if cls is not None:
            exc = cls._from_details(payload.message, details)
        if exc is None:
            exc = LMStrixError(payload.message, **details)
        exc.message = payload.message
        exc.args = (payload.message,)
        return exc

    @classmethod
    def _from_details(cls, message: str, details: dict[str, Any]) -> LMStrixError | None:
        """An instance built from the constructor arguments ``details`` names; None when a
        required one is missing or a value does not fit."""
        params = inspect.signature(cls.__init__).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        kwargs = {k: v for k, v in details.items() if takes_any or k in params}
        if "message" in params:
            kwargs["message"] = message
        try:
            return cls(**kwargs)
        except (TypeError, ValueError, KeyError, AttributeError):
            return None


LMStrixError._by_name[LMStrixError.__name__] = LMStrixError


def jsonable(value: Any) -> Any:
    """``value`` with everything JSON cannot hold turned into its string."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class ConfigurationError(LMStrixError):
    """A configuration value is missing or wrong; names the key and the source to fix."""

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None) -> None:
        super().__init__(message, key=key, source=source)
        self.key = key
        self.source = source


def _elide(text: str, keep: int = 57) -> str:
    head = keep // 2
    return text[:head] + "..." + text[len(text) - (keep - head) :]


class ValidationError(LMStrixError):
    """A bad argument: names the field, the rejected value and what is accepted."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        # A long value is shown by its start and its end (a path's file name, a prompt's last
        # words), so the message stays one readable line.
        shown = value if not isinstance(value, str) or len(value) <= 60 else _elide(value)
        super().__init__(f"invalid {field}={shown!r}: {reason}", field=field, value=value)
        self.field = field
        self.value = value
        self.reason = reason


class LMStudioConnectionError(LMStrixError):
    """The LM Studio host cannot be reached (refused, DNS, connect timeout, not LM Studio).

    ``request_sent`` is False when nothing reached the host (connecting failed), the one case
    the worker retries: trying again cannot repeat a prompt. True when some server received the
    request and answered with something that is not LM Studio's.
    """

    raised_to_caller = True

    def __init__(
        self, host_url: str, reason: str, *, hint: str | None = None, request_sent: bool = False
    ) -> None:
        hint = hint or START_SERVER_HINT
        super().__init__(
            f"cannot reach LM Studio at {host_url}: {reason}; {hint}",
            host_url=host_url,
            reason=reason,
        )
        if request_sent:
            self.details["request_sent"] = True
        self.host_url = host_url
        self.reason = reason
        self.request_sent = request_sent


class NotAnLLMServerError(LMStudioConnectionError):
    """Something answers at the URL, but it is no LLM server (a web page, 404 everywhere)."""

    def __init__(self, host_url: str, tried: str) -> None:
        LMStrixError.__init__(
            self,
            f"{host_url} answers HTTP but is no LLM server: tried {tried}; check the URL and "
            "port: give the server's root (e.g. http://localhost:1234), not a web page",
            host_url=host_url,
            tried=tried,
        )
        self.host_url = host_url
        self.reason = f"no LLM server (tried {tried})"
        self.request_sent = True


class HostDownError(LMStudioConnectionError):
    """A host's worker found the host down and failed its queued jobs together, none of them
    sent: a job had just failed for want of an answer, and probes got none either (for the
    grace period ``queue.host_down_grace``), so each queued job would only have waited out its
    own timeout."""

    def __init__(self, host_url: str, reason: str, *, grace_seconds: float = 0.0) -> None:
        super().__init__(
            host_url,
            reason,
            hint="this job was never sent to it; check that LM Studio runs and answers, then "
            "submit the job again (`lmstrix jobs retry ID`)",
        )
        self.details["grace_seconds"] = grace_seconds
        self.grace_seconds = grace_seconds


class LMStudioTimeoutError(LMStrixError):
    """The host received a request and did not answer it within its time limit (``setting``:
    ``lmstudio.timeout`` for inference, ``lmstudio.load_timeout`` for loads). The request had
    reached the host, so it is never sent again on its own."""

    raised_to_caller = True

    def __init__(
        self,
        host_url: str,
        seconds: float,
        *,
        operation: str = "serve the request",
        setting: str = "lmstudio.timeout",
        detail: str | None = None,
    ) -> None:
        more = f" ({detail})" if detail else ""
        super().__init__(
            f"LM Studio at {host_url} did not answer within {seconds:g}s ({setting}) when asked "
            f"to {operation}{more}; it had the request, so it was not sent again: raise "
            f"{setting} if the model needs longer, or check that LM Studio is not hung",
            host_url=host_url,
            seconds=seconds,
            operation=operation,
            setting=setting,
            detail=detail,
        )
        self.host_url = host_url
        self.seconds = seconds
        self.operation = operation
        self.setting = setting
        self.detail = detail


class LMStudioAuthError(LMStrixError):
    """The host requires an API token, or rejected the one given."""

    raised_to_caller = True

    def __init__(self, host_url: str, reason: str, *, token_sent: bool) -> None:
        fix = (
            "the token was rejected: create a new one in LM Studio (Developer > Server Settings > "
            "Manage Tokens) and set it as the host's token or LM_API_TOKEN"
            if token_sent
            else "this server requires authentication: set LM_API_TOKEN or the host's token "
            "in the lmstrix config"
        )
        super().__init__(
            f"LM Studio at {host_url} refused the request: {reason}; {fix}",
            host_url=host_url,
            reason=reason,
            token_sent=token_sent,
        )
        self.host_url = host_url
        self.reason = reason
        self.token_sent = token_sent


class UnsupportedEndpointError(LMStrixError):
    """The host's LM Studio is too old for an operation (e.g. HTTP load needs 0.4.0)."""

    def __init__(self, host_url: str, operation: str, needed: str, reason: str = "") -> None:
        msg = f"LM Studio at {host_url} cannot {operation}: it needs {needed}"
        if reason:
            msg += f" ({reason})"
        super().__init__(
            msg + "; update LM Studio or use a host that has it",
            host_url=host_url,
            operation=operation,
            needed=needed,
        )
        self.host_url = host_url
        self.operation = operation
        self.needed = needed


class ModelNotFoundError(LMStrixError):
    """The model id is not known (to the registry or to the host); lists close matches."""

    raised_to_caller = True

    def __init__(
        self,
        model_id: str,
        *,
        suggestions: Sequence[str] = (),
        host_url: str | None = None,
        reason: str | None = None,
    ) -> None:
        where = f" on {host_url}" if host_url else ""
        msg = f"model {model_id!r} not found{where}"
        if reason:
            msg += f" ({reason})"
        if suggestions:
            msg += "; did you mean: " + ", ".join(suggestions[:5]) + "?"
        else:
            msg += "; run `lmstrix scan` and `lmstrix list` to see the models you have"
        super().__init__(msg, model_id=model_id, suggestions=list(suggestions), host_url=host_url)
        self.model_id = model_id
        self.suggestions = list(suggestions)
        self.host_url = host_url


class ModelLoadError(LMStrixError):
    """LM Studio failed to load a model (insufficient resources, engine failure...)."""

    def __init__(
        self,
        model_id: str,
        reason: str,
        *,
        host_url: str | None = None,
        context_length: int | None = None,
    ) -> None:
        at = f" at context {context_length}" if context_length else ""
        fix = (
            "try a smaller context length (`lmstrix test` finds the largest that loads)"
            if "resources" in reason or "memory" in reason
            else "check the model in LM Studio, or try a smaller context length"
        )
        super().__init__(
            f"failed to load model {model_id!r}{at}: {reason}; {fix}",
            model_id=model_id,
            reason=reason,
            host_url=host_url,
            context_length=context_length,
        )
        self.model_id = model_id
        self.reason = reason
        self.host_url = host_url
        self.context_length = context_length

    @property
    def insufficient_resources(self) -> bool:
        return "insufficient system resources" in self.reason or "memory" in self.reason.lower()


class ContextLimitExceededError(LMStrixError):
    """The prompt (plus the requested output) does not fit in the model's context."""

    raised_to_caller = True

    def __init__(
        self,
        model_id: str | None,
        *,
        prompt_tokens: int | None,
        context_limit: int | None,
        requested_output: int | None = None,
        reason: str | None = None,
    ) -> None:
        parts = []
        if prompt_tokens is not None:
            parts.append(f"{prompt_tokens} prompt tokens")
        if requested_output:
            parts.append(f"{requested_output} output tokens")
        need = " + ".join(parts) or "the request"
        limit = f"the {context_limit}-token context" if context_limit else "the loaded context"
        who = f" of {model_id!r}" if model_id else ""
        msg = f"{need} do not fit in {limit}{who}"
        if reason:
            msg += f" ({reason})"
        msg += "; shorten the prompt, lower the output budget, or use a larger context"
        super().__init__(
            msg,
            model_id=model_id,
            prompt_tokens=prompt_tokens,
            requested_output=requested_output,
            context_limit=context_limit,
        )
        self.model_id = model_id
        self.prompt_tokens = prompt_tokens
        self.requested_output = requested_output
        self.context_limit = context_limit


class InferenceError(LMStrixError):
    """The model side failed while answering (engine crash, bad response...)."""

    def __init__(self, model_id: str | None, reason: str, *, host_url: str | None = None) -> None:
        who = f" for model {model_id!r}" if model_id else ""
        super().__init__(
            f"inference failed{who}: {reason}",
            model_id=model_id,
            reason=reason,
            host_url=host_url,
        )
        self.model_id = model_id
        self.reason = reason
        self.host_url = host_url


class LMStudioServerError(InferenceError):
    """The host took the request and failed it: an HTTP 5xx answer that LM Studio's error texts
    do not explain (``status``), or the connection closed before any answer (``status`` None).
    The request had reached the host, so it is never sent again on its own."""

    def __init__(
        self,
        host_url: str,
        reason: str,
        *,
        status: int | None = None,
        model_id: str | None = None,
        operation: str = "serve the request",
    ) -> None:
        what = f"HTTP {status}: {reason}" if status is not None else reason
        LMStrixError.__init__(
            self,
            f"LM Studio at {host_url} failed to {operation}: {what}; it had the request, so it "
            "was not sent again: check LM Studio's server log, then retry",
            host_url=host_url,
            reason=reason,
            status=status,
            model_id=model_id,
            operation=operation,
        )
        self.host_url = host_url
        self.reason = reason
        self.status = status
        self.model_id = model_id
        self.operation = operation


class JobDeadlineError(LMStrixError):
    """A job's worker gave up retrying it: another try would have ended past the job's deadline
    (``queue.job_deadline``, counted from when the worker took the job)."""

    raised_to_caller = True

    def __init__(
        self,
        job_id: str,
        deadline_seconds: float,
        *,
        elapsed_seconds: float,
        tries: int,
        last_error: str,
    ) -> None:
        super().__init__(
            f"job {job_id} gave up after {elapsed_seconds:.1f}s and {tries} tries: another try "
            f"would end past its deadline of {deadline_seconds:g}s (queue.job_deadline); last "
            f"error: {last_error}",
            job_id=job_id,
            deadline_seconds=deadline_seconds,
            elapsed_seconds=elapsed_seconds,
            tries=tries,
            last_error=last_error,
        )
        self.job_id = job_id
        self.deadline_seconds = deadline_seconds
        self.elapsed_seconds = elapsed_seconds
        self.tries = tries
        self.last_error = last_error


class InferenceTimeoutError(LMStrixError):
    """A job did not finish within the caller's timeout. ``cancelled`` says whether the caller
    cancelled it then; otherwise ``status`` is where the job still stands (it goes on).
    ``hint`` says what else the caller should know (no worker serves the host)."""

    def __init__(
        self,
        job_id: str | None,
        waited_seconds: float,
        *,
        model_id: str | None = None,
        cancelled: bool = True,
        status: str | None = None,
        hint: str | None = None,
    ):
        job = f"job {job_id}" if job_id else "the request"
        if cancelled or job_id is None:
            message = (
                f"{job} did not finish within {waited_seconds:.1f}s and was cancelled; raise the "
                "timeout, or check the host's worker with `lmstrix jobs list` and `lmstrix hosts`"
            )
        else:
            message = (
                f"{job} did not finish within {waited_seconds:.1f}s; it is still "
                f"{status or 'queued'} and goes on: `lmstrix jobs wait {job_id}` waits again, "
                f"`lmstrix jobs cancel {job_id}` stops it"
            )
        if hint:
            message = f"{message}. Note: {hint}"
        super().__init__(
            message,
            job_id=job_id,
            waited_seconds=waited_seconds,
            model_id=model_id,
            cancelled=cancelled,
            status=status,
            hint=hint,
        )
        self.cancelled = cancelled
        self.status = status
        self.hint = hint
        self.job_id = job_id
        self.waited_seconds = waited_seconds
        self.model_id = model_id


class JobNotFound(LMStrixError):
    """No job has this id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"no job with id {job_id!r}; `lmstrix jobs list` shows the known jobs",
            job_id=job_id,
        )
        self.job_id = job_id


class RegistryError(LMStrixError):
    """The registry's storage cannot be used (corrupt file, failed migration...)."""


class DatabaseUnavailableError(LMStrixError):
    """The queue's database did not answer (PostgreSQL restarting, a network cut, a SQLite file
    locked for too long). Nothing about the job is known to be lost: its row is where it was."""

    raised_to_caller = True

    def __init__(self, database: str, reason: str) -> None:
        super().__init__(
            f"the database at {database} does not answer ({reason}); check that it is running "
            "and reachable (lmstrix retries for as long as the call's timeout allows)",
            database=database,
            reason=reason,
        )


__all__ = [
    "ConfigurationError",
    "ContextLimitExceededError",
    "DatabaseUnavailableError",
    "ErrorPayload",
    "HostDownError",
    "InferenceError",
    "InferenceTimeoutError",
    "JobDeadlineError",
    "JobNotFound",
    "LMStrixError",
    "LMStudioAuthError",
    "LMStudioConnectionError",
    "LMStudioServerError",
    "LMStudioTimeoutError",
    "ModelLoadError",
    "ModelNotFoundError",
    "RegistryError",
    "UnsupportedEndpointError",
    "ValidationError",
]
