"""The one clock: timezone-aware UTC, so no timestamp is ever mistaken for local time."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
