"""Public import path of ``ContextLoader``; it lives in :mod:`lmstrix.core.context_loader`, where
the facades read ``context_data`` files with it."""

from lmstrix.core.context_loader import (
    MAX_FILE_BYTES,
    MAX_TOTAL_BYTES,
    ContextLoader,
    decode_text,
)

__all__ = ["MAX_FILE_BYTES", "MAX_TOTAL_BYTES", "ContextLoader", "decode_text"]
