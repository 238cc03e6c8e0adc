"""The job rows: the one source of truth of the queue (status, lease, result, cancel flag).

Every state change is one short conditional UPDATE, so two processes can never both believe they
own a job: a claim only succeeds on a ``queued`` row, and a finish only on the ``running`` row of
the same attempt. Finishing twice, or after the reaper gave the job to someone else, changes
nothing and returns ``False``; that is what makes at-least-once delivery an exactly-once effect.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Integer,
    String,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from lmstrix.db import (
    Host,
    Job,
    JobKind,
    JobStatus,
    ensure_schema,
    get_engine,
    read_session,
    utcnow,
    write_session,
)
from lmstrix.db.engine import write_engine
from lmstrix.db.hosts import get_or_create_host
from lmstrix.db.tables import WorkerRow
from lmstrix.db.types import UTCDateTime
from lmstrix.db.unavailable import database_faults
from lmstrix.domain.errors import ErrorPayload, JobNotFound, ValidationError
from lmstrix.domain.heartbeats import (
    DEFAULT_WAITER_GRACE,
    WORKER_LIVE_WITHIN,
    cutoff,
    waiter_gone,
)
from lmstrix.domain.scheduler import HostState, QueuedJob, SchedulerPolicy, may_start
from lmstrix.domain.slots import choose_joining

log = logging.getLogger(__name__)

FINISHED = tuple(s.value for s in JobStatus if s.finished)
#: The error message of a job cancelled because its interactive caller stopped waiting.
WAITER_GONE = "its caller stopped waiting (interrupted or gone), so it was cancelled"
#: How often a busy worker's claims cancel the queued jobs whose caller went away.
SWEEP_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class JobView:
    """A job as callers see it (a snapshot of the row)."""

    id: str
    kind: str
    host: str
    model: str | None
    status: str
    priority: int
    request: dict[str, Any] | None
    result: dict[str, Any] | None
    error_type: str | None
    error_message: str | None
    attempts: int
    max_attempts: int
    worker_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested_at: datetime | None
    lease_until: datetime | None
    waiter_seen_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return JobStatus(self.status).finished

    @property
    def failure(self) -> ErrorPayload | None:
        """The error the job ended with (None when it succeeded or is not over)."""
        if self.status == JobStatus.SUCCEEDED.value or self.error_type is None:
            return None
        details = (self.result or {}).get("error_details")
        return ErrorPayload(self.error_type, self.error_message or "", details)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job this worker now owns, for this attempt only."""

    id: uuid.UUID
    kind: str
    host: str
    model: str
    request: dict[str, Any]
    attempt: int
    priority: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Claim:
    """What claiming needs: whose worker, the host's state and the policy (and how long an
    interactive caller may go unheard before its queued job is cancelled instead)."""

    host: str
    worker_id: str
    state: HostState
    lease_seconds: float
    policy: SchedulerPolicy
    waiter_grace: float = DEFAULT_WAITER_GRACE
    #: jobs of this model run on the host's other slots: claim only when the scheduler picks it
    running_model: str | None = None


@dataclass(frozen=True, slots=True)
class ReapedJob:
    id: str
    host: str
    requeued: bool  # False: out of attempts, failed for good (or cancelled)
    cancelled: bool = False  # its caller was gone or had cancelled it: never run again
    #: how its worker was found gone: "heartbeat" (silent for a few beats) or "lease" (expired)
    noticed_by: str = "lease"


def parse_job_id(job_id: str | uuid.UUID) -> uuid.UUID:
    if isinstance(job_id, uuid.UUID):
        return job_id
    try:
        return uuid.UUID(str(job_id).strip())
    except ValueError:
        raise JobNotFound(str(job_id)) from None


_VIEW_COLUMNS = (
    Job.id,
    Job.kind,
    Job.host_id,
    Job.model_key,
    Job.status,
    Job.priority,
    Job.request,
    Job.result,
    Job.error_type,
    Job.error_message,
    Job.attempts,
    Job.max_attempts,
    Job.worker_id,
    Job.created_at,
    Job.started_at,
    Job.finished_at,
    Job.cancel_requested_at,
    Job.lease_until,
    Job.waiter_seen_at,
)

