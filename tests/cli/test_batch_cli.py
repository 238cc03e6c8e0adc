"""``lmstrix batch`` and ``lmstrix submit batch``: embedded mode, the emulator over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.configs import CliEnv

from lmstrix.cli import cli
from lmstrix.testing import DEFAULT_MODELS, EmulatedModel, LMStudioEmulator

MODEL = "llama-3.2-1b-instruct"
SMALL = EmulatedModel(key="small-model", max_context_length=32768, loadable_limit=10_000)

Run = Callable[..., tuple[int, str, str]]


def line(custom_id: str, text: str, model: str = MODEL) -> str:
    return json.dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": 16,
            },
        }
    )


@pytest.fixture
def emulator(make_emulator: Callable[..., LMStudioEmulator]) -> LMStudioEmulator:
    return make_emulator([*DEFAULT_MODELS, SMALL])


@pytest.fixture
def run(emulator: LMStudioEmulator, database_url: str, cli_env: CliEnv) -> Run:
    cli_env(emulator.url, database_url)

    def invoke(*args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return invoke


@pytest.fixture
def batch_file(tmp_path: Path) -> Path:
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(line(f"q{i}", f"say answer {i}") for i in range(3)) + "\n")
    return path


def test_batch_wait_writes_results(run: Run, batch_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    code, stdout, stderr = run("batch", str(batch_file), "--wait", "--output", str(out))
    assert code == 0, stderr
    batch_id = stdout.strip()
    assert batch_id.startswith("batch_")
    assert "3/3 completed, 0 failed" in stderr and "wrote 3 result line(s)" in stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == ["q0", "q1", "q2"]
    contents = [x["response"]["body"]["choices"][0]["message"]["content"] for x in lines]
    assert contents == ["answer 0", "answer 1", "answer 2"]
    assert all(x["error"] is None and x["response"]["status_code"] == 200 for x in lines)

    code, stdout, _ = run("batch", "status", batch_id, "--json")
    status = json.loads(stdout)
    assert status["status"] == "completed" and status["request_counts"]["completed"] == 3
    code, stdout, _ = run("batch", "status", batch_id, "--wide")
    header, _, row = stdout.splitlines()
    assert header.split() == ["Batch", "Status", "Model", "Done", "Failed", "Total", "Age", "Took"]
    assert row.split()[:6] == [batch_id, "completed", MODEL, "3", "0", "3"]
    code, stdout, _ = run("batch", "results", batch_id)
    assert [json.loads(x) for x in stdout.splitlines()] == lines
    code, stdout, _ = run("batch", "list", "--wide")
    assert stdout.splitlines()[2].split()[:2] == [batch_id, "completed"]


def test_submit_batch_then_worker(run: Run, batch_file: Path, tmp_path: Path) -> None:
    code, stdout, stderr = run("submit", "batch", str(batch_file))
    assert code == 0, stderr
    batch_id = stdout.strip()
    assert "lmstrix worker --host" in stderr
    code, stdout, _ = run("batch", "results", batch_id)
    assert code == 0 and stdout == ""
    _, stdout, _ = run("batch", "status", batch_id, "--json")
    assert json.loads(stdout)["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
    code, _, stderr = run("worker", "--host", "h1", "--once")
    assert code == 0 and "ran 3 job" in stderr
    ok, errors = tmp_path / "ok.jsonl", tmp_path / "errors.jsonl"
    code, _, stderr = run("batch", "results", batch_id, "-o", str(ok), "--errors", str(errors))
    assert code == 0 and len(ok.read_text().splitlines()) == 3
    assert errors.read_text() == ""


def test_failures_go_to_the_errors_file_and_exit_1(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        "\n".join(
            [
                line("fine", "say fine", SMALL.key),
                line("too-big", "say " + "word " * 12_000, SMALL.key),
                line("also-fine", "say also", SMALL.key),
            ]
        )
    )
    ok, errors = tmp_path / "ok.jsonl", tmp_path / "errors.jsonl"
    code, _, stderr = run("batch", str(path), "--wait", "-o", str(ok), "--errors", str(errors))
    assert code == 1
    assert "error: batch completed: 1 of 3 requests failed" in stderr
    assert [json.loads(x)["custom_id"] for x in ok.read_text().splitlines()] == [
        "fine",
        "also-fine",
    ]
    (failed,) = [json.loads(x) for x in errors.read_text().splitlines()]
    assert failed["custom_id"] == "too-big" and failed["error"]["code"] == "ModelLoadError"
    assert failed["response"]["status_code"] == 500


def test_invalid_file_exits_2_and_queues_nothing(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line("a", "say a") + "\nnot json\n" + line("a", "say b") + "\n")
    code, stdout, stderr = run("batch", str(path), "--wait")
    assert code == 2 and stdout == ""
    assert stderr.startswith("error: invalid batch=")
    assert "2 problems" in stderr and "line 2: not valid JSON" in stderr
    assert "line 3: custom_id 'a' is used again (first on line 1)" in stderr
    code, _, stderr = run("batch", "list")
    assert "no batches" in stderr
    code, _, stderr = run("batch", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "no such file" in stderr
    code, _, stderr = run("batch", "create", str(path), "--output", "x.jsonl")
    assert code == 2 and "need --wait" in stderr


def test_file_nested_thousands_deep_is_one_line_and_exit_2(run: Run, tmp_path: Path) -> None:
    deep = '{"custom_id": "deep", "body": ' + "[" * 20_000 + "]" * 20_000 + "}"
    path = tmp_path / "deep.jsonl"
    path.write_text(line("a", "say a") + "\n" + deep + "\n", encoding="utf-8")
    code, stdout, stderr = run("batch", "create", str(path))
    assert (code, stdout) == (2, "")
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert stderr.startswith("error: invalid batch=") and "deep.jsonl': 1 problem" in stderr
    assert "line 2: not valid JSON: nested more than 64 levels deep" in stderr
    # the real command in its own process: the same line, no traceback
    proc = subprocess.run(
        [sys.executable, "-m", "lmstrix.cli", "batch", "create", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", stderr)
    code, _, stderr = run("batch", "list")
    assert "no batches" in stderr


def test_cancel_and_unknown_ids(run: Run, batch_file: Path) -> None:
    _, stdout, _ = run("submit", "batch", str(batch_file), "--json")
    obj = json.loads(stdout)
    assert obj["status"] == "in_progress" and obj["request_counts"]["total"] == 3
    code, stdout, _ = run("batch", "cancel", obj["id"])
    assert code == 0 and "cancelled" in stdout and "0/3 completed, 3 failed" in stdout
    code, stdout, _ = run("batch", "results", obj["id"])
    codes = [json.loads(x)["error"]["code"] for x in stdout.splitlines()]
    assert codes == ["batch_cancelled"] * 3
    for sub in ("status", "results", "cancel"):
        code, _, stderr = run("batch", sub, "batch_unknown")
        assert code == 10 and "no batch with id 'batch_unknown'" in stderr
