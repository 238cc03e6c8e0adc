"""Probe rows in the database: the durable record that makes a context test crash-safe.

Why rows before probes: a probe can freeze the machine (a load too large for memory) or be cut
short by a killed worker. Its row is inserted ``in_flight`` *before* it runs and gets its outcome
after; a row still ``in_flight`` when the model is tested next is a failure at that size
(:func:`start_test` marks it "interrupted"), so that size is never probed again. The rows are also
what the CLI's live view and the public ``test_points`` show.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from lmstrix.db import (
    ContextTestProbe,
    Host,
    ModelRow,
    ProbePhase,
    TestStatus,
    read_session,
    utcnow,
    write_session,
)
from lmstrix.db import ProbeOutcome as RowOutcome
from lmstrix.domain.context_search import Outcome, ProbeKind, ProbeRequest, TestPoint
from lmstrix.domain.errors import ModelNotFoundError
from lmstrix.domain.search_resume import Resume
from lmstrix.domain.verdicts import Known, Speed
from lmstrix.jobs.store import parse_job_id

INTERRUPTED_ERROR = "interrupted: the worker stopped during this probe (crash, kill or freeze)"
DISTURBED_NOTE = "may be disturbed: another client had an instance loaded on the host"


@dataclass(frozen=True, slots=True)
class ProbeRow:
    """One persisted probe, as the CLI and the facade show it."""

    id: int
    job_id: str | None
    kind: str
    size: int
    outcome: str
    applied_context: int | None
    prompt_tokens: int | None
    error: str | None
    time_to_first_token: float | None
    tokens_per_second: float | None
    started_at: datetime
    finished_at: datetime | None

    @property
    def seconds(self) -> float | None:
        """Wall time of the probe (None while it runs)."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {
            "context_size": self.size,
            "phase": self.kind,
            "outcome": self.outcome,
            "applied_context": self.applied_context,
            "prompt_tokens": self.prompt_tokens,
            "error": self.error,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "time_to_first_token": self.time_to_first_token,
            "tokens_per_second": self.tokens_per_second,
        }


def _probe_row(r: ContextTestProbe) -> ProbeRow:
    return ProbeRow(
        id=r.id,
        job_id=None if r.job_id is None else str(r.job_id),
        kind=r.phase,
        size=r.context_size,
        outcome=r.outcome,
        applied_context=r.applied_context,
        prompt_tokens=r.prompt_tokens,
        error=r.error,
        time_to_first_token=r.time_to_first_token,
        tokens_per_second=r.tokens_per_second,
        started_at=r.started_at,
        finished_at=r.finished_at,
    )


def read_probes(database_url: str, job_id: str | uuid.UUID) -> list[ProbeRow]:
    """The probe rows of one job, in the order they were started."""
    jid = parse_job_id(job_id)
    with read_session(database_url) as s:
        rows = s.scalars(
            select(ContextTestProbe)
            .where(ContextTestProbe.job_id == jid)
            .order_by(ContextTestProbe.id)
        ).all()
        return [_probe_row(r) for r in rows]


def point_of(row: ProbeRow) -> TestPoint:
    """A completed row as the search's fact (a wrong answer and an error both read as failed)."""
    kind = ProbeKind(row.kind)
    if row.outcome == RowOutcome.OK.value:
        outcome = Outcome.OK
    elif row.outcome == RowOutcome.REDUCED.value:
        outcome = Outcome.REDUCED
    else:
        outcome = Outcome.FAILED
    return TestPoint(
        kind,
        row.size,
        outcome,
        applied=row.applied_context if kind is ProbeKind.LOAD else None,
        context=row.applied_context if kind is ProbeKind.USE else None,
        prompt_tokens=row.prompt_tokens,
        error=row.error,
    )


def _row_outcome(point: TestPoint) -> str:
    if point.outcome is Outcome.OK:
        return RowOutcome.OK.value
    if point.outcome is Outcome.REDUCED:
        return RowOutcome.REDUCED.value
    return RowOutcome.FAILED.value


def row_error(point: TestPoint, answer: str | None) -> str | None:
    """The error a row shows for ``point``: what went wrong, in words a user can act on."""
    if point.outcome is Outcome.WRONG:
        shown = (answer or "").strip().replace("\n", " ")
        depths = ", ".join(f"{d:g}" for d in point.failed_depths)
        missed = f" (not recalled at depth {depths})" if depths else ""
        return f"wrong answer{missed}: {shown[:120]!r}"
    if point.outcome is Outcome.REDUCED:
        return f"LM Studio applied {point.applied} instead of {point.size}"
    if point.outcome is Outcome.INTERRUPTED:
        return INTERRUPTED_ERROR
    return point.error


