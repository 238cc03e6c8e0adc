"""Bring a database to the newest schema, safely when several processes start at once.

A facade and two workers often start together against a fresh database. Alembic itself does not
serialize them, so ``upgrade`` runs under a lock: ``pg_advisory_xact_lock`` on PostgreSQL (held
by the migration transaction, so it cannot leak) and a ``filelock`` next to the SQLite file. Each
process checks the revision again after taking the lock, so only the first one migrates.

The Alembic scripts live in the top-level ``migrations/`` of a source checkout and are shipped in
the wheel as ``lmstrix/_migrations``; :func:`script_location` finds either.

Any failure here becomes a :class:`RegistryError` naming the database and what to do; a corrupt
SQLite file is reported as such, never replaced by an empty registry.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import filelock
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

import lmstrix
from lmstrix.db.engine import (
    SQLITE_BEGIN_OPTION,
    get_engine,
    sqlite_path,
)
from lmstrix.domain.errors import LMStrixError, RegistryError
from lmstrix.domain.urls import mask_url_password

# Arbitrary constant naming lmstrix's migration lock among all advisory locks on the server.
PG_MIGRATION_LOCK_KEY = 0x6C6D_7374_7278  # "lmstrx"
LOCK_TIMEOUT_SECONDS = 300.0

_migrated: set[str] = set()
_migrated_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class RevisionState:
    """Where a database stands relative to the migrations this lmstrix ships."""

    url: str  # password masked
    current: tuple[str, ...]
    heads: tuple[str, ...]

    @property
    def at_head(self) -> bool:
        return set(self.current) == set(self.heads)


def script_location() -> Path:
    """The Alembic script directory: the wheel's ``lmstrix/_migrations`` or the checkout's."""
    package_dir = Path(lmstrix.__file__).resolve().parent
    for candidate in (package_dir / "_migrations", package_dir.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise RegistryError(
        f"lmstrix's database migrations are missing (looked in {package_dir / '_migrations'} and "
        f"{package_dir.parent / 'migrations'}); reinstall lmstrix"
    )


def alembic_config(url: str) -> AlembicConfig:
    """An Alembic config for ``url`` built in code, so no ``alembic.ini`` is needed."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(script_location()))
    # ConfigParser interpolation would choke on '%' in URL-encoded passwords.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revisions() -> tuple[str, ...]:
    return tuple(ScriptDirectory(str(script_location())).get_heads())


def current_revisions(connection: Connection) -> tuple[str, ...]:
    return tuple(MigrationContext.configure(connection).get_current_heads())


def revision_state(url: str) -> RevisionState:
    """The database's current revision(s) and the newest known ones, without changing anything."""
    with _translate_errors(url), get_engine(url).connect() as conn:
        current = current_revisions(conn)
    return RevisionState(url=mask_url_password(url), current=current, heads=head_revisions())


def upgrade(url: str, revision: str = "head") -> RevisionState:
    """Migrate to ``revision`` under the cross-process lock; a no-op when already there."""
    engine = get_engine(url)
    with _translate_errors(url), _process_lock(url):
        _upgrade_locked(engine, revision)
    if revision == "head":
        with _migrated_lock:
            _migrated.add(_key(url))
    return revision_state(url)


def downgrade(url: str, revision: str = "base") -> RevisionState:
    """Undo migrations down to ``revision`` (tests and rollbacks; drops data)."""
    engine = get_engine(url)
    with _translate_errors(url), _process_lock(url), _migration_connection(engine) as conn:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
    with _migrated_lock:
        _migrated.discard(_key(url))
    return revision_state(url)


def ensure_schema(url: str) -> None:
    """Migrate on first use: once per process and URL, cheap afterwards."""
    key = _key(url)
    if key in _migrated:
        return
    state = revision_state(url)
    unknown = set(state.current) - set(_all_revisions())
    if unknown:
        raise RegistryError(
            f"the database {state.url} is at revision {', '.join(sorted(unknown))}, which this "
            f"lmstrix {lmstrix.__version__} does not know: it was migrated by a newer lmstrix; "
            "upgrade lmstrix (or point LMSTRIX_DATABASE_URL at another database)"
        )
    if not state.at_head:
        upgrade(url)
    with _migrated_lock:
        _migrated.add(key)


