"""Batch rows in SQL: create a batch with its items, derive its status from the items' job rows.

A batch's requests are ordinary job rows (``kind='batch_item'``, ``batch_id``, ``custom_id``),
run by the host workers like any job. The ``batches`` row is never updated by a worker: its
status and ``request_counts`` are derived from those job rows whenever someone looks (status,
results, waiting), so no worker hook can forget to update it and a crashed worker cannot leave it
wrong. A change is written with the row locked (``SELECT ... FOR UPDATE`` on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite), so concurrent readers agree on one transition.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from lmstrix.db import (
    Batch,
    BatchStatus,
    Job,
    JobKind,
    JobStatus,
    read_session,
    utcnow,
    write_session,
)
from lmstrix.domain.errors import JobNotFound, LMStrixError, ValidationError
from lmstrix.domain.openai_batch import (
    CHAT_URL,
    COMPLETION_WINDOW_SECONDS,
    FINAL,
    BatchItem,
    BatchRecord,
    Counts,
    next_status,
)
from lmstrix.domain.scheduler import PRIORITY_BATCH
from lmstrix.jobs.file_store import attach_results
from lmstrix.jobs.store import JobStore

PAGE = 500  # result rows read per query when streaming a batch's output
INSERT_CHUNK = 1000


class BatchNotFound(JobNotFound):
    """No batch has this id."""

    def __init__(self, batch_id: str) -> None:
        LMStrixError.__init__(
            self,
            f"no batch with id {batch_id!r}; `lmstrix batch list` shows the known batches",
            batch_id=batch_id,
        )
        self.job_id = batch_id
        self.batch_id = batch_id


@dataclass(frozen=True, slots=True)
class NewItem:
    """A validated request about to become a batch item's job row."""

    host: str
    host_url: str
    model: str
    request: dict[str, Any]
    custom_id: str


def _record(row: Batch) -> BatchRecord:
    return BatchRecord(
        id=row.id,
        status=row.status,
        endpoint=row.endpoint,
        completion_window=row.completion_window,
        model=row.model,
        total=row.request_total,
        completed=row.request_completed,
        failed=row.request_failed,
        metadata=row.metadata_,
        errors=row.errors,
        input_file=row.input_file,
        output_file=row.output_file,
        error_file=row.error_file,
        created_at=row.created_at,
        in_progress_at=row.in_progress_at,
        expires_at=row.expires_at,
        finalizing_at=row.finalizing_at,
        completed_at=row.completed_at,
        failed_at=row.failed_at,
        expired_at=row.expired_at,
        cancelling_at=row.cancelling_at,
        cancelled_at=row.cancelled_at,
    )


