"""The ``files`` table of the OpenAI files API (``lmstrix serve``).

An uploaded batch input file keeps its bytes in ``content``, in the database, because the server
that took the upload and the workers that run the batch may be on different machines. A batch's
output and error files are rows too, with ``content`` NULL: their lines are made from the batch's
job rows whenever they are read, so the results are stored once, in the jobs.

Types are spelled out here, as in 0001, so this script keeps creating the same schema whatever
later versions of the code do.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-16
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("filename", sa.String(length=512), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=True),
        sa.Column("batch_id", sa.String(length=64), nullable=True),
        sa.Column("part", sa.String(length=8), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
            name=op.f("fk_files_batch_id_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_files")),
    )
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.create_index("ix_files_created_at", ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_files_batch_id"), ["batch_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_files_batch_id"))
        batch_op.drop_index("ix_files_created_at")
    op.drop_table("files")