# Hot-path statements are built once: composing SQLAlchemy expressions costs more than running
# them on SQLite, and every infer() call goes through submit, claim, finish and a read.
_B_NOW = bindparam("b_now", type_=UTCDateTime())
# The oldest beat of an interactive caller that still counts (see domain.heartbeats).
_B_CUTOFF = bindparam("b_cutoff", type_=UTCDateTime())
# The policy only ever picks the oldest job of some (model, priority) group, so the claim reads
# one row per group (an aggregate the database does over the index) instead of the whole queue.
# Jobs whose interactive caller went quiet are never chosen.
_CLAIM_HEADS = (
    select(Job.model_key, Job.priority, func.min(Job.created_at).label("oldest"))
    .where(
        Job.host_id == bindparam("b_hid"),
        Job.status == JobStatus.QUEUED.value,
        or_(Job.waiter_seen_at.is_(None), Job.waiter_seen_at >= _B_CUTOFF),
    )
    .group_by(Job.model_key, Job.priority)
)
# What runs on a host now (live leases): a context test holds its host (domain.scheduler).
# Read in the same statement as the heads (one round trip): rows with a kind are running jobs.
_CLAIM_LOOK = union_all(
    _CLAIM_HEADS.add_columns(cast(null(), String).label("running_kind")),
    select(
        cast(null(), String),
        cast(null(), Integer),
        cast(null(), UTCDateTime()),
        Job.kind,
    )
    .where(
        Job.host_id == bindparam("b_hid"),
        Job.status == JobStatus.RUNNING.value,
        Job.lease_until >= _B_NOW,
    )
    .distinct(),
)
_QUEUED = Job.__table__.alias("queued_jobs")
_CLAIM_TARGET = (
    select(_QUEUED.c.id)
    .where(
        _QUEUED.c.host_id == bindparam("b_hid"),
        _QUEUED.c.status == JobStatus.QUEUED.value,
        _QUEUED.c.model_key == bindparam("b_model"),
        _QUEUED.c.priority == bindparam("b_priority"),
        or_(_QUEUED.c.waiter_seen_at.is_(None), _QUEUED.c.waiter_seen_at >= _B_CUTOFF),
    )
    .order_by(_QUEUED.c.created_at, _QUEUED.c.id)
    .limit(1)
    .scalar_subquery()
)
_CLAIM_UPDATE = (
    update(Job)
    .where(Job.id == _CLAIM_TARGET, Job.status == JobStatus.QUEUED.value)
    .values(
        status=JobStatus.RUNNING.value,
        worker_id=bindparam("b_worker"),
        attempts=Job.attempts + 1,
        lease_until=bindparam("b_lease", type_=UTCDateTime()),
        heartbeat_at=_B_NOW,
        started_at=func.coalesce(Job.started_at, _B_NOW),
    )
    .returning(Job.id, Job.kind, Job.request, Job.attempts, Job.priority, Job.created_at)
)
_END = (
    update(Job)
    .where(
        Job.id == bindparam("b_id"),
        Job.status == JobStatus.RUNNING.value,
        Job.attempts == bindparam("b_attempt"),
    )
    .values(
        status=bindparam("b_status"),
        finished_at=_B_NOW,
        lease_until=None,
        result=bindparam("b_result", type_=Job.__table__.c.result.type),
        error_type=bindparam("b_error_type"),
        error_message=bindparam("b_error_message"),
    )
    .returning(*_VIEW_COLUMNS)
)
_STATUS = select(Job.status).where(Job.id == bindparam("b_id"))
# A waiting caller's beat: one indexed UPDATE.
_TOUCH_WAITER = update(Job).where(Job.id == bindparam("b_id")).values(waiter_seen_at=_B_NOW)
# Queued jobs of a host whose caller went quiet, which the claim skips, are cancelled now and
# then by a claim (see JobStore._claim_in). The range on ix_jobs_waiters only visits such rows
# (NULL: nobody waits; fresh: a live caller), so a long queue does not make it slower.
_CANCEL_ABANDONED = (
    update(Job)
    .where(
        Job.host_id == bindparam("b_hid"),
        Job.status == JobStatus.QUEUED.value,
        Job.waiter_seen_at < _B_CUTOFF,
    )
    .values(
        status=JobStatus.CANCELLED.value,
        finished_at=_B_NOW,
        cancel_requested_at=_B_NOW,
        error_type="cancelled",
        error_message=WAITER_GONE,
    )
    .returning(Job.id)
)
# Core on the session's connection, below: the ORM's bulk-update bookkeeping is not needed.


_INSERT = insert(Job)
_GET = select(*_VIEW_COLUMNS).where(Job.id == bindparam("b_id"))


