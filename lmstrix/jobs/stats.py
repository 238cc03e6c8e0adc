"""Reads of the jobs table for statistics: counts by status, host and kind, the queue by host
and model, and the jobs that ended in a window. Read-only; the figures are computed by
:mod:`lmstrix.domain.queue_stats`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from lmstrix.db import Host, Job, JobStatus, read_session
from lmstrix.db.unavailable import database_faults
from lmstrix.domain.payloads import InferenceJobResult
from lmstrix.domain.queue_stats import FinishedSample, QueueLine

# Ended jobs read for one window at most: the figures stay cheap on a busy queue.
MAX_SAMPLES = 20_000


def status_counts(url: str) -> list[tuple[str, str, str, int]]:
    """``(status, host, kind, count)`` over every row the table holds."""
    with database_faults(url), read_session(url) as s:
        rows = s.execute(
            select(Job.status, Host.name, Job.kind, func.count(Job.id))
            .join(Host, Job.host_id == Host.id)
            .group_by(Job.status, Host.name, Job.kind)
        ).all()
    return [(st, host, kind, int(n)) for st, host, kind, n in rows]


def queue_lines(url: str) -> list[QueueLine]:
    """The queued jobs by host and model, with the oldest one's queueing time."""
    with database_faults(url), read_session(url) as s:
        rows = s.execute(
            select(Host.name, Job.model_key, func.count(Job.id), func.min(Job.created_at))
            .join(Host, Job.host_id == Host.id)
            .where(Job.status == JobStatus.QUEUED.value)
            .group_by(Host.name, Job.model_key)
        ).all()
    return [QueueLine(host, model, int(n), oldest) for host, model, n, oldest in rows]


def finished_since(url: str, since: datetime) -> list[FinishedSample]:
    """The jobs that ended at or after ``since``, newest first (at most ``MAX_SAMPLES``)."""
    with database_faults(url), read_session(url) as s:
        rows = s.execute(
            select(
                Host.name,
                Job.model_key,
                Job.kind,
                Job.status,
                Job.created_at,
                Job.started_at,
                Job.finished_at,
                Job.result,
            )
            .join(Host, Job.host_id == Host.id)
            .where(Job.finished_at >= since)
            .order_by(Job.finished_at.desc())
            .limit(MAX_SAMPLES)
        ).all()
    out = []
    for host, model, kind, status, created, started, finished, result in rows:
        r = InferenceJobResult.from_row(result) if kind != "context_test" else None
        info = r.model_info if r is not None else None
        load_seconds, swapped = info.load_facts() if info is not None else (None, False)
        out.append(
            FinishedSample(
                host=host,
                model=model,
                kind=kind,
                status=status,
                created_at=created,
                started_at=started,
                finished_at=finished,
                time_to_first_token=r.time_to_first_token if r else None,
                tokens_per_second=r.tokens_per_second if r else None,
                response_tokens=r.response_tokens if r else 0,
                load_seconds=load_seconds,
                swapped=swapped,
                context_length=info.context_length if info is not None else None,
            )
        )
    return out