class BatchStore:
    """Batches over one database URL. Cheap to create; holds no connection."""

    def __init__(self, url: str, jobs: JobStore | None = None) -> None:
        self.url = url
        self.jobs = jobs or JobStore(url)

    # -- create ---------------------------------------------------------------------------

    def create(
        self,
        items: Sequence[NewItem],
        *,
        total: int | None = None,
        model: str | None = None,
        metadata: dict[str, Any] | None = None,
        input_file: str | None = None,
        max_attempts: int = 3,
        endpoint: str = CHAT_URL,
    ) -> tuple[str, list[str]]:
        """Insert the batch and its items in one transaction: all of it exists, or none.

        Returns the batch id and the items' job ids (in order). ``total`` (default: the number
        of items) is larger when more items will be added one by one (:meth:`add_item`).
        Items get strictly increasing ``created_at``, which the worker's claim orders by, so
        they run in file order.
        """
        host_ids = {it.host: self.jobs.host_id(it.host, it.host_url) for it in items}
        now = utcnow()
        batch_id = f"batch_{uuid.uuid4().hex}"
        job_ids = [uuid.uuid4() for _ in items]
        rows = [
            {
                "id": jid,
                "kind": JobKind.BATCH_ITEM.value,
                "host_id": host_ids[it.host],
                "model_key": it.model,
                "status": JobStatus.QUEUED.value,
                "priority": PRIORITY_BATCH,
                "request": it.request,
                "attempts": 0,
                "max_attempts": max_attempts,
                "batch_id": batch_id,
                "custom_id": it.custom_id,
                "created_at": now + timedelta(microseconds=i),
            }
            for i, (jid, it) in enumerate(zip(job_ids, items, strict=True))
        ]
        with write_session(self.url) as s:
            s.add(
                Batch(
                    id=batch_id,
                    status=BatchStatus.IN_PROGRESS.value,
                    endpoint=endpoint,
                    model=model,
                    request_total=len(items) if total is None else total,
                    metadata_=metadata,
                    input_file=None if input_file is None else input_file[:1024],
                    created_at=now,
                    in_progress_at=now,
                    expires_at=now + timedelta(seconds=COMPLETION_WINDOW_SECONDS),
                )
            )
            s.flush()
            for start in range(0, len(rows), INSERT_CHUNK):
                s.execute(insert(Job), rows[start : start + INSERT_CHUNK])
        return batch_id, [str(j) for j in job_ids]

    def add_item(self, batch_id: str, item: NewItem, max_attempts: int = 3) -> str:
        """Queue one more item of an existing batch (``BatchProcessor.process_batch`` feeds its
        window this way); returns the job id."""
        return self.jobs.submit(
            host=item.host,
            model=item.model,
            request=item.request,
            kind=JobKind.BATCH_ITEM,
            priority=PRIORITY_BATCH,
            host_url=item.host_url,
            max_attempts=max_attempts,
            batch_id=batch_id,
            custom_id=item.custom_id,
        )

    # -- status ---------------------------------------------------------------------------

    def _counts(self, s: Session, batch_id: str) -> Counts:
        rows = s.execute(
            select(Job.status, func.count(Job.id))
            .where(Job.batch_id == batch_id)
            .group_by(Job.status)
        ).all()
        return Counts.of({status: n for status, n in rows})

    def get(self, batch_id: str) -> BatchRecord:
        """The row as stored (see :meth:`refresh` for the up-to-date one)."""
        with read_session(self.url) as s:
            row = s.get(Batch, batch_id)
            if row is None:
                raise BatchNotFound(batch_id)
            return _record(row)

    def refresh(self, batch_id: str) -> BatchRecord:
        """Bring the row's status and counts in line with its job rows; returns it.

        A read decides whether anything changed; only then is the row locked and rewritten, so
        watching a batch costs reads, not writes.
        """
        with read_session(self.url) as s:
            row = s.get(Batch, batch_id)
            if row is None:
                raise BatchNotFound(batch_id)
            if BatchStatus(row.status) in FINAL:
                return _record(row)
            if not self._stale(row, self._counts(s, batch_id)):
                return _record(row)
        with write_session(self.url) as s:
            row = s.get(Batch, batch_id, with_for_update=True)
            assert row is not None
            self._apply(s, row)
            return _record(row)

    @staticmethod
    def _stale(row: Batch, counts: Counts) -> bool:
        new = next_status(row.status, row.request_total, counts, utcnow(), row.expires_at)
        return (
            new != row.status
            or counts.completed != row.request_completed
            or counts.not_succeeded != row.request_failed
        )

    def _apply(self, s: Session, row: Batch) -> None:
        counts = self._counts(s, row.id)
        now = utcnow()
        new = next_status(row.status, row.request_total, counts, now, row.expires_at)
        if new == BatchStatus.EXPIRED.value and row.status != new:
            self._stop_items(s, row.id, now, JobStatus.EXPIRED)
            counts = self._counts(s, row.id)
            row.expired_at = now
        elif new == BatchStatus.COMPLETED.value and row.status != new:
            last = s.scalar(select(func.max(Job.finished_at)).where(Job.batch_id == row.id))
            # No output file is written (results are read from the rows), so finalizing is
            # over the moment it starts.
            row.finalizing_at = row.completed_at = last or now
        elif new == BatchStatus.CANCELLED.value and row.status != new:
            row.cancelled_at = now
        if BatchStatus(new) in FINAL and row.status != new:
            attach_results(s, row, counts.completed, counts.not_succeeded, now)
        row.status = new
        row.request_completed = counts.completed
        row.request_failed = counts.not_succeeded

    def _stop_items(self, s: Session, batch_id: str, now: datetime, status: JobStatus) -> None:
        """Queued items end as ``status`` at once; running ones are asked to stop."""
        s.execute(
            update(Job)
            .where(Job.batch_id == batch_id, Job.status == JobStatus.QUEUED.value)
            .values(
                status=status.value,
                finished_at=now,
                error_type=status.value,
                cancel_requested_at=now,
            )
        )
        s.execute(
            update(Job)
            .where(
                Job.batch_id == batch_id,
                Job.status == JobStatus.RUNNING.value,
                Job.cancel_requested_at.is_(None),
            )
            .values(cancel_requested_at=now)
        )

    def cancel(self, batch_id: str) -> BatchRecord:
        """Cancel a batch: queued items at once, running ones at their next check."""
        with write_session(self.url) as s:
            row = s.get(Batch, batch_id, with_for_update=True)
            if row is None:
                raise BatchNotFound(batch_id)
            status = BatchStatus(row.status)
            if status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
                return _record(row)
            if status in FINAL:
                raise ValidationError(
                    "batch_id",
                    batch_id,
                    f"is {status.value}; only validating or in_progress batches can be cancelled",
                )
            now = utcnow()
            self._stop_items(s, batch_id, now, JobStatus.CANCELLED)
            row.status = BatchStatus.CANCELLING.value
            row.cancelling_at = now
            self._apply(s, row)
            return _record(row)

    def fail(self, batch_id: str, code: str, message: str) -> None:
        """The batch could not start (its workers cannot be told): fail it and its items."""
        now = utcnow()
        with write_session(self.url) as s:
            s.execute(
                update(Job)
                .where(Job.batch_id == batch_id, Job.status == JobStatus.QUEUED.value)
                .values(
                    status=JobStatus.FAILED.value,
                    finished_at=now,
                    error_type=code,
                    error_message=message,
                )
            )
            row = s.get(Batch, batch_id, with_for_update=True)
            if row is not None:
                row.status = BatchStatus.FAILED.value
                row.failed_at = now
                row.errors = [{"code": code, "line": None, "message": message, "param": None}]
                counts = self._counts(s, batch_id)
                row.request_completed = counts.completed
                row.request_failed = counts.not_succeeded
                attach_results(s, row, counts.completed, counts.not_succeeded, now)

    # -- reading --------------------------------------------------------------------------

    def recent(self, limit: int = 20) -> list[BatchRecord]:
        """Newest batches first, each refreshed."""
        return self.page(limit)[0]

    def page(self, limit: int, after: str | None = None) -> tuple[list[BatchRecord], bool]:
        """Newest batches first, each refreshed: up to ``limit`` older than the batch ``after``,
        and whether more follow (OpenAI's cursor pages)."""
        q = select(Batch.id).order_by(Batch.created_at.desc(), Batch.id.desc())
        with read_session(self.url) as s:
            if after is not None:
                cursor = s.get(Batch, after)
                if cursor is None:
                    raise BatchNotFound(after)
                q = q.where(
                    or_(
                        Batch.created_at < cursor.created_at,
                        and_(Batch.created_at == cursor.created_at, Batch.id < cursor.id),
                    )
                )
            ids = s.scalars(q.limit(limit + 1)).all()
        return [self.refresh(i) for i in ids[:limit]], len(ids) > limit

    def unfinished_job_ids(self, batch_id: str) -> list[str]:
        """The items still queued or running, in run order."""
        with read_session(self.url) as s:
            ids = s.scalars(
                select(Job.id)
                .where(
                    Job.batch_id == batch_id,
                    Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
                )
                .order_by(Job.created_at, Job.id)
            ).all()
        return [str(i) for i in ids]

    def items(self, batch_id: str, *, finished_only: bool = True) -> Iterator[BatchItem]:
        """The batch's items in input order, read a page at a time (a batch may hold 50 000)."""
        after: tuple[datetime, uuid.UUID] | None = None
        while True:
            q = (
                select(
                    Job.id,
                    Job.custom_id,
                    Job.model_key,
                    Job.status,
                    Job.result,
                    Job.error_type,
                    Job.error_message,
                    Job.finished_at,
                    Job.created_at,
                )
                .where(Job.batch_id == batch_id)
                .order_by(Job.created_at, Job.id)
                .limit(PAGE)
            )
            if finished_only:
                q = q.where(Job.status.not_in([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
            if after is not None:
                q = q.where(
                    or_(
                        Job.created_at > after[0],
                        and_(Job.created_at == after[0], Job.id > after[1]),
                    )
                )
            with read_session(self.url) as s:
                rows = s.execute(q).all()
            for r in rows:
                yield BatchItem(
                    job_id=str(r.id),
                    custom_id=r.custom_id or "",
                    model=r.model_key,
                    status=r.status,
                    result=r.result,
                    error_type=r.error_type,
                    error_message=r.error_message,
                    finished_at=r.finished_at,
                )
            if len(rows) < PAGE:
                return
            after = (rows[-1].created_at, rows[-1].id)


__all__ = ["BatchNotFound", "BatchStore", "NewItem"]
