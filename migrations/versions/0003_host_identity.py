"""A host is its normalized URL: ``hosts.url_key`` (unique), and its detected capabilities.

Existing rows get their key computed from their URL. When several rows point at the same server
(the same URL under two names), the oldest keeps the key and the others keep NULL: they stay in
the registry with their models and results, shown as hosts no longer configured, until
``lmstrix hosts forget`` removes them.

Types are spelled out here, as in 0001, so this script keeps creating the same schema whatever
later versions of the code do.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-09
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def host_key(url: str) -> str:
    """The normalized URL as this revision defines it (kept here, like the types, so the keys it
    writes do not change when the code's own normalization does): lower-case scheme and host,
    loopback as ``localhost``, the port written, no user info, no trailing slash or ``/v1``."""
    parts = urlsplit(url.strip())
    scheme = (parts.scheme or "http").lower()
    hostname = (parts.hostname or "").lower()
    if hostname in _LOOPBACK:
        hostname = "localhost"
    if ":" in hostname:
        hostname = f"[{hostname}]"
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme, 80)
    except ValueError:
        port = _DEFAULT_PORTS.get(scheme, 80)
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{scheme}://{hostname}:{port}{path}"


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
    )


def upgrade() -> None:
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("url_key", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("capabilities", _json(), nullable=True))
    hosts = sa.table(
        "hosts", sa.column("id", sa.Integer), sa.column("url", sa.String), sa.column("url_key")
    )
    conn = op.get_bind()
    taken: set[str] = set()
    for row_id, url in conn.execute(sa.select(hosts.c.id, hosts.c.url).order_by(hosts.c.id)):
        key = host_key(url or "")
        if not url or key in taken:
            continue
        taken.add(key)
        conn.execute(sa.update(hosts).where(hosts.c.id == row_id).values(url_key=key))
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.create_unique_constraint(op.f("uq_hosts_url_key"), ["url_key"])


def downgrade() -> None:
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("uq_hosts_url_key"), type_="unique")
        batch_op.drop_column("capabilities")
        batch_op.drop_column("url_key")
