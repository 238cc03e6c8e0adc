"""Engine and session behaviour on real SQLite files and a real PostgreSQL server."""

from __future__ import annotations

import inspect
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, StatementError

from lmstrix.api.exceptions import ConfigurationError, RegistryError
from lmstrix.db import (
    Host,
    Job,
    ModelRow,
    dispose_engines,
    downgrade,
    ensure_schema,
    get_engine,
    normalize_url,
    read_session,
    revision_state,
    upgrade,
    write_session,
)
from lmstrix.db import engine as engine_mod
from lmstrix.loaders.model_loader import load_model_registry


def test_postgres_urls_use_psycopg3() -> None:
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"


def test_bad_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="not a valid SQLAlchemy URL"):
        normalize_url("no such thing://")


def test_one_engine_per_process_and_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    first = get_engine(url)
    assert get_engine(url) is first
    assert get_engine(f"sqlite:///{tmp_path / 'b.db'}") is not first
    # After a fork the pid differs: the child must not reuse the parent's pooled connections.
    monkeypatch.setattr(engine_mod.os, "getpid", lambda: -1)
    assert get_engine(url) is not first


def test_the_database_url_is_always_named() -> None:
    """Nothing in lmstrix.db picks a database by itself: a caller that forgot the URL must fail
    at once, not write to the user's real registry (the edges resolve it from the config)."""
    named = (get_engine, read_session, write_session, ensure_schema, revision_state, upgrade)
    for fn in (*named, downgrade):
        assert inspect.signature(fn).parameters["url"].default is inspect.Parameter.empty, fn


def test_database_url_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("LMSTRIX_DATABASE_URL", url)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("LMSTRIX_CONFIG", raising=False)
    assert load_model_registry().database_url == url


