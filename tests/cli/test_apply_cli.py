"""``lmstrix apply`` through click: models scanned from the emulator over HTTP into a SQLite
registry, written into a temporary LM Studio home."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers.configs import CliEnv

from lmstrix.cli import cli
from lmstrix.cli.errors import SOME_FAILED
from lmstrix.core.models import ModelRegistry
from lmstrix.domain.lmstudio_defaults import CONTEXT_LENGTH_KEY
from lmstrix.testing import LMStudioEmulator

SMALL = "llama-3.2-1b-instruct"
SMALL_PATH = "lmstudio-community/Llama-3.2-1B-Instruct-GGUF/Llama-3.2-1B-Instruct-Q8_0.gguf"
GEMMA = "google/gemma-3-4b"
GEMMA_PATH = "lmstudio-community/gemma-3-4b-it-GGUF/gemma-3-4b-it-Q4_K_M.gguf"
QWEN = "qwen/qwen3-4b"  # never tested

# An existing file as LM Studio writes it, with settings of the user's own that must survive.
EXISTING: dict[str, Any] = {
    "preset": "@local:long-chats",
    "operation": {"fields": [{"key": "llm.prediction.temperature", "value": 0.3}]},
    "load": {
        "fields": [
            {"key": "llm.load.llama.flashAttention", "value": True},
            {"key": CONTEXT_LENGTH_KEY, "value": 4096},
            {"key": "llm.load.gpuOffload", "value": {"ratio": 0.5}},
        ]
    },
}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "lmstudio-home"
    home.mkdir()
    return home


@pytest.fixture
def registry(
    lmstudio_emulator: LMStudioEmulator, tmp_path: Path, cli_env: CliEnv, home: Path
) -> ModelRegistry:
    """The emulator's models, scanned by `lmstrix scan`; SMALL and GEMMA tested, with paths."""
    database_url = f"sqlite:///{tmp_path / 'cli.db'}"
    cli_env(lmstudio_emulator.url, database_url, LMSTRIX_LMSTUDIO__HOME=str(home))
    code, _, err = run("scan")
    assert code == 0, err
    reg = ModelRegistry(database_url)
    for model_id, tested, path in ((SMALL, 12000, SMALL_PATH), (GEMMA, 8192, GEMMA_PATH)):
        reg.update_model(
            model_id, {"tested_context": tested, "test_status": "tested", "path": path}
        )
    return reg


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def config_file(home: Path, path: str = SMALL_PATH) -> Path:
    return home / ".internal" / "user-concrete-model-default-config" / f"{path}.json"


def read(file: Path) -> Any:
    return json.loads(file.read_text(encoding="utf-8"))


def written_files(home: Path) -> list[Path]:
    return sorted(p for p in home.rglob("*") if p.is_file())


def test_a_new_file(registry: ModelRegistry, home: Path) -> None:
    code, out, err = run("apply", SMALL)
    assert code == 0, err
    file = config_file(home)
    assert read(file) == {
        "preset": "",
        "operation": {"fields": []},
        "load": {"fields": [{"key": CONTEXT_LENGTH_KEY, "value": 12000}]},
    }
    assert written_files(home) == [file]  # no backup: there was nothing to keep
    assert out.splitlines() == [
        f"created {SMALL}: {CONTEXT_LENGTH_KEY} 12000 (tested 12000)",
        f"  {file}",
    ]


