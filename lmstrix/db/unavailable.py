"""Telling a database that is away from a statement that is wrong.

A PostgreSQL restart, a cut network or a SQLite file locked past the busy timeout says nothing
about the work: the same statement succeeds a moment later. Those faults leave the store as
:class:`DatabaseUnavailableError` (naming the database without its password), which callers may
retry; every other database error passes through unchanged.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from lmstrix.domain.errors import DatabaseUnavailableError
from lmstrix.domain.urls import mask_url_password

_SQLITE_TRANSIENT = ("locked", "busy", "disk i/o")


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database could not be reached or used for now."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated or isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    if isinstance(exc.orig, sqlite3.Error):
        low = str(exc.orig).lower()
        return any(word in low for word in _SQLITE_TRANSIENT)
    return True  # a server database's operational errors are about the connection


def unavailable(url: str, exc: BaseException) -> DatabaseUnavailableError:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    reason = f"{type(orig).__name__}: {first}" if first else type(orig).__name__
    # a driver's message may quote the connection string: never let a password through
    reason = reason.replace(url, mask_url_password(url))
    return DatabaseUnavailableError(mask_url_password(url), reason[:300])


@contextmanager
def database_faults(url: str) -> Iterator[None]:
    """Turn the database's "not now" faults inside the block into DatabaseUnavailableError."""
    try:
        yield
    except DBAPIError as exc:
        if is_unavailable(exc):
            raise unavailable(url, exc) from None
        raise


__all__ = ["database_faults", "is_unavailable", "unavailable"]