def test_sqlite_connection_settings(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'deep' / 'dir' / 'p.db'}"  # parent dirs are created
    with get_engine(url).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_sqlite_write_session_takes_the_write_lock_at_begin(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: a write session holds the lock before its first write, so a read that
    turns into a write can never fail with SQLITE_BUSY_SNAPSHOT."""
    path = tmp_path / "lock.db"
    url = f"sqlite:///{path}"
    other = sqlite3.connect(path, timeout=0.05, isolation_level=None)
    with write_session(url) as s:
        s.execute(select(Host)).all()  # only a read so far
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")  # released at commit
    other.execute("ROLLBACK")
    with read_session(url) as s:
        s.execute(select(Host)).all()
        other.execute("BEGIN IMMEDIATE")  # readers do not block writers (WAL)
        other.execute("ROLLBACK")
    other.close()


def test_timestamps_come_back_aware_utc(database_url: str) -> None:
    local = datetime(2024, 1, 15, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    with write_session(database_url) as s:
        s.add(Host(name="h", url="http://h:1234", last_seen_at=local))
    with read_session(database_url) as s:
        got = s.scalars(select(Host.last_seen_at)).one()
    assert got == local
    assert got is not None and got.tzinfo is not None and got.utcoffset() == timedelta(0)
    assert got.hour == 10


def test_naive_timestamps_are_refused(database_url: str) -> None:
    with pytest.raises(StatementError, match="naive datetime"), write_session(database_url) as s:
        s.add(Host(name="h", url="u", last_seen_at=datetime(2024, 1, 1)))
    with read_session(database_url) as s:
        assert s.scalars(select(Host)).all() == []  # the failed transaction left nothing


def test_json_none_is_sql_null_and_values_round_trip(database_url: str) -> None:
    with write_session(database_url) as s:
        h = Host(name="h", url="u")
        s.add(h)
        s.flush()
        s.add(ModelRow(host_id=h.id, key="a", capabilities=None, tags=["x", "ü"]))
    with read_session(database_url) as s:
        null_count = s.execute(text("SELECT COUNT(*) FROM models WHERE capabilities IS NULL"))
        assert null_count.scalar() == 1
        assert s.scalars(select(ModelRow.tags)).one() == ["x", "ü"]


def test_check_constraints_and_cascades(database_url: str) -> None:
    with write_session(database_url) as s:
        h = Host(name="h", url="u")
        s.add(h)
        s.flush()
        s.add(ModelRow(host_id=h.id, key="a"))
        s.add(Job(kind="inference", host_id=h.id, request={"prompt": "hi"}))
    with pytest.raises(IntegrityError), write_session(database_url) as s:
        s.add(Job(kind="inference", host_id=1, status="bogus"))
    with pytest.raises(IntegrityError), write_session(database_url) as s:
        s.add(ModelRow(host_id=999, key="orphan"))  # foreign keys are enforced on SQLite too
    with write_session(database_url) as s:
        s.execute(text("DELETE FROM hosts"))
    with read_session(database_url) as s:
        assert s.scalars(select(ModelRow)).all() == []
        assert s.scalars(select(Job)).all() == []


def test_job_defaults(database_url: str) -> None:
    with write_session(database_url) as s:
        h = Host(name="h", url="u")
        s.add(h)
        s.flush()
        job = Job(kind="context_test", host_id=h.id)
        s.add(job)
    with read_session(database_url) as s:
        got = s.get_one(Job, job.id)
        assert (got.status, got.priority, got.attempts, got.max_attempts) == ("queued", 0, 0, 3)
        assert got.created_at <= datetime.now(UTC)


def test_corrupt_sqlite_file_is_a_registry_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "lmstrix.db"
    garbage = b"this is not a database at all" * 100
    path.write_bytes(garbage)
    with pytest.raises(RegistryError) as info, read_session(f"sqlite:///{path}"):
        pass
    assert str(path) in str(info.value)
    assert "corrupt" in str(info.value)
    assert path.read_bytes() == garbage  # never replaced by an empty registry


def test_unopenable_sqlite_path_is_a_registry_error(tmp_path: Path) -> None:
    path = tmp_path / "a-directory.db"
    path.mkdir()
    with pytest.raises(RegistryError, match=r"a-directory\.db"), write_session(f"sqlite:///{path}"):
        pass


def test_the_engine_connects_with_the_real_password_and_shows_it_nowhere() -> None:
    """SQLAlchemy's str(URL) hides the password as ***: the engine must be built from the
    whole URL, or a PostgreSQL server with password auth would be sent '***'."""
    url = "postgresql://lmstrix:s3cret-pw@127.0.0.1:1/lmstrix"
    engine = get_engine(url)
    try:
        assert engine.url.password == "s3cret-pw"
        assert "s3cret-pw" not in repr(engine) and "s3cret-pw" not in str(engine.url)
    finally:
        dispose_engines()


def _drop_every_other_connection(url: str) -> int:
    """What a PostgreSQL restart does to a pool: every connection of the database is closed by
    the server. Returns how many were."""
    import psycopg

    dsn = normalize_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def test_a_pooled_connection_the_server_dropped_while_idle_is_replaced_unseen(
    shared_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmstrix.jobs.store import JobStore

    store = JobStore(shared_postgres_url)
    job = store.submit(host="h", model="m", request={"prompt": "hi"}, host_url="http://h:1")
    assert _drop_every_other_connection(shared_postgres_url) >= 1
    monkeypatch.setattr(engine_mod, "PING_IDLE_SECONDS", 0.0)  # every pooled one counts as idle
    assert store.status(job) == "queued"  # pinged, found dead, replaced: no error
    dispose_engines()


def test_a_connection_dropped_within_the_ping_interval_fails_once_as_unavailable(
    shared_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Busy connections are not pinged: one the server dropped moments after its last use fails
    its next statement (as DatabaseUnavailableError, never a driver error), and the pool has
    been renewed for the call after."""
    from lmstrix.domain.errors import DatabaseUnavailableError
    from lmstrix.jobs.store import JobStore

    monkeypatch.setattr(engine_mod, "PING_IDLE_SECONDS", 3600.0)
    store = JobStore(shared_postgres_url)
    job = store.submit(host="h", model="m", request={"prompt": "hi"}, host_url="http://h:1")
    assert _drop_every_other_connection(shared_postgres_url) >= 1
    with pytest.raises(DatabaseUnavailableError):
        store.status(job)
    assert store.status(job) == "queued"
    dispose_engines()
