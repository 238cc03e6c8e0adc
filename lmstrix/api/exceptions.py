"""Public import path; the definitions live in :mod:`lmstrix.domain.errors`."""

from lmstrix.domain.errors import (
    START_SERVER_HINT,
    ConfigurationError,
    ContextLimitExceededError,
    InferenceError,
    InferenceTimeoutError,
    JobNotFound,
    LMStrixError,
    LMStudioAuthError,
    LMStudioConnectionError,
    ModelLoadError,
    ModelNotFoundError,
    RegistryError,
    UnsupportedEndpointError,
    ValidationError,
)

__all__ = [
    "START_SERVER_HINT",
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