def row_note(point: TestPoint, answer: str | None) -> str | None:
    """The row's error column: the failure (:func:`row_error`), and a note when the host showed
    another client's instance during the probe, so its measurement may be disturbed."""
    error = row_error(point, answer)
    if not point.disturbed:
        return error
    note = DISTURBED_NOTE
    return note if error is None else f"{error}; {note}"


def _known(row: ModelRow) -> Known:
    return Known(
        row_id=row.id,
        tested=row.tested_context,
        good=row.last_known_good_context,
        bad=row.last_known_bad_context,
        status=row.test_status,
        error=row.test_error,
        ttft=row.time_to_first_token,
        tps=row.tokens_per_second,
    )


def _model_row(s: Any, host: str, key: str, *, lock: bool = False) -> ModelRow:
    q = (
        select(ModelRow)
        .join(Host, ModelRow.host_id == Host.id)
        .where(Host.name == host, ModelRow.key == key)
    )
    row = s.scalars(q.with_for_update() if lock else q).first()
    if row is None:
        raise ModelNotFoundError(key, reason=f"not in the registry on host {host!r}")
    assert isinstance(row, ModelRow)
    return row


def start_test(database_url: str, host: str, key: str, job_id: uuid.UUID) -> Resume:
    """Mark the model ``testing`` and collect what a resumed search needs, in one transaction.

    Rows still ``in_flight`` belong to a dead worker (one worker per host, so no other test of
    this model runs now): they become failures "interrupted" here, and their sizes are returned
    so the search counts them as failures. Completed rows of this job's earlier attempts are
    returned as history.
    """
    now = utcnow()
    with write_session(database_url) as s:
        row = _model_row(s, host, key, lock=True)
        known = _known(row)
        rows = s.scalars(
            select(ContextTestProbe)
            .where(
                ContextTestProbe.model_id == row.id,
                (ContextTestProbe.outcome == RowOutcome.IN_FLIGHT.value)
                | (ContextTestProbe.job_id == job_id),
            )
            .order_by(ContextTestProbe.id)
        ).all()
        history: list[TestPoint] = []
        own: list[int] = []
        others: list[int] = []
        speeds: list[tuple[int, Speed]] = []
        for r in rows:
            if r.outcome == RowOutcome.IN_FLIGHT.value:
                (own if r.job_id == job_id else others).append(r.context_size)
                r.outcome = RowOutcome.FAILED.value
                r.error = INTERRUPTED_ERROR if not r.error else f"{INTERRUPTED_ERROR}; {r.error}"
                r.finished_at = now
            else:
                history.append(point_of(_probe_row(r)))
                if r.phase == ProbePhase.USE.value and r.outcome == RowOutcome.OK.value:
                    speeds.append(
                        (r.context_size, Speed(r.time_to_first_token, r.tokens_per_second))
                    )
        row.test_status = TestStatus.TESTING.value
    return Resume(known, tuple(history), tuple(own), tuple(others), tuple(speeds))


def insert_probe(
    database_url: str, job_id: uuid.UUID, model_row_id: int, request: ProbeRequest
) -> int:
    """The ``in_flight`` row of a probe about to run; returns its id."""
    with write_session(database_url) as s:
        row = ContextTestProbe(
            job_id=job_id,
            model_id=model_row_id,
            context_size=request.size,
            phase=ProbePhase(request.kind.value).value,
            outcome=RowOutcome.IN_FLIGHT.value,
            applied_context=request.context,
            started_at=utcnow(),
        )
        s.add(row)
        s.flush()
        return row.id


def finish_probe(
    database_url: str,
    probe_id: int,
    point: TestPoint,
    *,
    answer: str | None = None,
    speed: Speed | None = None,
) -> None:
    """Give a probe row its outcome."""
    values: dict[str, Any] = {
        "outcome": _row_outcome(point),
        "error": row_note(point, answer),
        "prompt_tokens": point.prompt_tokens,
        "finished_at": utcnow(),
    }
    if point.kind is ProbeKind.LOAD:
        values["applied_context"] = point.applied
    if speed is not None:
        values["time_to_first_token"] = speed.time_to_first_token
        values["tokens_per_second"] = speed.tokens_per_second
    with write_session(database_url) as s:
        s.execute(update(ContextTestProbe).where(ContextTestProbe.id == probe_id).values(values))


def note_probe_error(database_url: str, probe_id: int, error: str) -> None:
    """Leave a probe ``in_flight`` (it failed to finish: counts as a failure on resume) but say
    what stopped it, for whoever looks at the rows."""
    with write_session(database_url) as s:
        s.execute(
            update(ContextTestProbe)
            .where(ContextTestProbe.id == probe_id)
            .values(error=error[:2000])
        )


__all__ = [
    "DISTURBED_NOTE",
    "INTERRUPTED_ERROR",
    "ProbeRow",
    "finish_probe",
    "insert_probe",
    "note_probe_error",
    "point_of",
    "read_probes",
    "row_error",
    "row_note",
    "start_test",
]
