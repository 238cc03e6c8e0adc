"""The one clock: timezone-aware UTC, so no timestamp is ever mistaken for local time."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso_utc(when: datetime) -> str:
    """The one timestamp format of lmstrix's JSON: ISO-8601 in UTC with a ``Z``, with the
    fraction of a second the time has and no more (``2026-12-03T15:44:23.120512Z``,
    ``2024-01-15T10:30:00Z``), so an exported time reads back to the microsecond. A naive
    datetime is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")
