"""File rows in SQL: uploaded batch inputs with their bytes, and batches' result files.

An upload keeps its content in the row, since the server that took it and the processes that
read it may run on different machines. A batch's output and error files are rows without
content, tied to the batch (``batch_id``, ``part``): their lines are made from the job rows when
someone reads them, so each result is stored once. They are added, in the transaction that
moves the batch to a final status, by :func:`attach_results`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from lmstrix.db import read_session, utcnow, write_session
from lmstrix.db.tables import Batch, FileRow
from lmstrix.domain.openai_files import (
    ERROR,
    OUTPUT,
    OUTPUT_PURPOSE,
    FileNotFound,
    FileRecord,
    new_file_id,
)


def _record(row: FileRow) -> FileRecord:
    return FileRecord(
        id=row.id,
        purpose=row.purpose,
        filename=row.filename,
        size=row.size,
        created_at=row.created_at,
        batch_id=row.batch_id,
        part=row.part,
    )


def _result_file(s: Session, batch_id: str, part: str, now: datetime) -> str:
    file_id = new_file_id()
    s.add(
        FileRow(
            id=file_id,
            purpose=OUTPUT_PURPOSE,
            filename=f"{batch_id}_{part}.jsonl",
            size=None,
            created_at=now,
            content=None,
            batch_id=batch_id,
            part=part,
        )
    )
    return file_id


def attach_results(s: Session, row: Batch, completed: int, failed: int, now: datetime) -> None:
    """Give a batch that just ended its output file (when a request succeeded) and its error
    file (when one did not), as OpenAI does; in the caller's transaction."""
    if completed and row.output_file is None:
        row.output_file = _result_file(s, row.id, OUTPUT, now)
    if failed and row.error_file is None:
        row.error_file = _result_file(s, row.id, ERROR, now)


class FileStore:
    """Files over one database URL. Cheap to create; holds no connection."""

    def __init__(self, url: str) -> None:
        self.url = url

    def add(self, purpose: str, filename: str, content: bytes) -> FileRecord:
        row = FileRow(
            id=new_file_id(),
            purpose=purpose,
            filename=filename,
            size=len(content),
            created_at=utcnow(),
            content=content,
        )
        with write_session(self.url) as s:
            s.add(row)
            s.flush()
            return _record(row)

    def get(self, file_id: str) -> FileRecord:
        with read_session(self.url) as s:
            row = s.get(FileRow, file_id)
            if row is None:
                raise FileNotFound(file_id)
            return _record(row)

    def content(self, file_id: str) -> bytes | None:
        """The stored bytes (None for a result file, whose lines are made on demand)."""
        with read_session(self.url) as s:
            row = s.get(FileRow, file_id)
            if row is None:
                raise FileNotFound(file_id)
            return row.content

    def page(
        self, limit: int, after: str | None = None, purpose: str | None = None
    ) -> tuple[list[FileRecord], bool]:
        """Newest files first: up to ``limit`` older than ``after``, and whether more follow."""
        q = select(FileRow).order_by(FileRow.created_at.desc(), FileRow.id.desc())
        if purpose is not None:
            q = q.where(FileRow.purpose == purpose)
        with read_session(self.url) as s:
            if after is not None:
                cursor = s.get(FileRow, after)
                if cursor is None:
                    raise FileNotFound(after)
                q = q.where(
                    (FileRow.created_at < cursor.created_at)
                    | ((FileRow.created_at == cursor.created_at) & (FileRow.id < cursor.id))
                )
            rows = s.scalars(q.limit(limit + 1)).all()
            return [_record(r) for r in rows[:limit]], len(rows) > limit


__all__ = ["FileStore", "attach_results"]
