"""``LMStudioDefaults``, the Python side of ``lmstrix apply``: a real registry (SQLite and
PostgreSQL) and a temporary LM Studio home."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmstrix.core.lmstudio_defaults import LMStudioDefaults
from lmstrix.core.models import ModelRegistry
from lmstrix.domain.errors import ConfigurationError, ValidationError
from lmstrix.domain.lmstudio_defaults import CONTEXT_LENGTH_KEY

LOCAL = "http://127.0.0.1:1234"
PATH = "acme/Model-7B-GGUF/model-7b-Q4_K_M.gguf"


@pytest.fixture
def registry(database_url: str) -> ModelRegistry:
    reg = ModelRegistry(database_url)
    tested = {"tested_context": 12000, "test_status": "tested"}
    reg.add_model({"id": "acme/model-7b", "host": "h1", "host_url": LOCAL, "path": PATH, **tested})
    reg.add_model({"id": "acme/other-3b", "host": "h1", "host_url": LOCAL, "path": "acme/o.gguf"})
    reg.add_model(
        {"id": "acme/far-7b", "host": "far", "host_url": "http://192.0.2.7:1234", **tested}
    )
    return reg


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "lmstudio"
    home.mkdir()
    return home


def config_file(home: Path, path: str = PATH) -> Path:
    return home / ".internal" / "user-concrete-model-default-config" / f"{path}.json"


def test_apply_one_model_then_again(registry: ModelRegistry, home: Path) -> None:
    defaults = LMStudioDefaults(registry, home=home)
    done = defaults.apply("acme/model-7b", limit="90%")
    file = config_file(home)
    assert (done.action, done.context_length, done.previous, done.backup) == (
        "created",
        10800,
        None,
        None,
    )
    assert done.file == str(file) and done.tested_context == 12000
    fields = json.loads(file.read_text(encoding="utf-8"))["load"]["fields"]
    assert fields == [{"key": CONTEXT_LENGTH_KEY, "value": 10800}]
    again = defaults.apply("acme/model-7b", limit="90%")
    assert again.action == "unchanged" and again.backup is None
    assert not file.with_name(file.name + ".bak").exists()  # nothing rewritten, no backup
    full = defaults.apply("acme/model-7b")
    assert (full.action, full.previous, full.context_length) == ("updated", 10800, 12000)
    assert full.backup == str(file.with_name(file.name + ".bak"))
    assert json.loads(Path(full.backup).read_text())["load"]["fields"][0]["value"] == 10800
    # no temporary file left behind
    assert sorted(p.name for p in file.parent.iterdir()) == [file.name, file.name + ".bak"]


def test_apply_refuses_what_it_cannot_do(registry: ModelRegistry, home: Path) -> None:
    defaults = LMStudioDefaults(registry, home=home)
    with pytest.raises(ValidationError, match="never tested"):
        defaults.apply("acme/other-3b")
    with pytest.raises(ValidationError, match="not on this machine"):
        defaults.apply("acme/far-7b")
    with pytest.raises(ValidationError, match="--path"):
        defaults.apply("acme/far-7b", host="far")
    done = defaults.apply("acme/far-7b", host="far", path="acme/Far-7B-GGUF/far.gguf")
    assert done.file == str(config_file(home, "acme/Far-7B-GGUF/far.gguf"))
    assert not config_file(home).exists()


def test_apply_all_reports_skipped_and_failed_and_writes_the_rest(
    registry: ModelRegistry, home: Path
) -> None:
    registry.update_model("acme/other-3b", {"tested_context": 4096, "test_status": "tested"})
    # a second LM Studio on this machine with the same model: one file, written once
    twin = {"host": "h2", "host_url": "http://localhost:5678", "path": PATH, "tested_context": 9}
    registry.add_model({"id": "acme/model-7b", **twin})
    broken = config_file(home, "acme/o.gguf")
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json", encoding="utf-8")
    report = LMStudioDefaults(registry, home=home).apply_all(limit=8000)
    assert [(a.model_id, a.context_length) for a in report.applied] == [("acme/model-7b", 8000)]
    assert [(s.model_id, s.host) for s in report.skipped] == [
        ("acme/far-7b", "far"),
        ("acme/model-7b", "h2"),
    ]
    assert "same LM Studio file as h1/acme/model-7b" in report.skipped[1].reason
    assert [f.model_id for f in report.failed] == ["acme/other-3b"]
    assert str(broken) in report.failed[0].reason and "not valid JSON" in report.failed[0].reason
    assert broken.read_text(encoding="utf-8") == "{not json"
    assert report.to_dict()["home"] == str(home)


def test_a_file_that_cannot_be_read_or_written_is_reported_and_kept(
    registry: ModelRegistry, home: Path
) -> None:
    defaults = LMStudioDefaults(registry, home=home)
    file = config_file(home)
    file.mkdir(parents=True)  # a directory where the file should be
    with pytest.raises(ConfigurationError, match="cannot read"):
        defaults.apply("acme/model-7b")
    file.rmdir()
    file.parent.rmdir()
    file.parent.write_text("a file where a directory should be", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="cannot write"):
        defaults.apply("acme/model-7b")
    assert file.parent.read_text(encoding="utf-8") == "a file where a directory should be"


def test_the_home_comes_from_the_configuration(
    registry: ModelRegistry, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LMSTRIX_LMSTUDIO__HOME", str(home))
    assert LMStudioDefaults(registry).home == home
    monkeypatch.setenv("LMSTRIX_LMSTUDIO__HOME", str(home / "nope"))
    with pytest.raises(ConfigurationError, match="not a directory"):
        LMStudioDefaults(registry).apply("acme/model-7b")
