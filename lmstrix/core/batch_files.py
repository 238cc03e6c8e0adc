"""``BatchFiles``: OpenAI's files and batches API over lmstrix's batch layer, as one facade.

An upload (purpose ``batch``) is kept with its bytes in the database. ``POST /v1/batches`` reads
the file and queues it through ``BatchProcessor.submit_jsonl`` (all lines valid, or nothing
queued); the batch object names the input file by its id. When a batch ends it gets an output
file (the lines of the requests that succeeded) and an error file (the others), whose content is
made from the job rows when it is read: the results are stored once, in the jobs, and a file
read while a retried request finishes shows the row as it is.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from lmstrix.core.batch_processor import BatchProcessor
from lmstrix.domain.errors import ValidationError
from lmstrix.domain.openai_batch import succeeded
from lmstrix.domain.openai_files import (
    OUTPUT,
    UPLOAD_PURPOSE,
    FileRecord,
    FileTooLarge,
    check_upload,
    page,
    parse_batch_create,
)
from lmstrix.jobs.file_store import FileStore

PIECE_BYTES = 64 * 1024


def _jsonl(line: Mapping[str, Any]) -> bytes:
    import json

    return (json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


class BatchFiles:
    """Files and batches for ``lmstrix serve``; ``max_file_bytes`` bounds an upload."""

    def __init__(self, processor: BatchProcessor, max_file_bytes: int) -> None:
        self.processor = processor
        self.max_file_bytes = max_file_bytes
        self.store = FileStore(processor.service.database_url)

    # -- files ----------------------------------------------------------------------------

    def upload(self, purpose: Any, filename: Any, content: bytes) -> dict[str, Any]:
        """Keep an uploaded file; returns its file object."""
        purpose, filename = check_upload(purpose, filename)
        if len(content) > self.max_file_bytes:
            raise FileTooLarge(len(content), self.max_file_bytes)
        if not content.strip():
            raise ValidationError("file", filename, "is empty; a batch file has one request a line")
        return self.store.add(purpose, filename, content).to_openai()

    def file(self, file_id: str) -> dict[str, Any]:
        record = self.store.get(file_id)
        size = None if record.size is not None else sum(len(b) for b in self._made(record))
        return record.to_openai(size)

    def files(self, limit: int, after: str | None, purpose: str | None) -> dict[str, Any]:
        records, more = self.store.page(limit, after, purpose)
        return page([self.file(r.id) if r.size is None else r.to_openai() for r in records], more)

    def content(self, file_id: str) -> Iterator[bytes]:
        """The file's bytes, a piece at a time (an unknown id raises now, not while sending)."""
        record = self.store.get(file_id)
        if record.batch_id is not None:
            return self._made(record)
        data = self.store.content(file_id) or b""
        return iter([data])

    def _made(self, record: FileRecord) -> Iterator[bytes]:
        """A result file's lines, made from its batch's job rows, in pieces of about
        ``PIECE_BYTES`` (a piece per line would cost a thread hop per line when served)."""
        assert record.batch_id is not None
        want_success = record.part == OUTPUT
        piece = bytearray()
        for line in self.processor.batch_results(record.batch_id):
            if succeeded(line) == want_success:
                piece += _jsonl(line)
                if len(piece) >= PIECE_BYTES:
                    yield bytes(piece)
                    piece.clear()
        if piece:
            yield bytes(piece)

    # -- batches --------------------------------------------------------------------------

    def create_batch(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Queue the lines of an uploaded file; returns the batch object. An invalid line
        queues nothing and raises ``BatchValidationError`` listing every problem."""
        call = parse_batch_create(body)
        record = self.store.get(call.input_file_id)
        if record.purpose != UPLOAD_PURPOSE or record.batch_id is not None:
            raise ValidationError(
                "input_file_id", call.input_file_id, "must be a file uploaded with purpose 'batch'"
            )
        data = self.store.content(record.id) or b""
        batch_id = self.processor.submit_jsonl(
            data, metadata=call.metadata, endpoint=call.endpoint, source=record.id
        )
        return self.processor.batch_status(batch_id)

    def batch(self, batch_id: str) -> dict[str, Any]:
        return self.processor.batch_status(batch_id)

    def batches(self, limit: int, after: str | None) -> dict[str, Any]:
        records, more = self.processor.batches.page(limit, after)
        return page([r.to_openai() for r in records], more)

    def cancel(self, batch_id: str) -> dict[str, Any]:
        return self.processor.cancel_batch(batch_id)


__all__ = ["BatchFiles"]
