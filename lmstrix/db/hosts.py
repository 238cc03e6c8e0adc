"""The hosts table: one row per LM Studio host, created the first time anything names it.

A scan, a model added by hand, an import and a submitted job may all be first to name a host,
possibly in several processes at once; they all go through :func:`get_or_create_host`.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from lmstrix.db.tables import Host
from lmstrix.domain.clock import utcnow
from lmstrix.domain.errors import ValidationError


def get_or_create_host(s: Session, name: str, url: str) -> Host:
    """The host row named ``name``, created if missing (race-safe: insert-if-absent)."""
    if not name:
        raise ValidationError("host", name, "a host name is needed")
    host = s.scalar(select(Host).where(Host.name == name).with_for_update())
    if host is not None:
        if url and not host.url:
            host.url = url
        return host
    values_ = {"name": name, "url": url, "created_at": utcnow()}
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        s.execute(pg_insert(Host).values(**values_).on_conflict_do_nothing(index_elements=["name"]))
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        s.execute(
            sqlite_insert(Host).values(**values_).on_conflict_do_nothing(index_elements=["name"])
        )
    else:
        s.add(Host(**values_))
        s.flush()
    return s.execute(select(Host).where(Host.name == name).with_for_update()).scalar_one()
