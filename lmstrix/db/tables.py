"""The ORM tables: hosts, their models, jobs, batches, context-test probes and workers.

Designed up front for the queue and the context tester so later work adds rows, not migrations:

- ``Host`` is one LM Studio server; its ``name`` names the worker queue (``lmstudio.<name>``).
- ``ModelRow`` is one downloaded model *on one host* (unique ``(host_id, key)``): the same model on
  two machines is tested separately, because what fits depends on the machine. A model that
  vanished from its host is marked ``present=False`` with ``missing_since``, never deleted, so its
  test history survives a temporary removal.
- ``Job`` is the source of truth of the queue: status, lease, heartbeat, cancel flag, progress and
  result all live in the row. The claim query filters ``host_id, status`` and orders by
  ``priority DESC, created_at``, which ``ix_jobs_claim`` serves. Higher priority runs first.
- ``Batch`` mirrors the OpenAI batch object (status words, request counts, timestamps); its items
  are ``Job`` rows with ``kind='batch_item'`` and a ``custom_id`` unique within the batch.
- ``Job.waiter_seen_at`` is the last beat of the interactive caller waiting for the job (NULL for
  jobs nobody waits on): a job whose caller went quiet is cancelled, never run again. The
  ``ix_jobs_waiters`` index keeps the claim's look for such queued jobs to the stale ones.
- ``WorkerRow`` is one running worker (one per host and process) with its heartbeat, so a caller
  can tell whether anyone serves a host.
- ``ContextTestProbe`` is one load-or-use probe of a context test, written ``in_flight`` before the
  probe runs so a crash leaves a trace of the size that killed the host.

Statuses are strings with CHECK constraints (portable, readable in raw SQL); the vocabularies are
in :mod:`lmstrix.domain.enums`. Every constraint is named through the naming convention, which
SQLite batch migrations need to alter them later. JSON columns are not mutation-tracked: assign a
new value instead of changing one in place.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from lmstrix.db.types import UTCDateTime, json_type, utcnow
from lmstrix.domain.enums import (
    BatchStatus,
    JobKind,
    JobStatus,
    ProbeOutcome,
    ProbePhase,
    TestStatus,
    WorkerMode,
    values,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _in(column: str, allowed: type[Any]) -> str:
    words = ", ".join(f"'{v}'" for v in values(allowed))
    return f"{column} IN ({words})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Host(Base):
    __tablename__ = "hosts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    url: Mapped[str] = mapped_column(String(512))
    # The host's identity (lmstrix.domain.urls.host_key); NULL only for a row an upgrade found
    # sharing its server with an older row: such a row is shown as not configured.
    url_key: Mapped[str | None] = mapped_column(String(512), unique=True)
    api_generation: Mapped[str | None] = mapped_column(String(16))
    capabilities: Mapped[dict[str, Any] | None] = mapped_column(json_type())
    lmstudio_version: Mapped[str | None] = mapped_column(String(64))
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    models: Mapped[list[ModelRow]] = relationship(
        back_populates="host", cascade="all, delete-orphan", passive_deletes=True
    )


class ModelRow(Base):
    __tablename__ = "models"
    __table_args__ = (
        UniqueConstraint("host_id", "key", name="uq_models_host_id_key"),
        CheckConstraint(_in("test_status", TestStatus), name="test_status"),
        Index("ix_models_key", "key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(512))
    display_name: Mapped[str | None] = mapped_column(String(512))
    publisher: Mapped[str | None] = mapped_column(String(256))
    type: Mapped[str] = mapped_column(String(32), default="llm", server_default="llm")
    architecture: Mapped[str | None] = mapped_column(String(128))
    format: Mapped[str | None] = mapped_column(String(32))
    quantization: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    params_string: Mapped[str | None] = mapped_column(String(64))
    path: Mapped[str | None] = mapped_column(String(1024))  # LM Studio's file path, if known
    declared_context: Mapped[int | None] = mapped_column(Integer)
    capabilities: Mapped[dict[str, Any] | None] = mapped_column(json_type())

    tested_context: Mapped[int | None] = mapped_column(Integer)
    last_known_good_context: Mapped[int | None] = mapped_column(Integer)
    last_known_bad_context: Mapped[int | None] = mapped_column(Integer)
    test_status: Mapped[str] = mapped_column(
        String(16), default=TestStatus.UNTESTED.value, server_default=TestStatus.UNTESTED.value
    )
    last_tested_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    test_error: Mapped[str | None] = mapped_column(Text)
    time_to_first_token: Mapped[float | None] = mapped_column(Float)
    tokens_per_second: Mapped[float | None] = mapped_column(Float)

    tags: Mapped[list[str] | None] = mapped_column(json_type())
    description: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[dict[str, Any] | None] = mapped_column(json_type())  # passthrough fields

    present: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    missing_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    host: Mapped[Host] = relationship(back_populates="models")


class Batch(Base):
    __tablename__ = "batches"
    __table_args__ = (
        CheckConstraint(_in("status", BatchStatus), name="status"),
        Index("ix_batches_status", "status"),
    )

    # OpenAI-style id ("batch_<hex>"), so results files and tooling can use it as is.
    id: Mapped[str] = mapped_column(
        String(64), primary_key=True, default=lambda: f"batch_{uuid.uuid4().hex}"
    )
    status: Mapped[str] = mapped_column(
        String(16),
        default=BatchStatus.VALIDATING.value,
        server_default=BatchStatus.VALIDATING.value,
    )
    endpoint: Mapped[str] = mapped_column(
        String(128), default="/v1/chat/completions", server_default="/v1/chat/completions"
    )
    completion_window: Mapped[str] = mapped_column(String(16), default="24h", server_default="24h")
    model: Mapped[str | None] = mapped_column(String(512))
    request_total: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    request_completed: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    request_failed: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # "metadata" is reserved on declarative classes, hence the trailing underscore.
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", json_type())
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(json_type())
    input_file: Mapped[str | None] = mapped_column(String(1024))
    output_file: Mapped[str | None] = mapped_column(String(1024))
    error_file: Mapped[str | None] = mapped_column(String(1024))

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    in_progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finalizing_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelling_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    jobs: Mapped[list[Job]] = relationship(back_populates="batch", passive_deletes=True)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("kind", JobKind), name="kind"),
        CheckConstraint(_in("status", JobStatus), name="status"),
        UniqueConstraint("batch_id", "custom_id", name="uq_jobs_batch_id_custom_id"),
        Index("ix_jobs_claim", "host_id", "status", "priority", "created_at"),
        Index("ix_jobs_status_lease_until", "status", "lease_until"),
        Index("ix_jobs_model_id", "model_id"),
        Index("ix_jobs_waiters", "host_id", "status", "waiter_seen_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(16))
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"))
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"))
    model_key: Mapped[str | None] = mapped_column(String(512))  # as requested; survives deletion
    status: Mapped[str] = mapped_column(
        String(16), default=JobStatus.QUEUED.value, server_default=JobStatus.QUEUED.value
    )
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    request: Mapped[dict[str, Any] | None] = mapped_column(json_type())
    result: Mapped[dict[str, Any] | None] = mapped_column(json_type())
    error_type: Mapped[str | None] = mapped_column(String(128))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer, default=3, server_default=text("3"))
    worker_id: Mapped[str | None] = mapped_column(String(256))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    progress: Mapped[dict[str, Any] | None] = mapped_column(json_type())
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    custom_id: Mapped[str | None] = mapped_column(String(512))
    waiter_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    host: Mapped[Host] = relationship()
    model: Mapped[ModelRow | None] = relationship()
    batch: Mapped[Batch | None] = relationship(back_populates="jobs")
    probes: Mapped[list[ContextTestProbe]] = relationship(
        back_populates="job", passive_deletes=True, order_by="ContextTestProbe.id"
    )


class ContextTestProbe(Base):
    __tablename__ = "context_test_probes"
    __table_args__ = (
        CheckConstraint(_in("phase", ProbePhase), name="phase"),
        CheckConstraint(_in("outcome", ProbeOutcome), name="outcome"),
        Index("ix_context_test_probes_job_id", "job_id"),
        Index("ix_context_test_probes_model_id_context_size", "model_id", "context_size"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    context_size: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(8))
    outcome: Mapped[str] = mapped_column(
        String(16),
        default=ProbeOutcome.IN_FLIGHT.value,
        server_default=ProbeOutcome.IN_FLIGHT.value,
    )
    applied_context: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    time_to_first_token: Mapped[float | None] = mapped_column(Float)
    tokens_per_second: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    job: Mapped[Job | None] = relationship(back_populates="probes")
    model: Mapped[ModelRow] = relationship()


class WorkerRow(Base):
    """A worker serving one host, as it last reported itself (see ``lmstrix.jobs.workers``)."""

    __tablename__ = "workers"
    __table_args__ = (
        CheckConstraint(_in("mode", WorkerMode), name="mode"),
        Index("ix_workers_host_seen_at", "host", "seen_at"),
    )

    worker_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    host: Mapped[str] = mapped_column(String(128))  # the LM Studio host it serves
    hostname: Mapped[str] = mapped_column(String(256))  # the machine it runs on
    pid: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    current_job: Mapped[str | None] = mapped_column(String(36))
    loaded_model: Mapped[str | None] = mapped_column(String(512))


class FileRow(Base):
    """A file of the OpenAI files API (``lmstrix serve``): an uploaded batch input, held in the
    database so that every server and worker reads the same bytes; or a batch's output or error
    file, whose content is made from the batch's job rows when it is read (``content`` NULL,
    ``batch_id`` and ``part`` set)."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_created_at", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "file-<hex>"
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(512))
    size: Mapped[int | None] = mapped_column("bytes", BigInteger)  # NULL: made on demand
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    content: Mapped[bytes | None] = mapped_column(LargeBinary)
    batch_id: Mapped[str | None] = mapped_column(
        ForeignKey("batches.id", ondelete="CASCADE"), index=True
    )
    part: Mapped[str | None] = mapped_column(String(8))  # "output" or "error"


metadata = Base.metadata

__all__ = [
    "NAMING_CONVENTION",
    "Base",
    "Batch",
    "ContextTestProbe",
    "FileRow",
    "Host",
    "Job",
    "ModelRow",
    "WorkerRow",
    "metadata",
]
