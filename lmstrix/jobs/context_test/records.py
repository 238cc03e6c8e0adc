"""The two other rows a context test writes: its job row's progress, and the model's registry
row (the verdict).

Why guarded writes: a job re-queued by the reaper runs as a new attempt while the old worker may
still be alive; progress is only written while this attempt owns the row, and the registry row is
locked so a concurrent scan cannot interleave with the verdict.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, update

from lmstrix.db import Job, JobStatus, ModelRow, read_session, write_session
from lmstrix.jobs.store import ClaimedJob, parse_job_id


def write_progress(database_url: str, job: ClaimedJob, progress: dict[str, Any]) -> None:
    """The job row's progress JSON (only while this attempt still owns the row)."""
    with write_session(database_url) as s:
        s.execute(
            update(Job)
            .where(
                Job.id == job.id,
                Job.attempts == job.attempt,
                Job.status == JobStatus.RUNNING.value,
            )
            .values(progress=progress)
        )


def read_progress(database_url: str, job_id: str | uuid.UUID) -> dict[str, Any] | None:
    """The progress JSON the worker writes on the job row after every probe."""
    jid = parse_job_id(job_id)
    with read_session(database_url) as s:
        return s.scalar(select(Job.progress).where(Job.id == jid))


def write_registry(database_url: str, row_id: int, columns: dict[str, Any]) -> None:
    """One transaction on the model's row (locked, so a concurrent scan cannot interleave)."""
    with write_session(database_url) as s:
        row = s.scalars(select(ModelRow).where(ModelRow.id == row_id).with_for_update()).first()
        if row is None:  # removed meanwhile: nothing to record
            return
        for column, value in columns.items():
            setattr(row, column, value)


__all__ = ["read_progress", "write_progress", "write_registry"]