def test_an_existing_file_keeps_its_other_fields_and_a_backup(
    registry: ModelRegistry, home: Path
) -> None:
    file = config_file(home)
    file.parent.mkdir(parents=True)
    original = json.dumps(EXISTING, indent=4)
    file.write_text(original, encoding="utf-8")
    code, out, err = run("apply", SMALL, "--json")
    assert code == 0, err
    expected = json.loads(original)
    expected["load"]["fields"][1]["value"] = 12000
    assert read(file) == expected
    assert list(read(file)) == list(EXISTING)  # keys in their order
    backup = file.with_name(file.name + ".bak")
    assert backup.read_text(encoding="utf-8") == original  # byte for byte
    report = json.loads(out)
    assert report["home"] == str(home) and report["dry_run"] is False
    assert report["applied"] == [
        {
            "model_id": SMALL,
            "host": "h1",
            "file": str(file),
            "tested_context": 12000,
            "context_length": 12000,
            "previous": 4096,
            "action": "updated",
            "backup": str(backup),
            "dry_run": False,
        }
    ]
    assert report["skipped"] == [] and report["failed"] == []
    # again: the file already says so; it is not rewritten and the backup stays the original
    code, out, err = run("apply", SMALL)
    assert code == 0 and out.startswith(f"unchanged {SMALL}: {CONTEXT_LENGTH_KEY} already 12000")
    assert backup.read_text(encoding="utf-8") == original


@pytest.mark.parametrize(
    ("limit", "written"),
    [("8000", 8000), ("50000", 12000), ("50%", 6000), ("100%", 12000), ("33%", 3960)],
)
def test_limit_in_tokens_or_percent(
    registry: ModelRegistry, home: Path, limit: str, written: int
) -> None:
    code, out, err = run("apply", SMALL, "--limit", limit)
    assert code == 0, err
    assert read(config_file(home))["load"]["fields"] == [
        {"key": CONTEXT_LENGTH_KEY, "value": written}
    ]
    assert f"(tested 12000, limit {limit})" in out


@pytest.mark.parametrize("limit", ["0", "-100", "0%", "101%", "12k", "1.5"])
def test_a_bad_limit_is_a_one_line_error_naming_the_option(
    registry: ModelRegistry, home: Path, limit: str
) -> None:
    code, out, err = run("apply", SMALL, "--limit", limit)
    assert code == 2 and out == ""
    assert err.startswith(f"error: invalid --limit={limit!r}") and err.count("\n") == 1
    assert written_files(home) == []


