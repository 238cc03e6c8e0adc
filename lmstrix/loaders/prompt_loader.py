"""Public import path of ``PromptLoader``; it lives in :mod:`lmstrix.core.prompt_loader`."""

from lmstrix.core.prompt_loader import (
    MAX_FILE_BYTES,
    PromptLibrary,
    PromptLoader,
    PromptTemplate,
    parse_prompts,
)

__all__ = ["MAX_FILE_BYTES", "PromptLibrary", "PromptLoader", "PromptTemplate", "parse_prompts"]
