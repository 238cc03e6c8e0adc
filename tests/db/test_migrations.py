"""Alembic migrations on SQLite and PostgreSQL: up, down, up again, no drift, first-use race."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

import lmstrix
from lmstrix.api.exceptions import RegistryError
from lmstrix.db import downgrade, ensure_schema, get_engine, revision_state, upgrade
from lmstrix.db.migrate import forget_migrated, head_revisions, script_location
from lmstrix.db.tables import metadata

TABLES = {"hosts", "models", "jobs", "batches", "context_test_probes", "workers", "files"}


def _tables(url: str) -> set[str]:
    return set(inspect(get_engine(url)).get_table_names()) - {"alembic_version"}


def test_single_head() -> None:
    assert len(ScriptDirectory(str(script_location())).get_heads()) == 1


def test_upgrade_from_empty(empty_database_url: str) -> None:
    assert _tables(empty_database_url) == set()
    state = upgrade(empty_database_url)
    assert state.at_head and state.current == head_revisions()
    assert _tables(empty_database_url) == TABLES


def test_downgrade_to_base_and_upgrade_again(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    state = downgrade(empty_database_url, "base")
    assert state.current == ()
    assert _tables(empty_database_url) == set()
    assert upgrade(empty_database_url).at_head
    assert _tables(empty_database_url) == TABLES


def test_upgrade_twice_is_a_no_op(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    assert upgrade(empty_database_url).at_head


def test_models_match_migrations(empty_database_url: str) -> None:
    """The autogenerate diff between the migrated schema and the ORM tables is empty."""
    upgrade(empty_database_url)
    with get_engine(empty_database_url).connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, metadata)
    assert diff == []


def test_ensure_schema_migrates_on_first_use(empty_database_url: str) -> None:
    forget_migrated()
    ensure_schema(empty_database_url)
    assert revision_state(empty_database_url).at_head


def test_database_from_a_newer_lmstrix_is_refused(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    with get_engine(empty_database_url).begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
    forget_migrated()
    with pytest.raises(RegistryError, match="newer lmstrix"):
        ensure_schema(empty_database_url)


_OPENER = textwrap.dedent(
    """
    import sys
    from lmstrix.core.models import ModelRegistry
    registry = ModelRegistry(sys.argv[1])
    registry.add_model({"id": "model-" + sys.argv[2], "host": "local", "host_url": "http://x"})
    print(len(registry.list_models()))
    """
)


@pytest.mark.slow
def test_processes_opening_a_fresh_database_at_once_all_succeed(empty_database_url: str) -> None:
    """Migrate-on-first-use under the lock: several processes race on an empty database."""
    n = 5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPENER, empty_database_url, str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    state = revision_state(empty_database_url)
    assert state.at_head and len(state.current) == 1
    with get_engine(empty_database_url).connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM alembic_version")).scalar() == 1
        assert conn.execute(text("SELECT COUNT(*) FROM models")).scalar() == n
        assert conn.execute(text("SELECT COUNT(*) FROM hosts")).scalar() == 1


def test_installed_wheel_layout_is_found_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed wheel has the scripts at lmstrix/_migrations (pyproject force-include)."""
    package = tmp_path / "site" / "lmstrix"
    shutil.copytree(script_location(), package / "_migrations")
    (package / "__init__.py").write_text("")
    monkeypatch.setattr(lmstrix, "__file__", str(package / "__init__.py"))
    assert script_location() == (package / "_migrations").resolve()
    url = f"sqlite:///{tmp_path / 'wheel.db'}"
    assert upgrade(url).at_head


def test_missing_scripts_are_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lmstrix, "__file__", str(tmp_path / "lmstrix" / "__init__.py"))
    with pytest.raises(RegistryError, match="reinstall lmstrix"):
        script_location()


def test_0003_keys_existing_hosts_by_their_url(empty_database_url: str) -> None:
    """Rows written before hosts had an identity get their normalized URL; a second row for the
    same server keeps NULL (shown as not configured) and loses nothing."""
    upgrade(empty_database_url, "0002")
    with get_engine(empty_database_url).begin() as conn:
        for name, url in (
            ("local", "http://localhost:1234"),
            ("studio", "http://127.0.0.1:1234/v1/"),
            ("gpu", "http://GPU-Box:1234"),
        ):
            conn.execute(
                text("INSERT INTO hosts (name, url, created_at) VALUES (:n, :u, :t)"),
                {"n": name, "u": url, "t": "2026-01-01 00:00:00"},
            )
        conn.execute(
            text(
                "INSERT INTO models (host_id, key, type, test_status, present, first_seen_at,"
                " updated_at) SELECT id, 'm', 'llm', 'untested', true, created_at, created_at"
                " FROM hosts WHERE name = 'studio'"
            )
        )
    assert upgrade(empty_database_url).at_head
    with get_engine(empty_database_url).connect() as conn:
        keys = dict(conn.execute(text("SELECT name, url_key FROM hosts")).all())
        models = conn.execute(text("SELECT count(*) FROM models")).scalar_one()
    assert keys == {
        "local": "http://localhost:1234",
        "studio": None,
        "gpu": "http://gpu-box:1234",
    }
    assert models == 1
    assert downgrade(empty_database_url, "0002").current == ("0002",)
