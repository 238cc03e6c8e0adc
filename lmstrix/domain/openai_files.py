"""The OpenAI files API's shapes, as ``lmstrix serve`` reads and writes them: pure functions.

A file is an uploaded batch input (purpose ``batch``) or a batch's output or error file
(purpose ``batch_output``, made from the batch's job rows when it is read). The file object,
the ``POST /v1/batches`` body and the cursor pages of the list endpoints live here; nothing here
touches the database or the network.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lmstrix.domain.errors import LMStrixError, ValidationError
from lmstrix.domain.openai_batch import ENDPOINTS

UPLOAD_PURPOSE = "batch"  # the one purpose an upload may have
OUTPUT_PURPOSE = "batch_output"
OUTPUT, ERROR = "output", "error"  # the two parts a batch's result files hold
COMPLETION_WINDOW = "24h"
MAX_FILENAME = 512  # the files.filename column
MAX_METADATA_KEYS = 16  # OpenAI's bounds on a batch's metadata
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MAX_PAGE = 100  # OpenAI's largest ``limit``


class FileNotFound(LMStrixError):
    """No file has this id."""

    def __init__(self, file_id: str) -> None:
        super().__init__(
            f"no file with id {file_id!r}; GET /v1/files lists the known files", file_id=file_id
        )
        self.file_id = file_id


class FileTooLarge(ValidationError):
    """An upload over the configured bound (``[serve] max_file_bytes``)."""

    def __init__(self, size: int | None, bound: int) -> None:
        got = "more" if size is None else f"{size} bytes"
        super().__init__(
            "file",
            got,
            f"a file may have at most {bound} bytes ([serve] max_file_bytes); split the batch",
        )
        self.bound = bound


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class FileRecord:
    """A file row as callers see it (``size`` is None for a result file not measured yet)."""

    id: str
    purpose: str
    filename: str
    size: int | None
    created_at: datetime
    batch_id: str | None = None
    part: str | None = None

    def to_openai(self, size: int | None = None) -> dict[str, Any]:
        """The OpenAI file object; ``size`` is the measured size of a made-on-demand file."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.size if self.size is not None else (size or 0),
            "created_at": int(self.created_at.timestamp()),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


def check_upload(purpose: Any, filename: Any) -> tuple[str, str]:
    """The purpose and file name of an upload, or ``ValidationError`` naming the field."""
    if purpose != UPLOAD_PURPOSE:
        raise ValidationError(
            "purpose", purpose, f"must be {UPLOAD_PURPOSE!r}: lmstrix serve keeps batch inputs"
        )
    if not isinstance(filename, str) or not filename.strip():
        filename = "upload.jsonl"
    return purpose, filename.strip()[-MAX_FILENAME:]


@dataclass(frozen=True, slots=True)
class BatchCreate:
    """A checked ``POST /v1/batches`` body."""

    input_file_id: str
    endpoint: str
    metadata: dict[str, str] | None


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or len(value) > MAX_METADATA_KEYS:
        raise ValidationError(
            "metadata", value, f"must be an object of at most {MAX_METADATA_KEYS} strings"
        )
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValidationError(f"metadata.{k}", v, "keys and values must be strings")
        if len(k) > MAX_METADATA_KEY or len(v) > MAX_METADATA_VALUE:
            raise ValidationError(
                f"metadata.{k}",
                v,
                f"keys may have {MAX_METADATA_KEY} characters, values {MAX_METADATA_VALUE}",
            )
    return dict(value)


def parse_batch_create(body: Mapping[str, Any]) -> BatchCreate:
    """A ``POST /v1/batches`` body; a bad field raises ``ValidationError`` naming it."""
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str) or not file_id.strip():
        raise ValidationError("input_file_id", file_id, "must be the id of an uploaded file")
    endpoint = body.get("endpoint")
    if endpoint not in ENDPOINTS:
        raise ValidationError("endpoint", endpoint, f"must be one of {', '.join(ENDPOINTS)}")
    window = body.get("completion_window")
    if window != COMPLETION_WINDOW:
        raise ValidationError(
            "completion_window", window, f"must be {COMPLETION_WINDOW!r}, as OpenAI takes it"
        )
    return BatchCreate(file_id.strip(), endpoint, _metadata(body.get("metadata")))


def page_limit(value: Any, default: int = 20) -> int:
    """A list endpoint's ``limit`` query parameter: 1 to ``MAX_PAGE``."""
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if not 1 <= n <= MAX_PAGE:
        raise ValidationError("limit", value, f"must be an integer from 1 to {MAX_PAGE}")
    return n


def page(data: Sequence[Mapping[str, Any]], has_more: bool) -> dict[str, Any]:
    """A cursor page as OpenAI's list endpoints return it (the SDK pages on ``last_id``)."""
    return {
        "object": "list",
        "data": list(data),
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
