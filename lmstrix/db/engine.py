"""One SQLAlchemy engine per process and database URL, tuned for SQLite and PostgreSQL.

Why this module exists rather than a bare ``create_engine``:

- Engines must not cross a ``fork`` (dramatiq forks its worker processes), so the cache is keyed by
  the process id as well as the URL.
- SQLite needs per-connection setup to be safe with several processes: WAL (readers never block the
  writer), a busy timeout (writers wait instead of failing), foreign keys (off by default), and
  ``BEGIN IMMEDIATE`` for write transactions. Without the last one, a transaction that reads and
  then writes fails at once with SQLITE_BUSY when another process committed in between, and the
  busy timeout does not help. We take over ``BEGIN`` from the sqlite3 driver (the recipe in
  SQLAlchemy's SQLite dialect docs) and let a connection option choose the mode.
- ``postgresql://`` URLs would pick psycopg2, which is not a dependency; we use psycopg 3.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DisconnectionError, NoSuchModuleError
from sqlalchemy.pool import StaticPool

from lmstrix.domain.errors import ConfigurationError
from lmstrix.domain.urls import mask_url_password

# Execution option read by the ``begin`` hook: "IMMEDIATE" takes SQLite's write lock at BEGIN.
SQLITE_BEGIN_OPTION = "lmstrix_sqlite_begin"
SQLITE_BUSY_TIMEOUT_SECONDS = 30.0
#: A pooled PostgreSQL connection idle this long is pinged before it is used again.
PING_IDLE_SECONDS = 1.0

_engines: dict[tuple[int, str], Engine] = {}
_lock = threading.Lock()


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL and pick the drivers lmstrix ships with (psycopg 3 for PostgreSQL)."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except Exception as exc:  # ArgumentError for garbage; ValueError for a bad port
        raise ConfigurationError(
            f"database URL {mask_url_password(str(url))!r} is not a valid SQLAlchemy URL ({exc}); "
            "use e.g. sqlite:////path/to/lmstrix.db or postgresql://user@host/db",
            key="database.url",
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def sqlite_path(url: str | URL) -> Path | None:
    """The file behind a SQLite URL, or None for an in-memory database."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    db = parsed.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db).expanduser().resolve()


def get_engine(url: str) -> Engine:
    """The process-wide engine for ``url``.

    Does not create or migrate tables; sessions from :mod:`lmstrix.db.session` do that on first
    use.
    """
    key = (os.getpid(), normalize_url(url).render_as_string(hide_password=False))
    engine = _engines.get(key)
    if engine is not None:
        return engine
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _create(normalize_url(key[1]))
            _engines[key] = engine
    return engine


def dispose_engines() -> None:
    """Close every pooled connection of this process (tests, and before dropping a database)."""
    with _lock:
        for (pid, _), engine in list(_engines.items()):
            if pid == os.getpid():
                engine.dispose()
        _engines.clear()
        _write_views.clear()


def _create(url: URL) -> Engine:
    try:
        if url.get_backend_name() == "sqlite":
            return _create_sqlite(url)
        return _create_postgres(url)
    except (NoSuchModuleError, ImportError) as exc:  # an unknown scheme, or its driver missing
        raise ConfigurationError(
            f"database URL {mask_url_password(url.render_as_string())!r} names a database "
            f"lmstrix cannot use ({exc}); use sqlite:////path/to/lmstrix.db or "
            "postgresql://user@host/db",
            key="database.url",
        ) from None


def _create_postgres(url: URL) -> Engine:
    """An engine whose pool pings a connection before use only when it sat idle for
    :data:`PING_IDLE_SECONDS` (or is new): a worker idle across a PostgreSQL restart reconnects
    instead of failing, while a busy one does not pay a round trip per transaction (SQLAlchemy's
    ``pool_pre_ping`` pings at every checkout)."""
    engine = create_engine(url, future=True)

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is not None and time.monotonic() - since < PING_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # the pool drops this connection and checks out another
            raise DisconnectionError(f"a pooled connection no longer answers ({exc})") from exc

    return engine


def _create_sqlite(url: URL) -> Engine:
    path = sqlite_path(url)
    kwargs: dict[str, Any] = {
        "connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False}
    }
    if path is None:
        # One shared connection, or every session would see its own empty in-memory database.
        kwargs["poolclass"] = StaticPool
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # We emit BEGIN ourselves (below); the driver's implicit transactions would defeat it.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)}")
            cur.execute("PRAGMA foreign_keys = ON")
            if path is not None:
                cur.execute("PRAGMA journal_mode = WAL")  # persists in the file
                cur.execute("PRAGMA synchronous = NORMAL")  # safe with WAL, much faster
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def write_engine(engine: Engine) -> Engine:
    """A view of ``engine`` whose transactions take the write lock at BEGIN (SQLite only).

    It shares the engine's pool and event hooks; only the BEGIN mode differs.
    """
    if engine.dialect.name != "sqlite":
        return engine
    view = _write_views.get(id(engine))
    if view is None or view.engine is not engine:
        view = _WriteView(engine, engine.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"}))
        _write_views[id(engine)] = view
    return view.writer


@dataclass(frozen=True, slots=True)
class _WriteView:
    engine: Engine
    writer: Engine


_write_views: dict[int, _WriteView] = {}