def forget_migrated() -> None:
    """Make the next :func:`ensure_schema` check the database again (tests)."""
    with _migrated_lock:
        _migrated.clear()


# -- internals ---------------------------------------------------------------------------------


def _key(url: str) -> str:
    return str(get_engine(url).url)


def _all_revisions() -> set[str]:
    return {s.revision for s in ScriptDirectory(str(script_location())).walk_revisions()}


def _upgrade_locked(engine: Engine, revision: str) -> None:
    with _migration_connection(engine) as conn:
        if engine.dialect.name == "postgresql":
            # Transaction-scoped: released by the commit below, or by the server if we die.
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_MIGRATION_LOCK_KEY})
        if revision == "head" and set(current_revisions(conn)) == set(head_revisions()):
            return  # another process migrated while we waited for the lock
        cfg = alembic_config(engine.url.render_as_string(hide_password=False))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


@contextmanager
def _migration_connection(engine: Engine) -> Iterator[Connection]:
    """One transaction for the whole migration.

    On SQLite, batch migrations recreate tables, which enforced foreign keys would break, so they
    are switched off for this connection (outside the transaction, where SQLite honours it) and
    back on before it returns to the pool. SQLite DDL is transactional once we issue BEGIN
    ourselves, so a failed migration rolls back instead of leaving half a schema.
    """
    with engine.connect() as conn:
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:
            # Straight to the driver: through SQLAlchemy it would run inside a BEGIN, where
            # SQLite silently ignores this pragma.
            _raw_sqlite(conn).execute("PRAGMA foreign_keys = OFF")
            conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        try:
            with conn.begin():
                yield conn
        finally:
            if sqlite:
                _raw_sqlite(conn).execute("PRAGMA foreign_keys = ON")


def _raw_sqlite(conn: Connection) -> sqlite3.Connection:
    raw = conn.connection.dbapi_connection
    assert isinstance(raw, sqlite3.Connection)
    return raw


@contextmanager
def _process_lock(url: str) -> Iterator[None]:
    path = sqlite_path(url)
    if path is None:  # PostgreSQL locks in the transaction; in-memory SQLite is one process
        yield
        return
    lock = filelock.FileLock(str(path) + ".migrate.lock", timeout=LOCK_TIMEOUT_SECONDS)
    try:
        with lock:
            yield
    except filelock.Timeout:
        raise RegistryError(
            f"waited {LOCK_TIMEOUT_SECONDS:.0f}s for another process to finish migrating {path} "
            f"(lock file {lock.lock_file}); if no lmstrix process is running, delete the lock file"
        ) from None


@contextmanager
def _translate_errors(url: str) -> Iterator[None]:
    try:
        yield
    except LMStrixError:
        raise
    except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
        raise storage_error(url, exc) from exc


def storage_error(url: str, exc: BaseException) -> RegistryError:
    """A RegistryError that names the database and says what to do about ``exc``."""
    path = sqlite_path(url)
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    reason = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    if path is not None and isinstance(orig, sqlite3.DatabaseError):
        low = reason.lower()
        if "not a database" in low or "malformed" in low or "corrupt" in low:
            return RegistryError(
                f"the registry database {path} is corrupt ({reason}); lmstrix will not overwrite "
                f"it: move it aside (e.g. `mv {path} {path}.corrupt`) and run `lmstrix scan` to "
                "start a new registry, or restore a backup",
                path=str(path),
            )
        if "unable to open" in low or "readonly" in low or "read-only" in low:
            return RegistryError(
                f"cannot open the registry database {path} ({reason}); check that the directory "
                "exists and that you may read and write the file",
                path=str(path),
            )
    where = str(path) if path is not None else mask_url_password(url)
    return RegistryError(
        f"the registry database {where} cannot be used ({reason}); check database.url / "
        "LMSTRIX_DATABASE_URL, or run `lmstrix db upgrade` to see the full error",
        url=mask_url_password(url),
    )
