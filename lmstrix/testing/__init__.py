"""An LM Studio emulator: a real HTTP server speaking LM Studio's API, for tests and demos.

The public surface: :class:`LMStudioEmulator` (and :func:`serve` for ``lmstrix emulator``), its
:class:`EmulatorSettings`, the model description :class:`EmulatedModel` with
:data:`DEFAULT_MODELS`, the default :class:`RuleBackend`, and the tokenizer helpers tests use to
build prompts of known size. pytest fixtures live in ``lmstrix.testing.pytest_plugin``.
"""

from lmstrix.testing.backend import (
    BackendInstance,
    Completion,
    ContextOverflow,
    EmulatedModel,
    LoadFailure,
    ModelBackend,
)
from lmstrix.testing.catalog import DEFAULT_MODELS, EMBEDDING_KEY
from lmstrix.testing.counters import Counters, LoadRecord, UnloadRecord
from lmstrix.testing.emulator import LMStudioEmulator, serve
from lmstrix.testing.rules import RuleBackend, fact_sentence, question
from lmstrix.testing.settings import EmulatorSettings
from lmstrix.testing.tokenizer import (
    chat_filler_messages,
    count_chat_tokens,
    count_tokens,
    filler_text,
)

__all__ = [
    "DEFAULT_MODELS",
    "EMBEDDING_KEY",
    "BackendInstance",
    "Completion",
    "ContextOverflow",
    "Counters",
    "EmulatedModel",
    "EmulatorSettings",
    "LMStudioEmulator",
    "LoadFailure",
    "LoadRecord",
    "ModelBackend",
    "RuleBackend",
    "UnloadRecord",
    "chat_filler_messages",
    "count_chat_tokens",
    "count_tokens",
    "fact_sentence",
    "filler_text",
    "question",
    "serve",
]
