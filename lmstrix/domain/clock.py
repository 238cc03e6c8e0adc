"""The one clock: timezone-aware UTC, so no timestamp is ever mistaken for local time."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso_utc(when: datetime) -> str:
    """The one timestamp format of lmstrix's JSON: ISO-8601 in UTC, to the millisecond, with a
    ``Z`` (``2026-12-03T15:44:23.120Z``). A naive datetime is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
