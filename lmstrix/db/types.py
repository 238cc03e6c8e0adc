"""Column types that mean the same on SQLite and PostgreSQL.

- ``UTCDateTime``: PostgreSQL has ``timestamptz``; SQLite has no time zones at all. We store naive
  UTC on SQLite and hand back aware UTC datetimes on both, and refuse naive datetimes on the way in,
  because a naive value is almost always local time by mistake and would be silently off by hours.
- ``JSONType``: JSON text on SQLite (JSON1), ``JSONB`` on PostgreSQL (indexable, compact), and a
  Python ``None`` becomes SQL NULL rather than the JSON literal ``null``, so "not set" reads the
  same everywhere.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

from lmstrix.domain.clock import utcnow

__all__ = ["UTCDateTime", "json_type", "utcnow"]


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}: {value!r}")
        if value.tzinfo is None:
            raise ValueError(
                f"naive datetime {value.isoformat()} refused: pass an aware datetime "
                "(e.g. datetime.now(UTC)) so it cannot be mistaken for local time"
            )
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def json_type() -> TypeEngine[Any]:
    """JSON everywhere, JSONB on PostgreSQL; ``None`` is stored as SQL NULL."""
    return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
