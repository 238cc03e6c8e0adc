"""Each expected fault of the CLI is one line on stderr with its exit code, and changes nothing:
a busy or impossible emulator port, output files into missing directories (refused before a
batch runs), a bogus database URL, `test` without a model, a re-test that probes nothing, an
unknown host, repeated filters, and destructive commands without --yes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.configs import CliEnv

from lmstrix.cli import cli
from lmstrix.cli.errors import EXIT_CODES
from lmstrix.cli.test import CONFIRMED_HINT
from lmstrix.domain.errors import ConfigurationError, JobNotFound, ValidationError
from lmstrix.testing import LMStudioEmulator
from lmstrix.testing.backend import EmulatedModel

USAGE = EXIT_CODES[ValidationError]
CONFIG = EXIT_CODES[ConfigurationError]
TINY = EmulatedModel(key="acme/tiny", size_bytes=500_000_000, max_context_length=4096)
VISION = EmulatedModel(key="acme/eyes", max_context_length=4096, vision=True)
BOTH = EmulatedModel(key="acme/eyes-and-hands", max_context_length=4096, vision=True, tool_use=True)


@pytest.fixture
def emulator(make_emulator: Callable[..., LMStudioEmulator]) -> LMStudioEmulator:
    return make_emulator([TINY, VISION, BOTH])


@pytest.fixture
def env(emulator: LMStudioEmulator, tmp_path: Path, cli_env: CliEnv) -> dict[str, str]:
    return cli_env(emulator.url, f"sqlite:///{tmp_path / 'cli.db'}")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def one_error(err: str, *words: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], err


def lmstrix_process(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmstrix.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_emulator_on_a_busy_port_and_out_of_range(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = lmstrix_process("emulator", "--port", str(port))
    assert done.returncode == USAGE
    one_error(done.stderr, "--port", str(port), "in use")
    done = lmstrix_process("emulator", "--port", "70000")
    assert done.returncode == USAGE
    one_error(done.stderr, "--port", "65535")


def test_a_bogus_database_url(monkeypatch: pytest.MonkeyPatch, cli_env: CliEnv) -> None:
    cli_env("http://127.0.0.1:9", "bogus://nowhere/db")
    code, _, err = run("list")
    assert code == CONFIG
    one_error(err, "bogus://nowhere/db", "sqlite:///")
    monkeypatch.setenv("LMSTRIX_DATABASE_URL", "not a url")
    code, _, err = run("jobs", "list")
    assert code == CONFIG
    one_error(err, "not a url")


def batch_file(path: Path) -> Path:
    body = {"model": TINY.key, "messages": [{"role": "user", "content": "say hi"}]}
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}
    path.write_text(json.dumps(line) + "\n", encoding="utf-8")
    return path


def test_output_into_a_missing_directory_fails_before_the_batch_runs(
    env: dict[str, str], emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    source = batch_file(tmp_path / "in.jsonl")
    missing = tmp_path / "no" / "such" / "out.jsonl"
    code, out, err = run("batch", str(source), "--wait", "-o", str(missing))
    assert code == USAGE and out == ""
    one_error(err, "--output", "does not exist")
    assert emulator.counters.inferences == 0
    code, out, _ = run("batch", "list", "--json")
    assert json.loads(out) == []  # nothing was queued
    code, _, err = run("batch", str(source), "--wait", "--errors", str(missing))
    assert code == USAGE
    one_error(err, "--errors")


def test_registry_export_into_a_missing_directory(env: dict[str, str], tmp_path: Path) -> None:
    code, _, err = run("registry", "export", "-o", str(tmp_path / "gone" / "r.json"))
    assert code == USAGE
    one_error(err, "--output", "does not exist")
    code, _, err = run("registry", "export", "-o", str(tmp_path / "r.json"))
    assert code == 0, err
    assert isinstance(json.loads((tmp_path / "r.json").read_text()), list)


def test_test_without_a_model_names_what_to_give(env: dict[str, str]) -> None:
    code, _, err = run("test")
    assert code == USAGE
    one_error(err, "MODEL_ID", "--all")
    assert "None" not in err


def test_a_re_test_says_it_confirmed_the_size_and_points_at_reset(env: dict[str, str]) -> None:
    code, out, err = run("test", TINY.key, "--json")
    assert code == 0, err
    first = json.loads(out)
    assert first["test_successful"] is True and first["iterations"] > 0
    assert first["hint"] is None
    # A re-test checks the known size once more at its own load, and says that is all it did.
    code, out, err = run("test", TINY.key)
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    assert "as tested before; " + CONFIRMED_HINT in last, last
    again = json.loads(run("test", TINY.key, "--json")[1])
    assert again["hint"] == CONFIRMED_HINT
    assert again["optimal_context"] == first["optimal_context"]
    code, out, err = run("test", TINY.key, "--reset", "--json")
    assert code == 0, err
    reset = json.loads(out)
    assert reset["iterations"] > 0 and reset["hint"] is None


def test_an_unknown_host_is_an_error(env: dict[str, str]) -> None:
    assert run("scan")[0] == 0
    for args in (["list", "--host", "nope"], ["list", "--filter", "host=nope"]):
        code, out, err = run(*args)
        assert code == CONFIG, err
        one_error(err, "nope")
        assert out == ""
    code, _, err = run("infer", "say hi", "-m", TINY.key, "--host", "nope")
    assert code == CONFIG
    one_error(err, "nope")
    code, _, err = run("jobs", "list", "--host", "nope")
    assert code == CONFIG
    one_error(err, "nope")


def test_repeated_filters_all_apply(env: dict[str, str]) -> None:
    assert run("scan")[0] == 0
    code, out, err = run("list", "--json", "--filter", "capability=vision")
    assert code == 0, err
    assert {m["id"] for m in json.loads(out)} == {VISION.key, BOTH.key}
    args = ["--filter", "capability=vision", "--filter", "capability=tools"]
    code, out, err = run("list", "--json", *args)
    assert code == 0, err
    assert [m["id"] for m in json.loads(out)] == [BOTH.key]
    code, _, err = run("list", "--filter", "host=h1", "--filter", "host=h2")
    assert code == USAGE
    one_error(err, "host")


def test_job_id_prefixes(env: dict[str, str]) -> None:
    ids = []
    for _ in range(17):  # 17 ids: two of them begin with the same hex digit
        code, out, err = run("submit", "infer", "say hi", "-m", TINY.key)
        assert code == 0, err
        ids.append(out.strip())
    first = ids[0]
    unique = next(n for n in range(1, 37) if sum(i.startswith(first[:n]) for i in ids) == 1)
    code, out, err = run("jobs", "show", first[:unique], "--json")
    assert code == 0, err
    assert json.loads(out)["id"] == first
    code, out, err = run("jobs", "cancel", first[:unique])
    assert code == 0 and out.startswith(first), err
    digit = next(d for d in "0123456789abcdef" if sum(i.startswith(d) for i in ids) > 1)
    code, _, err = run("jobs", "show", digit)
    assert code == USAGE
    one_error(err, "matches several jobs")
    listed = [i for i in ids if i in err]
    assert len(listed) >= 2 and all(i.startswith(digit) for i in listed), err
    for unknown in ("zzz", "-", ""):
        code, _, err = run("jobs", "show", unknown)
        assert code == EXIT_CODES[JobNotFound], err
        one_error(err, "no job")


def test_destructive_commands_ask_or_take_yes(env: dict[str, str]) -> None:
    code, out, err = run("submit", "infer", "say hi", "-m", TINY.key)
    job_id = out.strip()
    assert run("jobs", "cancel", job_id)[0] == 0
    code, _, err = run("jobs", "prune", "--older-than", "0m")
    assert code == USAGE
    one_error(err, "--yes")
    assert run("jobs", "show", job_id)[0] == 0  # still there
    result = CliRunner().invoke(cli, ["jobs", "prune", "--older-than", "0m", "--yes"])
    assert result.exit_code == 0 and "pruned 1" in result.stdout
