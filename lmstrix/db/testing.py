"""Throwaway databases for tests: fresh PostgreSQL databases on a server, truncation between tests.

Used by the test suite's fixtures; kept in the package so every test module (and other projects
embedding lmstrix) can get a real PostgreSQL database the same way.
"""

from __future__ import annotations

import os
import uuid

import psycopg
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import make_url

from lmstrix.db.engine import dispose_engines, get_engine
from lmstrix.db.tables import metadata

DEFAULT_TEST_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def test_postgres_url() -> str:
    """The server tests use: ``LMSTRIX_TEST_POSTGRES_URL`` or the local default."""
    return os.environ.get("LMSTRIX_TEST_POSTGRES_URL") or DEFAULT_TEST_POSTGRES_URL


test_postgres_url.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def _conninfo(url: str) -> str:
    u = make_url(url).set(drivername="postgresql")
    return u.render_as_string(hide_password=False)


def postgres_unavailable(url: str, timeout: float = 3.0) -> str | None:
    """None if the server answers, else why not (for a skip or failure message)."""
    try:
        with psycopg.connect(_conninfo(url), connect_timeout=int(timeout)) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL at {make_url(url).render_as_string()} does not answer: {exc}"
    return None


def create_database(server_url: str, prefix: str = "lmstrix_test") -> str:
    """Create an empty database on the server of ``server_url``; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_conninfo(server_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str, server_url: str | None = None) -> None:
    """Drop the database of ``url``, connecting through ``server_url``'s database (closing this
    process's pooled connections first; other sessions are forced off)."""
    dispose_engines()
    target = make_url(url)
    admin = server_url or test_postgres_url()
    with psycopg.connect(_conninfo(admin), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(str(target.database))
            )
        )


def truncate_all(url: str) -> None:
    """Empty every lmstrix table (fast reset between tests on a migrated database)."""
    engine = get_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(t.name for t in metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())
