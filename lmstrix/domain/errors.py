"""The exceptions lmstrix raises.

Every exception carries the structured facts a caller needs (model id, host URL, token counts,
job id) as attributes and in ``details``, and a message that says what to do next. Nothing here
ever holds a secret: hosts are identified by URL and tokens are never passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

START_SERVER_HINT = (
    "start LM Studio's server with `lms server start` (or `lms daemon up` for the headless "
    "daemon), or point lmstrix at the right host with LMSTRIX_BASE_URL / LMSTRIX_HOSTS"
)


class LMStrixError(Exception):
    """Root of every lmstrix error. ``details`` holds the structured facts."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ConfigurationError(LMStrixError):
    """A configuration value is missing or wrong; names the key and the source to fix."""

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None) -> None:
        super().__init__(message, key=key, source=source)
        self.key = key
        self.source = source


class ValidationError(LMStrixError):
    """A bad argument: names the field, the rejected value and what is accepted."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        shown = value if not isinstance(value, str) or len(value) <= 60 else value[:57] + "..."
        super().__init__(f"invalid {field}={shown!r}: {reason}", field=field, value=value)
        self.field = field
        self.value = value
        self.reason = reason


class LMStudioConnectionError(LMStrixError):
    """The LM Studio host cannot be reached (refused, DNS, timeout, not LM Studio)."""

    def __init__(self, host_url: str, reason: str, *, hint: str | None = None) -> None:
        hint = hint or START_SERVER_HINT
        super().__init__(
            f"cannot reach LM Studio at {host_url}: {reason}; {hint}",
            host_url=host_url,
            reason=reason,
        )
        self.host_url = host_url
        self.reason = reason


class LMStudioAuthError(LMStrixError):
    """The host requires an API token, or rejected the one given."""

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


class InferenceTimeoutError(LMStrixError):
    """A job did not finish within the caller's timeout (the job was cancelled)."""

    def __init__(self, job_id: str | None, waited_seconds: float, *, model_id: str | None = None):
        job = f"job {job_id}" if job_id else "the request"
        super().__init__(
            f"{job} did not finish within {waited_seconds:.1f}s and was cancelled; raise the "
            "timeout, or check the host's worker with `lmstrix jobs` and `lmstrix hosts`",
            job_id=job_id,
            waited_seconds=waited_seconds,
            model_id=model_id,
        )
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


__all__ = [
    "ConfigurationError",
    "ContextLimitExceededError",
    "InferenceError",
    "InferenceTimeoutError",
    "JobNotFound",
    "LMStrixError",
    "LMStudioAuthError",
    "LMStudioConnectionError",
    "ModelLoadError",
    "ModelNotFoundError",
    "RegistryError",
    "UnsupportedEndpointError",
    "ValidationError",
]
