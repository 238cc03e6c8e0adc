"""Initial schema: hosts, models, batches, jobs, context_test_probes.

Types are spelled out here rather than imported from lmstrix, so this script keeps creating the
same schema whatever later versions of the code do. Timestamps are ``DateTime(timezone=True)``
(``timestamptz`` on PostgreSQL; lmstrix stores naive UTC on SQLite); JSON is ``JSONB`` on
PostgreSQL.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
    )


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="validating", nullable=False),
        sa.Column(
            "endpoint", sa.String(length=128), server_default="/v1/chat/completions", nullable=False
        ),
        sa.Column("completion_window", sa.String(length=16), server_default="24h", nullable=False),
        sa.Column("model", sa.String(length=512), nullable=True),
        sa.Column("request_total", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("request_completed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("request_failed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("metadata", _json(), nullable=True),
        sa.Column("errors", _json(), nullable=True),
        sa.Column("input_file", sa.String(length=1024), nullable=True),
        sa.Column("output_file", sa.String(length=1024), nullable=True),
        sa.Column("error_file", sa.String(length=1024), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("in_progress_at", _utc(), nullable=True),
        sa.Column("expires_at", _utc(), nullable=True),
        sa.Column("finalizing_at", _utc(), nullable=True),
        sa.Column("completed_at", _utc(), nullable=True),
        sa.Column("failed_at", _utc(), nullable=True),
        sa.Column("expired_at", _utc(), nullable=True),
        sa.Column("cancelling_at", _utc(), nullable=True),
        sa.Column("cancelled_at", _utc(), nullable=True),
        sa.CheckConstraint(
            "status IN ('validating', 'in_progress', 'finalizing', 'completed', 'failed', "
            "'expired', 'cancelling', 'cancelled')",
            name=op.f("ck_batches_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
    )
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.create_index("ix_batches_status", ["status"], unique=False)

    op.create_table(
        "hosts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("url", sa.String(length=512), nullable=False),
        sa.Column("api_generation", sa.String(length=16), nullable=True),
        sa.Column("lmstudio_version", sa.String(length=64), nullable=True),
        sa.Column("last_seen_at", _utc(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hosts")),
        sa.UniqueConstraint("name", name=op.f("uq_hosts_name")),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("display_name", sa.String(length=512), nullable=True),
        sa.Column("publisher", sa.String(length=256), nullable=True),
        sa.Column("type", sa.String(length=32), server_default="llm", nullable=False),
        sa.Column("architecture", sa.String(length=128), nullable=True),
        sa.Column("format", sa.String(length=32), nullable=True),
        sa.Column("quantization", sa.String(length=64), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("params_string", sa.String(length=64), nullable=True),
        sa.Column("path", sa.String(length=1024), nullable=True),
        sa.Column("declared_context", sa.Integer(), nullable=True),
        sa.Column("capabilities", _json(), nullable=True),
        sa.Column("tested_context", sa.Integer(), nullable=True),
        sa.Column("last_known_good_context", sa.Integer(), nullable=True),
        sa.Column("last_known_bad_context", sa.Integer(), nullable=True),
        sa.Column("test_status", sa.String(length=16), server_default="untested", nullable=False),
        sa.Column("last_tested_at", _utc(), nullable=True),
        sa.Column("test_error", sa.Text(), nullable=True),
        sa.Column("time_to_first_token", sa.Float(), nullable=True),
        sa.Column("tokens_per_second", sa.Float(), nullable=True),
        sa.Column("tags", _json(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("extra", _json(), nullable=True),
        sa.Column("present", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("missing_since", _utc(), nullable=True),
        sa.Column("first_seen_at", _utc(), nullable=False),
        sa.Column("last_seen_at", _utc(), nullable=True),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.CheckConstraint(
            "test_status IN ('untested', 'testing', 'tested', 'failed')",
            name=op.f("ck_models_test_status"),
        ),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name=op.f("fk_models_host_id_hosts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("host_id", "key", name="uq_models_host_id_key"),
    )
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.create_index("ix_models_key", ["key"], unique=False)

    op.create_table(
        "jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=True),
        sa.Column("model_key", sa.String(length=512), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="queued", nullable=False),
        sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("request", _json(), nullable=True),
        sa.Column("result", _json(), nullable=True),
        sa.Column("error_type", sa.String(length=128), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default=sa.text("3"), nullable=False),
        sa.Column("worker_id", sa.String(length=256), nullable=True),
        sa.Column("lease_until", _utc(), nullable=True),
        sa.Column("heartbeat_at", _utc(), nullable=True),
        sa.Column("progress", _json(), nullable=True),
        sa.Column("cancel_requested_at", _utc(), nullable=True),
        sa.Column("expires_at", _utc(), nullable=True),
        sa.Column("batch_id", sa.String(length=64), nullable=True),
        sa.Column("custom_id", sa.String(length=512), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("started_at", _utc(), nullable=True),
        sa.Column("finished_at", _utc(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('inference', 'context_test', 'batch_item')", name=op.f("ck_jobs_kind")
        ),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'expired')",
            name=op.f("ck_jobs_status"),
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name=op.f("fk_jobs_batch_id_batches"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name=op.f("fk_jobs_host_id_hosts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_jobs_model_id_models"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("batch_id", "custom_id", name="uq_jobs_batch_id_custom_id"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_claim", ["host_id", "status", "priority", "created_at"], unique=False
        )
        batch_op.create_index("ix_jobs_model_id", ["model_id"], unique=False)
        batch_op.create_index("ix_jobs_status_lease_until", ["status", "lease_until"], unique=False)

    op.create_table(
        "context_test_probes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("context_size", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(length=8), nullable=False),
        sa.Column("outcome", sa.String(length=16), server_default="in_flight", nullable=False),
        sa.Column("applied_context", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("time_to_first_token", sa.Float(), nullable=True),
        sa.Column("tokens_per_second", sa.Float(), nullable=True),
        sa.Column("started_at", _utc(), nullable=False),
        sa.Column("finished_at", _utc(), nullable=True),
        sa.CheckConstraint(
            "outcome IN ('in_flight', 'ok', 'failed', 'reduced')",
            name=op.f("ck_context_test_probes_outcome"),
        ),
        sa.CheckConstraint("phase IN ('load', 'use')", name=op.f("ck_context_test_probes_phase")),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_context_test_probes_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name=op.f("fk_context_test_probes_model_id_models"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_context_test_probes")),
    )
    with op.batch_alter_table("context_test_probes", schema=None) as batch_op:
        batch_op.create_index("ix_context_test_probes_job_id", ["job_id"], unique=False)
        batch_op.create_index(
            "ix_context_test_probes_model_id_context_size",
            ["model_id", "context_size"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("context_test_probes", schema=None) as batch_op:
        batch_op.drop_index("ix_context_test_probes_model_id_context_size")
        batch_op.drop_index("ix_context_test_probes_job_id")
    op.drop_table("context_test_probes")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_status_lease_until")
        batch_op.drop_index("ix_jobs_model_id")
        batch_op.drop_index("ix_jobs_claim")
    op.drop_table("jobs")
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_index("ix_models_key")
    op.drop_table("models")
    op.drop_table("hosts")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index("ix_batches_status")
    op.drop_table("batches")
