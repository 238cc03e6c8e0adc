"""Sessions: one short transaction per unit of work, with the schema migrated on first use.

``write_session()`` is for anything that changes rows: on SQLite it begins with ``BEGIN
IMMEDIATE``, so concurrent writers queue on the busy timeout instead of failing when a read turns
into a write. Everything inside the ``with`` block commits together or not at all. Keep these
blocks short and never hold one across an LM Studio call.

``read_session()`` is for reads; it never commits, and on SQLite in WAL mode it does not block or
get blocked by writers.

Database errors that mean the storage itself is unusable (a corrupt SQLite file, a database that
cannot be opened) come out as :class:`RegistryError`; constraint violations and other errors of the
caller's own statements pass through unchanged so callers can handle them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from lmstrix.db.engine import get_engine, write_engine
from lmstrix.db.migrate import ensure_schema, storage_error
from lmstrix.db.unavailable import is_unavailable, unavailable


@contextmanager
def write_session(url: str) -> Iterator[Session]:
    """A session whose transaction commits when the block ends and rolls back on any error."""
    ensure_schema(url)
    engine = write_engine(get_engine(url))
    with (
        _storage_errors(url),
        Session(bind=engine, expire_on_commit=False) as session,
        session.begin(),
    ):
        yield session


@contextmanager
def read_session(url: str) -> Iterator[Session]:
    """A session for reads; whatever it did is rolled back at the end."""
    ensure_schema(url)
    with (
        _storage_errors(url),
        Session(bind=get_engine(url), expire_on_commit=False, autoflush=False) as session,
    ):
        try:
            yield session
        finally:
            session.rollback()


@contextmanager
def _storage_errors(url: str) -> Iterator[None]:
    try:
        yield
    except IntegrityError:
        raise
    except DBAPIError as exc:
        if _is_storage_fault(exc):
            raise storage_error(url, exc) from exc
        if is_unavailable(exc):
            raise unavailable(url, exc) from None
        raise


def _is_storage_fault(exc: DBAPIError) -> bool:
    orig = exc.orig
    if not isinstance(orig, sqlite3.DatabaseError):
        return False  # a server database that is away is unavailable, not broken
    low = str(orig).lower()
    return any(
        word in low
        for word in ("not a database", "malformed", "corrupt", "unable to open", "readonly")
    )
