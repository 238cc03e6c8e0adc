"""lmstrix: a tested-context registry and a per-host job queue for LM Studio models.

The public classes are importable from here; each is loaded on first use, so ``import lmstrix``
(and importing any pure module under it) stays cheap::

    from lmstrix import InferenceManager, ModelRegistry
"""

from __future__ import annotations

import importlib

# Not ``from typing import TYPE_CHECKING``: importing typing would double what ``import lmstrix``
# costs, and the names below are for type checkers only.
TYPE_CHECKING = False

__version__ = "0.1.0"

# public name -> the module that defines it (its documented import path)
_PUBLIC: dict[str, str] = {
    "InferenceManager": "lmstrix.core.inference_manager",
    "AsyncInferenceManager": "lmstrix.core.inference_manager",
    "InferenceResult": "lmstrix.core.inference_manager",
    "InferenceStream": "lmstrix.core.inference_manager",
    "AsyncInferenceStream": "lmstrix.core.inference_manager",
    "ModelRegistry": "lmstrix.core.models",
    "Model": "lmstrix.core.models",
    "Scanner": "lmstrix.core.scanner",
    "ContextTester": "lmstrix.core.context_tester",
    "ContextManager": "lmstrix.core.context",
    "BatchProcessor": "lmstrix.core.batch_processor",
    "ModelComparator": "lmstrix.utils.comparison",
    "LMStudioDefaults": "lmstrix.core.lmstudio_defaults",
    "PromptLoader": "lmstrix.loaders.prompt_loader",
    "ContextLoader": "lmstrix.loaders.context_loader",
    "load_model_registry": "lmstrix.loaders.model_loader",
    "Config": "lmstrix.core.config",
    "setup_logging": "lmstrix.utils.logging",
    "LMStrixError": "lmstrix.api.exceptions",
    "ConfigurationError": "lmstrix.api.exceptions",
    "ValidationError": "lmstrix.api.exceptions",
    "LMStudioConnectionError": "lmstrix.api.exceptions",
    "LMStudioAuthError": "lmstrix.api.exceptions",
    "ModelNotFoundError": "lmstrix.api.exceptions",
    "ModelLoadError": "lmstrix.api.exceptions",
    "ContextLimitExceededError": "lmstrix.api.exceptions",
    "InferenceError": "lmstrix.api.exceptions",
    "InferenceTimeoutError": "lmstrix.api.exceptions",
    "LMStudioTimeoutError": "lmstrix.api.exceptions",
    "DatabaseUnavailableError": "lmstrix.api.exceptions",
    "LMStudioServerError": "lmstrix.api.exceptions",
    "HostDownError": "lmstrix.api.exceptions",
    "NotAnLLMServerError": "lmstrix.api.exceptions",
    "JobDeadlineError": "lmstrix.api.exceptions",
    "JobNotFound": "lmstrix.api.exceptions",
    "RegistryError": "lmstrix.api.exceptions",
}

__all__ = [
    "AsyncInferenceManager",
    "AsyncInferenceStream",
    "BatchProcessor",
    "Config",
    "ConfigurationError",
    "ContextLimitExceededError",
    "ContextLoader",
    "ContextManager",
    "ContextTester",
    "DatabaseUnavailableError",
    "HostDownError",
    "InferenceError",
    "InferenceManager",
    "InferenceResult",
    "InferenceStream",
    "InferenceTimeoutError",
    "JobDeadlineError",
    "JobNotFound",
    "LMStrixError",
    "LMStudioAuthError",
    "LMStudioConnectionError",
    "LMStudioDefaults",
    "LMStudioServerError",
    "LMStudioTimeoutError",
    "Model",
    "ModelComparator",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelRegistry",
    "NotAnLLMServerError",
    "PromptLoader",
    "RegistryError",
    "Scanner",
    "ValidationError",
    "__version__",
    "load_model_registry",
    "setup_logging",
]

if TYPE_CHECKING:
    from typing import Any

    from lmstrix.api.exceptions import (
        ConfigurationError,
        ContextLimitExceededError,
        DatabaseUnavailableError,
        HostDownError,
        InferenceError,
        InferenceTimeoutError,
        JobDeadlineError,
        JobNotFound,
        LMStrixError,
        LMStudioAuthError,
        LMStudioConnectionError,
        LMStudioServerError,
        LMStudioTimeoutError,
        ModelLoadError,
        ModelNotFoundError,
        NotAnLLMServerError,
        RegistryError,
        ValidationError,
    )
    from lmstrix.core.batch_processor import BatchProcessor
    from lmstrix.core.config import Config
    from lmstrix.core.context import ContextManager
    from lmstrix.core.context_tester import ContextTester
    from lmstrix.core.inference_manager import (
        AsyncInferenceManager,
        AsyncInferenceStream,
        InferenceManager,
        InferenceResult,
        InferenceStream,
    )
    from lmstrix.core.lmstudio_defaults import LMStudioDefaults
    from lmstrix.core.models import Model, ModelRegistry
    from lmstrix.core.scanner import Scanner
    from lmstrix.loaders.context_loader import ContextLoader
    from lmstrix.loaders.model_loader import load_model_registry
    from lmstrix.loaders.prompt_loader import PromptLoader
    from lmstrix.utils.comparison import ModelComparator
    from lmstrix.utils.logging import setup_logging


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'lmstrix' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