def test_dry_run_writes_nothing(registry: ModelRegistry, home: Path) -> None:
    code, out, err = run("apply", SMALL, "--dry-run")
    assert code == 0, err
    assert out.startswith(f"would create {SMALL}: {CONTEXT_LENGTH_KEY} 12000")
    assert "nothing was written" in err
    assert written_files(home) == []
    file = config_file(home)
    file.parent.mkdir(parents=True)
    file.write_text(json.dumps(EXISTING), encoding="utf-8")
    before = file.stat().st_mtime_ns, file.read_bytes()
    code, out, err = run("apply", "--all", "--dry-run", "--limit", "75%", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["dry_run"] is True
    assert [
        (a["model_id"], a["action"], a["previous"], a["context_length"]) for a in report["applied"]
    ] == [(GEMMA, "created", None, 6144), (SMALL, "updated", 4096, 9000)]
    assert all(a["backup"] is None and a["dry_run"] for a in report["applied"])
    assert (file.stat().st_mtime_ns, file.read_bytes()) == before
    assert written_files(home) == [file]


def test_an_untested_model_is_refused(registry: ModelRegistry, home: Path) -> None:
    code, out, err = run("apply", QWEN)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "never tested" in err and f"lmstrix test {QWEN}" in err
    assert written_files(home) == []


def test_a_malformed_file_is_named_and_left_untouched(registry: ModelRegistry, home: Path) -> None:
    file = config_file(home)
    file.parent.mkdir(parents=True)
    file.write_text('{"load": {"fields": [', encoding="utf-8")
    code, out, err = run("apply", SMALL)
    assert code == 3 and out == ""
    assert err.count("\n") == 1 and str(file) in err and "not valid JSON" in err
    assert file.read_text(encoding="utf-8") == '{"load": {"fields": ['
    file.write_text('{"load": {"fields": {}}}', encoding="utf-8")  # JSON, but not the shape
    code, _, err = run("apply", SMALL)
    assert code == 3 and str(file) in err and '"load.fields" is a JSON object' in err
    assert file.read_text(encoding="utf-8") == '{"load": {"fields": {}}}'
    assert written_files(home) == [file]


def test_all_applies_every_tested_model_and_reports_the_rest(
    registry: ModelRegistry, home: Path
) -> None:
    code, out, err = run("apply", "--all")
    assert code == 0, err
    assert read(config_file(home))["load"]["fields"][0]["value"] == 12000
    assert read(config_file(home, GEMMA_PATH))["load"]["fields"][0]["value"] == 8192
    skipped = [line for line in out.splitlines() if line.startswith("skipped ")]
    assert [line.split(":")[0] for line in skipped] == [
        f"skipped {QWEN} on h1",
        "skipped text-embedding-nomic-embed-text-v1.5 on h1",
    ]
    assert "never tested" in skipped[0]
    # one broken file: the others are still written, the broken one reported, exit 11
    broken = config_file(home, GEMMA_PATH)
    broken.write_text("not json at all", encoding="utf-8")
    code, out, err = run("apply", "--all", "--limit", "4096", "--json")
    assert code == SOME_FAILED
    report = json.loads(out)
    assert [a["model_id"] for a in report["applied"]] == [SMALL]
    assert [f["model_id"] for f in report["failed"]] == [GEMMA]
    assert err.startswith(f"error: {GEMMA} on h1: {broken} is not valid JSON")
    assert broken.read_text(encoding="utf-8") == "not json at all"
    assert read(config_file(home))["load"]["fields"][0]["value"] == 4096


def test_a_model_on_another_machine_or_without_a_path(registry: ModelRegistry, home: Path) -> None:
    registry.add_model(
        {
            "id": "acme/far-7b",
            "host": "studio",
            "host_url": "http://192.0.2.7:1234",
            "tested_context": 16384,
            "test_status": "tested",
            "path": "acme/Far-7B-GGUF/far-7b.gguf",
        }
    )
    code, _, err = run("apply", "acme/far-7b")
    assert code == 2 and "not on this machine" in err and "--host studio" in err
    code, _, err = run("apply", "acme/far-7b", "--host", "studio")
    assert code == 0, err
    assert config_file(home, "acme/Far-7B-GGUF/far-7b.gguf").exists()
    registry.update_model(QWEN, {"tested_context": 16384, "test_status": "tested"})
    code, _, err = run("apply", QWEN)
    assert code == 2 and "no LM Studio file path" in err and "--path" in err
    code, _, err = run("apply", QWEN, "--path", "../../etc/passwd")
    assert code == 2 and "invalid path=" in err
    code, _, err = run("apply", QWEN, "--path", "qwen/qwen3-4b")
    assert code == 0, err
    assert read(config_file(home, "qwen/qwen3-4b"))["load"]["fields"][0]["value"] == 16384


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["apply"], "give one MODEL or --all"),
        (["apply", SMALL, "--all"], "give one MODEL or --all"),
        (["apply", "--all", "--path", "a/b.gguf"], "use it with MODEL"),
        (["apply", "no-such-model"], "not found"),
    ],
)
def test_bad_arguments(registry: ModelRegistry, home: Path, args: list[str], message: str) -> None:
    code, out, err = run(*args)
    assert code in (2, 6) and message in err and err.count("\n") == 1 and out == ""
    assert written_files(home) == []


def test_the_home_is_found_under_the_users_home_or_reported(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch, isolated_user_dirs: Path
) -> None:
    monkeypatch.delenv("LMSTRIX_LMSTUDIO__HOME")
    code, _, err = run("apply", SMALL)
    assert code == 3 and "LM Studio's home directory was not found" in err
    usual = isolated_user_dirs / ".lmstudio"
    usual.mkdir()
    code, _, err = run("apply", SMALL)
    assert code == 0, err
    assert config_file(usual).exists()
