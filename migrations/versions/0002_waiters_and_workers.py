"""Waiter heartbeat on jobs, and the workers table.

``jobs.waiter_seen_at`` is the last beat of the interactive caller waiting for a job (NULL when
nobody waits on it); ``ix_jobs_waiters`` serves the claim's look for queued jobs whose caller went
quiet. ``workers`` is one row per running worker with its heartbeat.

Types are spelled out here, as in 0001, so this script keeps creating the same schema whatever
later versions of the code do.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("waiter_seen_at", _utc(), nullable=True))
        batch_op.create_index(
            "ix_jobs_waiters", ["host_id", "status", "waiter_seen_at"], unique=False
        )

    op.create_table(
        "workers",
        sa.Column("worker_id", sa.String(length=256), nullable=False),
        sa.Column("host", sa.String(length=128), nullable=False),
        sa.Column("hostname", sa.String(length=256), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("started_at", _utc(), nullable=False),
        sa.Column("seen_at", _utc(), nullable=False),
        sa.Column("current_job", sa.String(length=36), nullable=True),
        sa.Column("loaded_model", sa.String(length=512), nullable=True),
        sa.CheckConstraint("mode IN ('embedded', 'distributed')", name=op.f("ck_workers_mode")),
        sa.PrimaryKeyConstraint("worker_id", name=op.f("pk_workers")),
    )
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.create_index("ix_workers_host_seen_at", ["host", "seen_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_index("ix_workers_host_seen_at")
    op.drop_table("workers")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_waiters")
        batch_op.drop_column("waiter_seen_at")
