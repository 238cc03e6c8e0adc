"""``lmstrix registry import/export`` and ``lmstrix db upgrade/current`` through click."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from lmstrix.cli.registry import db, registry
from lmstrix.core.models import ModelRegistry

UPSTREAM = {"llms": {"p/a.gguf": {"id": "a", "ctx_in": 4096, "tested_max_context": 2048}}}


def _run(url: str, group, args: list[str]):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    return runner.invoke(group, args, env={"LMSTRIX_DATABASE_URL": url}, catch_exceptions=False)


def test_import_then_export(database_url: str, tmp_path: Path) -> None:
    file = tmp_path / "lmstrix.json"
    file.write_text(json.dumps(UPSTREAM), encoding="utf-8")
    result = _run(database_url, registry, ["import", str(file), "--host", "local"])
    assert result.exit_code == 0, result.output
    assert "imported 1 models" in result.output and "1 added" in result.output
    again = _run(database_url, registry, ["import", str(file), "--host", "local", "--json"])
    assert json.loads(again.stdout) == {
        "file": str(file),
        "host": "local",
        "added": 0,
        "updated": 1,
        "total": 1,
    }
    exported = _run(database_url, registry, ["export", "--json"])
    assert exported.exit_code == 0
    models = json.loads(exported.stdout)
    assert [(m["id"], m["tested_context"]) for m in models] == [("a", 2048)]
    out = tmp_path / "out.json"
    assert _run(database_url, registry, ["export", "-o", str(out)]).exit_code == 0
    assert json.loads(out.read_text()) == models


def test_import_of_a_malformed_file_is_one_line_and_exit_2(
    database_url: str, tmp_path: Path
) -> None:
    file = tmp_path / "bad.json"
    file.write_text('{"llms": {\n"a": }', encoding="utf-8")
    result = _run(database_url, registry, ["import", str(file), "--host", "local"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "line 2" in result.stderr
    assert "Traceback" not in result.output
    assert ModelRegistry(database_url).list_models() == []


def test_db_current_and_upgrade_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    before = _run(url, db, ["current", "--json"])
    assert json.loads(before.stdout)["current"] == []
    assert json.loads(before.stdout)["at_head"] is False
    up = _run(url, db, ["upgrade"])
    assert up.exit_code == 0 and "(newest)" in up.output
    after = json.loads(_run(url, db, ["current", "--json"]).stdout)
    assert after["at_head"] is True and after["current"] == after["head"]


def test_db_upgrade_and_current_on_both_backends(empty_database_url: str) -> None:
    assert json.loads(_run(empty_database_url, db, ["upgrade", "--json"]).stdout)["at_head"]
    text = _run(empty_database_url, db, ["current"]).output
    assert "(newest)" in text


def test_corrupt_database_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "lmstrix.db"
    path.write_bytes(b"garbage" * 1000)
    result = _run(f"sqlite:///{path}", registry, ["export"])
    assert result.exit_code == 1
    assert "corrupt" in result.stderr and str(path) in result.stderr
    assert result.stdout == ""