class JobStore:
    """Job lifecycle over one database URL. Cheap to create; holds no connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._host_ids: dict[str, int] = {}
        self._host_names: dict[int, str] = {}
        self._pid: int | None = None
        self._read_engine: Engine | None = None
        self._write_engine: Engine | None = None
        self._single_engine: Engine | None = None  # PostgreSQL: statements that commit alone
        self._next_sweep: dict[int, float] = {}  # host id -> monotonic time

    # -- connections ----------------------------------------------------------------------

    def _engines(self) -> tuple[Engine, Engine]:
        # The hot paths use Core connections straight from the engine: a Session per statement
        # costs more than the statement. Engines never cross a fork, hence the pid check.
        if self._pid != os.getpid() or self._read_engine is None or self._write_engine is None:
            ensure_schema(self.url)
            engine = get_engine(self.url)
            self._read_engine, self._write_engine = engine, write_engine(engine)
            self._single_engine = (
                None
                if engine.dialect.name == "sqlite"
                else engine.execution_options(isolation_level="AUTOCOMMIT")
            )
            self._pid = os.getpid()
        return self._read_engine, self._write_engine

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite), committed at the end."""
        with database_faults(self.url), self._engines()[1].begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """Reads. On PostgreSQL each statement runs on its own (no BEGIN and ROLLBACK around
        it: two round trips saved); a read of several statements may then see commits made
        between them, which no caller here minds."""
        with database_faults(self.url):
            engine = self._engines()[0]
            with (self._single_engine or engine).connect() as conn:
                try:
                    yield conn
                finally:
                    if self._single_engine is None:
                        conn.rollback()

    @contextmanager
    def _single(self) -> Iterator[Connection]:
        """One write statement, atomic by itself: on PostgreSQL it commits alone (no BEGIN and
        COMMIT round trips); on SQLite it is a write transaction as usual."""
        with database_faults(self.url):
            engine = self._engines()[1]
            if self._single_engine is None:
                with engine.begin() as conn:
                    yield conn
            else:
                with self._single_engine.connect() as conn:
                    yield conn

    # -- hosts ----------------------------------------------------------------------------

    def knows_host(self, name: str) -> bool:
        """Whether a host row is labelled ``name`` (one is made when its first job is queued)."""
        try:
            self.host_id(name)
        except ValidationError:
            return False
        return True

    def host_id(self, name: str, url: str | None = None) -> int:
        """The id of the host row named ``name``; with ``url``, the row of that server
        (labelled ``name``, created when missing: a host is its URL, see ``lmstrix.db.hosts``)."""
        cached = self._host_ids.get(name)
        if cached is not None:
            return cached
        found: int | None = None
        if url is None:
            with read_session(self.url) as s:
                found = s.scalar(select(Host.id).where(Host.name == name))
            if found is None:
                raise ValidationError("host", name, "unknown host; configure it or pass its URL")
        else:
            with write_session(self.url) as s:
                found = get_or_create_host(s, name, url).id
        self._host_ids[name] = found
        self._host_names[found] = name
        return found

    def _host_name(self, s: Session | Connection, host_id: int) -> str:
        name = self._host_names.get(host_id)
        if name is None:
            name = s.scalar(select(Host.name).where(Host.id == host_id)) or str(host_id)
            self._host_names[host_id] = name
        return name

    # -- submit ---------------------------------------------------------------------------

    def submit(
        self,
        *,
        host: str,
        model: str,
        request: dict[str, Any],
        kind: JobKind = JobKind.INFERENCE,
        priority: int = 0,
        model_row_id: int | None = None,
        host_url: str | None = None,
        max_attempts: int = 3,
        batch_id: str | None = None,
        custom_id: str | None = None,
        waiter: bool = False,
    ) -> str:
        """Insert a queued job row and return its id. The caller rings the doorbell after.

        ``waiter``: an interactive caller waits for it and beats (:meth:`touch_waiter`); if it
        goes quiet for the queue's ``waiter_grace``, the job is cancelled, never run again."""
        hid = self.host_id(host, host_url)
        job_id = uuid.uuid4()
        now = utcnow()
        # A Core INSERT: the ORM's unit of work costs more than the statement itself here, and
        # submit is on the hot path of every infer() call.
        with self._single() as c:
            c.execute(
                _INSERT,
                dict(
                    id=job_id,
                    kind=kind.value,
                    host_id=hid,
                    model_id=model_row_id,
                    model_key=model,
                    status=JobStatus.QUEUED.value,
                    priority=priority,
                    request=request,
                    attempts=0,
                    max_attempts=max_attempts,
                    batch_id=batch_id,
                    custom_id=custom_id,
                    created_at=now,
                    waiter_seen_at=now if waiter else None,
                ),
            )
        return str(job_id)

    def touch_waiter(self, job_id: str) -> None:
        """The waiting caller of ``job_id`` is still there (see :meth:`submit`'s ``waiter``)."""
        with self._single() as c:
            c.execute(_TOUCH_WAITER, {"b_id": parse_job_id(job_id), "b_now": utcnow()})

    def abandon(self, job_id: str, error_type: str, message: str) -> bool:
        """Fail a job that is still queued (its doorbell could not be rung): no orphan rows."""
        with write_session(self.url) as s:
            res = s.execute(
                update(Job)
                .where(Job.id == parse_job_id(job_id), Job.status == JobStatus.QUEUED.value)
                .values(
                    status=JobStatus.FAILED.value,
                    finished_at=utcnow(),
                    error_type=error_type,
                    error_message=message,
                )
            )
        return bool(res.rowcount)  # type: ignore[attr-defined]

    def fail_queued(self, host: str, error: ErrorPayload) -> list[JobView]:
        """Fail every job queued for ``host`` with one error, in one transaction (its worker
        found the host down); returns the rows it ended, for their done-notifications."""
        if not self.knows_host(host):
            return []
        hid = self.host_id(host)
        result = {"error_details": error.details} if error.details else None
        with self._begin() as c:
            rows = c.execute(
                update(Job)
                .where(Job.host_id == hid, Job.status == JobStatus.QUEUED.value)
                .values(
                    status=JobStatus.FAILED.value,
                    finished_at=utcnow(),
                    result=result,
                    error_type=error.error_type,
                    error_message=error.message,
                )
                .returning(*_VIEW_COLUMNS)
            ).all()
            return [self._view(c, row) for row in rows]

    # -- worker side ----------------------------------------------------------------------

    def claim_next(
        self,
        host: str,
        worker_id: str,
        state: HostState,
        *,
        lease_seconds: float,
        policy: SchedulerPolicy,
        waiter_grace: float = DEFAULT_WAITER_GRACE,
        running_model: str | None = None,
    ) -> ClaimedJob | None:
        """Claim the job the scheduler picks among this host's queued rows, or None.

        The UPDATE only wins on a row that is still ``queued``; losing a race (another claimer,
        a cancel) just means choosing again among what is left. Queued jobs whose interactive
        caller went quiet for ``waiter_grace`` seconds are cancelled first, never claimed.
        With ``running_model`` (jobs of it fill the host's other slots) nothing is claimed when
        the scheduler picks another model's job: that one waits for the running ones to end.
        """
        return self.claim_or_empty(
            host,
            worker_id,
            state,
            lease_seconds=lease_seconds,
            policy=policy,
            waiter_grace=waiter_grace,
            running_model=running_model,
        )[0]

    def claim_or_empty(
        self,
        host: str,
        worker_id: str,
        state: HostState,
        *,
        lease_seconds: float,
        policy: SchedulerPolicy,
        waiter_grace: float = DEFAULT_WAITER_GRACE,
        running_model: str | None = None,
    ) -> tuple[ClaimedJob | None, bool]:
        """:meth:`claim_next`, and whether the host's queue held nothing claimable (as opposed
        to a job that must wait for the running ones)."""
        if not self.knows_host(host):  # nothing was ever queued there (a worker's first ring)
            return None, True
        claim = Claim(host, worker_id, state, lease_seconds, policy, waiter_grace, running_model)
        while True:
            # One write transaction for the read and the conditional UPDATE: on SQLite it holds
            # the write lock throughout (BEGIN IMMEDIATE), so the UPDATE cannot lose.
            with self._begin() as c:
                job, lost, empty = self._claim_in(c, claim)
            if not lost:
                return job, empty

    def _claim_in(self, c: Connection, claim: Claim) -> tuple[ClaimedJob | None, bool, bool]:
        """(the claimed job or None, whether a race was lost and choosing again may help,
        whether nothing claimable was queued)."""
        hid = self.host_id(claim.host)
        now = utcnow()
        cut = cutoff(now, claim.waiter_grace)
        rows = c.execute(_CLAIM_LOOK, {"b_hid": hid, "b_cutoff": cut, "b_now": now}).all()
        heads = [r for r in rows if r.running_kind is None]
        # Abandoned jobs are skipped above; cancelling them costs a statement, so it is done at
        # most once a second per host (while such jobs stay queued the worker is woken to claim
        # again: by its own poll in embedded mode, by the reaper's ring in distributed mode).
        if time.monotonic() >= self._next_sweep.get(hid, 0.0):
            self._next_sweep[hid] = time.monotonic() + SWEEP_SECONDS
            abandoned = c.execute(
                _CANCEL_ABANDONED, {"b_hid": hid, "b_cutoff": cut, "b_now": now}
            ).all()
            for row in abandoned:
                log.info("job %s on %s: %s before it ran", row.id, claim.host, WAITER_GONE)
        if not heads:
            return None, False, True
        queued = [
            QueuedJob(
                id=f"{h.priority}:{h.model_key}",
                model=h.model_key or "",
                created_at=h.oldest.timestamp(),
                priority=h.priority,
            )
            for h in heads
        ]
        choice = choose_joining(
            queued, claim.state, now.timestamp(), claim.policy, claim.running_model
        )
        if choice is None:  # another model's turn: it waits for the running jobs to end
            return None, False, False
        # a context test holds its host (even against a second worker serving it by mistake)
        running = [r.running_kind for r in rows if r.running_kind is not None]
        if not may_start(choice.priority, running):
            return None, False, False
        won = c.execute(
            _CLAIM_UPDATE,
            {
                "b_hid": hid,
                "b_cutoff": cut,
                "b_model": choice.model,
                "b_priority": choice.priority,
                "b_worker": claim.worker_id,
                "b_lease": now + timedelta(seconds=claim.lease_seconds),
                "b_now": now,
            },
        ).first()
        if won is None:
            return None, True, False
        job = ClaimedJob(
            id=won.id,
            kind=won.kind,
            host=claim.host,
            model=choice.model,
            request=dict(won.request or {}),
            attempt=won.attempts,
            priority=won.priority,
            created_at=won.created_at,
        )
        return job, False, False

    def renew_lease(
        self, job: ClaimedJob, lease_seconds: float, *, waiter_grace: float | None = None
    ) -> bool:
        """Extend the lease; returns True when the job should stop (cancel requested, the
        claim was lost to the reaper, or, given ``waiter_grace``, its caller went quiet)."""
        now = utcnow()
        with write_session(self.url) as s:
            row = s.execute(
                update(Job)
                .where(
                    Job.id == job.id,
                    Job.status == JobStatus.RUNNING.value,
                    Job.attempts == job.attempt,
                )
                .values(lease_until=now + timedelta(seconds=lease_seconds), heartbeat_at=now)
                .returning(Job.cancel_requested_at, Job.waiter_seen_at)
            ).first()
        if row is None or row.cancel_requested_at is not None:
            return True
        return self._cancel_if_waiter_gone(job, row.waiter_seen_at, now, waiter_grace)

    def release(self, job: ClaimedJob) -> bool:
        """Hand back a job this worker claimed but will not run (it is stopping, or its host is
        down): queued again at once, in its old place, the claim not counted as an attempt (so
        the next claim has the same attempt number: the caller drops ``job`` for good). False
        (and no change) when this attempt no longer owns the job."""
        with self._begin() as c:
            res = c.execute(
                update(Job)
                .where(
                    Job.id == job.id,
                    Job.status == JobStatus.RUNNING.value,
                    Job.attempts == job.attempt,
                )
                .values(
                    status=JobStatus.QUEUED.value,
                    attempts=Job.attempts - 1,
                    lease_until=None,
                    worker_id=None,
                    # a first claim set started_at; the job has not started after all
                    started_at=None if job.attempt == 1 else Job.started_at,
                )
            )
        return bool(res.rowcount)

    def release_lost_claims(self, worker_id: str, keep: Collection[str] = ()) -> list[str]:
        """Hand back every job ``worker_id`` holds as running but is not running (``keep``: the
        ids it is running), as :meth:`release` does; returns their ids.

        A claim whose commit reached the database while its answer did not (the connection
        broke in between, a database restart) leaves such a job: the worker never learnt it
        holds it, and, being alive, its heartbeats keep the reaper away until the lease ends."""
        kept = [parse_job_id(k) for k in keep]
        with self._begin() as c:
            q = update(Job).where(Job.status == JobStatus.RUNNING.value, Job.worker_id == worker_id)
            if kept:
                q = q.where(Job.id.not_in(kept))
            rows = c.execute(
                q.values(
                    status=JobStatus.QUEUED.value,
                    attempts=Job.attempts - 1,
                    lease_until=None,
                    worker_id=None,
                    started_at=case((Job.attempts == 1, None), else_=Job.started_at),
                ).returning(Job.id)
            ).all()
        return [str(r[0]) for r in rows]

    def cancel_requested(self, job: ClaimedJob, *, waiter_grace: float | None = None) -> bool:
        """Whether the job should stop: cancelled, no longer this attempt's, or (given
        ``waiter_grace``) abandoned by its caller, which then also sets its cancel flag."""
        with read_session(self.url) as s:
            row = s.execute(
                select(Job.status, Job.attempts, Job.cancel_requested_at, Job.waiter_seen_at).where(
                    Job.id == job.id
                )
            ).first()
        if (
            row is None
            or row.cancel_requested_at is not None
            or row.status != JobStatus.RUNNING.value
            or row.attempts != job.attempt
        ):
            return True
        return self._cancel_if_waiter_gone(job, row.waiter_seen_at, utcnow(), waiter_grace)

    def _cancel_if_waiter_gone(
        self, job: ClaimedJob, seen_at: datetime | None, now: datetime, grace: float | None
    ) -> bool:
        """Set the cancel flag of a running job whose caller went quiet (then every later check,
        the worker's and the reaper's, sees a plain cancel); True when it did."""
        if grace is None or not waiter_gone(seen_at, now, grace):
            return False
        log.info("job %s on %s: %s while it ran", job.id, job.host, WAITER_GONE)
        with write_session(self.url) as s:
            s.execute(
                update(Job)
                .where(Job.id == job.id, Job.cancel_requested_at.is_(None))
                .values(cancel_requested_at=now)
            )
        return True

    def finish(self, job: ClaimedJob, result: dict[str, Any]) -> bool:
        """Store a success. False (and no change) when this attempt no longer owns the job."""
        return self.end(job, JobStatus.SUCCEEDED, result=result) is not None

    def fail(
        self,
        job: ClaimedJob,
        error_type: str,
        message: str,
        result: dict[str, Any] | None = None,
    ) -> bool:
        return (
            self.end(
                job, JobStatus.FAILED, result=result, error_type=error_type, error_message=message
            )
            is not None
        )

    def mark_cancelled(self, job: ClaimedJob, result: dict[str, Any] | None = None) -> bool:
        return self.end(job, JobStatus.CANCELLED, result=result, error_type="cancelled") is not None

    def end(
        self,
        job: ClaimedJob,
        status: JobStatus,
        *,
        result: dict[str, Any] | None = None,
        error_type: str | None = None,
        error_message: str | None = None,
    ) -> JobView | None:
        """Make the job final; returns the committed row, or None when this attempt no longer
        owns the job (finished already, cancelled while queued, or reaped)."""
        final, _ = self.end_and_claim(
            job, status, result=result, error_type=error_type, error_message=error_message
        )
        return final

    def end_and_claim(
        self,
        job: ClaimedJob,
        status: JobStatus,
        *,
        result: dict[str, Any] | None = None,
        error_type: str | None = None,
        error_message: str | None = None,
        claim: Claim | None = None,
    ) -> tuple[JobView | None, ClaimedJob | None]:
        """End ``job`` and (with ``claim``) claim the next one in the same transaction: a busy
        worker then pays one commit per job instead of two. Without ``claim`` the end is one
        statement (:meth:`_single`)."""
        with self._begin() if claim is not None else self._single() as c:
            row = c.execute(
                _END,
                {
                    "b_id": job.id,
                    "b_attempt": job.attempt,
                    "b_status": status.value,
                    "b_now": utcnow(),
                    "b_result": result,
                    "b_error_type": error_type,
                    "b_error_message": error_message,
                },
            ).first()
            final = None if row is None else self._view(c, row)
            nxt, lost, _ = self._claim_in(c, claim) if claim is not None else (None, False, False)
        if lost and claim is not None:
            nxt = self.claim_next(
                claim.host,
                claim.worker_id,
                claim.state,
                lease_seconds=claim.lease_seconds,
                policy=claim.policy,
                waiter_grace=claim.waiter_grace,
                running_model=claim.running_model,
            )
        return final, nxt

    # -- caller side ----------------------------------------------------------------------

    def get(self, job_id: str | uuid.UUID) -> JobView:
        jid = parse_job_id(job_id)
        with self._read() as c:
            row = c.execute(_GET, {"b_id": jid}).first()
            if row is None:
                raise JobNotFound(str(job_id))
            return self._view(c, row)

    def ids_starting_with(self, prefix: str, limit: int = 10) -> list[str]:
        """Ids of jobs whose id (hex digits, dashes ignored) starts with ``prefix``, at most
        ``limit``, oldest first. An indexed range of the id column: every id from
        ``prefix`` + 0s to ``prefix`` + fs."""
        digits = prefix.replace("-", "").lower()
        if not digits or len(digits) > 32 or any(ch not in "0123456789abcdef" for ch in digits):
            return []
        low = uuid.UUID(digits.ljust(32, "0"))
        high = uuid.UUID(digits.ljust(32, "f"))
        q = select(Job.id).where(Job.id.between(low, high)).order_by(Job.created_at).limit(limit)
        with self._read() as c:
            return [str(i) for i in c.scalars(q)]

    def status(self, job_id: str | uuid.UUID) -> str:
        """Just the status word (the waiter's cheap check)."""
        jid = parse_job_id(job_id)
        with self._read() as c:
            status = c.scalar(_STATUS, {"b_id": jid})
        if status is None:
            raise JobNotFound(str(job_id))
        return status

    def list_jobs(
        self,
        *,
        status: Sequence[str] | None = None,
        host: str | None = None,
        model: str | None = None,
        limit: int = 50,
    ) -> list[JobView]:
        with read_session(self.url) as s:
            q = select(*_VIEW_COLUMNS).order_by(Job.created_at.desc()).limit(limit)
            if status:
                q = q.where(Job.status.in_(list(status)))
            if host:
                q = q.join(Host, Host.id == Job.host_id).where(Host.name == host)
            if model:
                q = q.where(Job.model_key == model)
            return [self._view(s, r) for r in s.execute(q)]

    def cancel(self, job_id: str | uuid.UUID) -> JobView:
        """Cancel a job: a queued one at once, a running one at its next check (the flag)."""
        jid = parse_job_id(job_id)
        now = utcnow()
        with write_session(self.url) as s:
            row = s.get(Job, jid)
            if row is None:
                raise JobNotFound(str(job_id))
            if row.status == JobStatus.QUEUED.value:
                row.status = JobStatus.CANCELLED.value
                row.finished_at = now
                row.error_type = "cancelled"
            unfinished = not JobStatus(row.status).finished
            if row.cancel_requested_at is None and (
                unfinished or row.status == JobStatus.CANCELLED.value
            ):
                row.cancel_requested_at = now
            s.flush()
            return self._view(s, row)

    def retry(self, job_id: str | uuid.UUID) -> JobView:
        """Queue a finished-but-unsuccessful job again (the caller rings its host)."""
        jid = parse_job_id(job_id)
        with write_session(self.url) as s:
            row = s.get(Job, jid)
            if row is None:
                raise JobNotFound(str(job_id))
            if row.status not in (
                JobStatus.FAILED.value,
                JobStatus.CANCELLED.value,
                JobStatus.EXPIRED.value,
            ):
                raise ValidationError(
                    "job_id",
                    str(job_id),
                    f"is {row.status}; only failed, cancelled or expired jobs can be retried",
                )
            row.status = JobStatus.QUEUED.value
            row.error_type = None
            row.error_message = None
            row.result = None
            row.cancel_requested_at = None
            row.finished_at = None
            row.lease_until = None
            row.worker_id = None
            row.attempts = 0
            s.flush()
            return self._view(s, row)

    def prune(self, older_than: timedelta, statuses: Sequence[str] = FINISHED) -> int:
        """Delete finished jobs that ended more than ``older_than`` ago; returns how many."""
        bad = set(statuses) - set(FINISHED)
        if bad:
            raise ValidationError("status", sorted(bad), "only finished jobs can be pruned")
        cutoff = utcnow() - older_than
        with write_session(self.url) as s:
            res = s.execute(
                delete(Job).where(Job.status.in_(list(statuses)), Job.finished_at < cutoff)
            )
        return int(res.rowcount)  # type: ignore[attr-defined]

    def counts(self, host: str | None = None) -> dict[str, int]:
        """Jobs per status (of one host, or all): ``lmstrix jobs`` summaries and benches."""
        q = select(Job.status, func.count(Job.id)).group_by(Job.status)
        if host is not None:
            q = q.where(Job.host_id == self.host_id(host))
        with self._read() as c:
            return {status: int(n) for status, n in c.execute(q).all()}

    def queue_depths(self) -> dict[str, int]:
        """Queued jobs per host name (routing prefers the shortest queue)."""
        with read_session(self.url) as s:
            rows = s.execute(
                select(Host.name, func.count(Job.id))
                .join(Job, Job.host_id == Host.id)
                .where(Job.status == JobStatus.QUEUED.value)
                .group_by(Host.name)
            ).all()
        return {name: int(n) for name, n in rows}

    # -- reaper ---------------------------------------------------------------------------

    def reap_expired(
        self,
        waiter_grace: float = DEFAULT_WAITER_GRACE,
        worker_silent_for: float | None = WORKER_LIVE_WITHIN,
    ) -> list[ReapedJob]:
        """Re-queue running jobs whose worker is gone; fail those out of attempts. A job that was
        being cancelled, or whose interactive caller has gone quiet for ``waiter_grace``
        seconds, is cancelled instead: nobody wants it run again.

        A worker is gone when its row in the workers table has not been beaten for
        ``worker_silent_for`` seconds (its beats and its lease renewals come from one thread, so
        a silent row means a dead or frozen process: seconds after a kill), or when the job's
        lease expired (the rule of last resort, for a worker that never got its row written).
        Each update is conditional on the lease it read, so a job whose worker renewed it in the
        meantime is never touched. ``worker_silent_for`` None: the lease alone (right after the
        database was away, when every worker's row looks silent)."""
        now = utcnow()
        worker_gone = Job.lease_until < now
        if worker_silent_for is not None:
            silent = select(WorkerRow.worker_id).where(
                WorkerRow.seen_at < cutoff(now, worker_silent_for)
            )
            worker_gone = or_(worker_gone, Job.worker_id.in_(silent))
        out: list[ReapedJob] = []
        with write_session(self.url) as s:
            rows = s.execute(
                select(
                    Job.id,
                    Job.host_id,
                    Job.attempts,
                    Job.max_attempts,
                    Job.lease_until,
                    Job.cancel_requested_at,
                    Job.waiter_seen_at,
                ).where(Job.status == JobStatus.RUNNING.value, worker_gone)
            ).all()
            for r in rows:
                gone = waiter_gone(r.waiter_seen_at, now, waiter_grace)
                cancel = r.cancel_requested_at is not None or gone
                requeue = not cancel and r.attempts < r.max_attempts
                values: dict[str, Any]
                if cancel:
                    values = {
                        "status": JobStatus.CANCELLED.value,
                        "lease_until": None,
                        "finished_at": now,
                        "cancel_requested_at": r.cancel_requested_at or now,
                        "error_type": "cancelled",
                        "error_message": WAITER_GONE if gone else None,
                    }
                elif requeue:
                    values = {
                        "status": JobStatus.QUEUED.value,
                        "lease_until": None,
                        "worker_id": None,
                    }
                else:
                    values = {
                        "status": JobStatus.FAILED.value,
                        "lease_until": None,
                        "finished_at": now,
                        "error_type": "worker_lost",
                        "error_message": f"the worker died {r.attempts} times running this job",
                    }
                res = s.execute(
                    update(Job)
                    .where(
                        Job.id == r.id,
                        Job.status == JobStatus.RUNNING.value,
                        Job.lease_until == r.lease_until,
                    )
                    .values(**values)
                )
                if res.rowcount:  # type: ignore[attr-defined]
                    host = self._host_name(s, r.host_id)
                    expired = r.lease_until is None or r.lease_until < now
                    out.append(
                        ReapedJob(
                            str(r.id),
                            host,
                            requeue,
                            cancelled=cancel,
                            noticed_by="lease" if expired else "heartbeat",
                        )
                    )
        return out

    def hosts_with_queued(self, older_than: float = 0.0) -> list[str]:
        """Hosts with jobs queued for more than ``older_than`` seconds (the reaper rings them in
        case a doorbell was lost; fresh jobs have their own doorbell on the way)."""
        cutoff = utcnow() - timedelta(seconds=older_than)
        with read_session(self.url) as s:
            rows = s.execute(
                select(Host.name)
                .join(Job, Job.host_id == Host.id)
                .where(Job.status == JobStatus.QUEUED.value, Job.created_at <= cutoff)
                .distinct()
            ).all()
        return [r[0] for r in rows]

    # -- helpers --------------------------------------------------------------------------

    def _view(self, s: Session | Connection, row: Any) -> JobView:
        return JobView(
            id=str(row.id),
            kind=row.kind,
            host=self._host_name(s, row.host_id),
            model=row.model_key,
            status=row.status,
            priority=row.priority,
            request=row.request,
            result=row.result,
            error_type=row.error_type,
            error_message=row.error_message,
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            worker_id=row.worker_id,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            cancel_requested_at=row.cancel_requested_at,
            lease_until=row.lease_until,
            waiter_seen_at=row.waiter_seen_at,
        )
