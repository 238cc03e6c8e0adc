"""The queue's CLI commands: embedded mode on a SQLite file against the emulator over HTTP, and
`worker --once` with Redis configured."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import uuid
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from helpers.configs import CliEnv
from helpers.dramatiq_worker import require_redis

from lmstrix.cli.infer import infer
from lmstrix.cli.jobs import jobs, parse_duration
from lmstrix.cli.submit import submit
from lmstrix.cli.worker import worker
from lmstrix.testing import LMStudioEmulator

MODEL = "llama-3.2-1b-instruct"


@click.group()
@click.pass_context
def cli(ctx: click.Context) -> None:
    ctx.ensure_object(dict)


for _c in (infer, submit, jobs, worker):
    cli.add_command(_c)


@pytest.fixture
def env(lmstudio_emulator: LMStudioEmulator, tmp_path: Path, cli_env: CliEnv) -> dict[str, str]:
    return cli_env(lmstudio_emulator.url, f"sqlite:///{tmp_path / 'cli.db'}")


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=stdin, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_infer_reads_a_piped_prompt(env: dict[str, str]) -> None:
    code, out, err = run("infer", "-", "-m", MODEL, stdin="say piped words\n")
    assert code == 0, err
    assert out.strip() == "piped words"
    code, out, err = run("infer", "-m", MODEL, stdin="say no argument")
    assert code == 0 and out.strip() == "no argument", err
    code, out, err = run("submit", "infer", "-", "-m", MODEL, stdin="say queued")
    assert code == 0, err
    code, out, _ = run("jobs", "show", out.strip(), "--json")
    assert json.loads(out)["request"]["prompt"] == "say queued"


def test_infer_reads_the_prompt_from_a_file(env: dict[str, str], tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("say from a file", encoding="utf-8")
    code, out, err = run("infer", "--file", str(prompt), "-m", MODEL)
    assert code == 0 and out.strip() == "from a file", err
    code, _, err = run("infer", "say both", "--file", str(prompt), "-m", MODEL)
    assert code == 2 and "not both" in err
    code, _, err = run("infer", "--file", str(tmp_path / "missing.txt"), "-m", MODEL)
    assert code == 2 and "no such file" in err


def test_infer_refuses_an_empty_piped_prompt(
    env: dict[str, str], lmstudio_emulator: LMStudioEmulator
) -> None:
    code, _, err = run("infer", "-", "-m", MODEL, stdin="  \n")
    assert code == 2 and "prompt" in err and "empty" in err
    assert lmstudio_emulator.counters.inferences == 0


def test_infer_prints_response_and_stats(env: dict[str, str]) -> None:
    code, out, err = run("infer", "say hello cli", "-m", MODEL, "--max-tokens", "16")
    assert code == 0, err
    assert out.strip() == "hello cli"
    assert "prompt +" in err and "job " in err
    code, out, _ = run("infer", "say x", "-m", MODEL, "--json")
    assert code == 0 and json.loads(out)["succeeded"] is True


def test_submit_worker_show_wait_prune(env: dict[str, str]) -> None:
    code, out, err = run("submit", "infer", "say queued one", "-m", MODEL)
    assert code == 0, err
    job_id = out.strip()
    assert "lmstrix worker --host h1" in err
    code, out, _ = run("jobs", "list", "--status", "queued", "--json")
    assert [j["id"] for j in json.loads(out)] == [job_id]
    code, _, err = run("worker", "--host", "h1", "--once")
    assert code == 0 and "ran 1 job" in err
    code, out, _ = run("jobs", "show", job_id, "--json")
    assert json.loads(out)["status"] == "succeeded"
    code, out, _ = run("jobs", "wait", job_id)
    assert code == 0 and out.strip() == "queued one"
    code, out, err = run("jobs", "prune", "--older-than", "0s")  # no terminal, no --yes
    assert code == 2 and "--yes" in err and len(err.splitlines()) == 1
    code, out, _ = run("jobs", "show", job_id, "--json")
    assert json.loads(out)["status"] == "succeeded"  # still there
    code, out, _ = run("jobs", "prune", "--older-than", "0s", "--yes")
    assert code == 0 and "pruned 1" in out


def prune_at_a_terminal(answer: str) -> subprocess.CompletedProcess[str]:
    """``lmstrix jobs prune --older-than 0s`` in its own process with a terminal (a pty) on its
    stdin, answering its question with ``answer``. (click's CliRunner gives no terminal, so the
    command would refuse to ask; the refusal is tested above.)"""
    terminal, stdin = pty.openpty()
    try:
        os.write(terminal, answer.encode() + b"\n")
        return subprocess.run(
            [sys.executable, "-m", "lmstrix.cli", "jobs", "prune", "--older-than", "0s"],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(stdin)
        os.close(terminal)


def test_prune_asks_at_a_terminal_and_no_keeps_the_jobs(env: dict[str, str]) -> None:
    _, out, _ = run("submit", "infer", "say keep me", "-m", MODEL)
    job_id = out.strip()
    assert run("worker", "--host", "h1", "--once")[0] == 0
    no = prune_at_a_terminal("n")
    assert no.returncode == 1, no.stderr
    assert "delete every finished job that ended more than 0s ago?" in no.stderr
    assert "nothing was changed" in no.stderr and no.stdout == ""
    assert json.loads(run("jobs", "show", job_id, "--json")[1])["status"] == "succeeded"
    yes = prune_at_a_terminal("y")
    assert yes.returncode == 0 and "pruned 1 job(s)" in yes.stdout, yes.stderr
    code, _, err = run("jobs", "show", job_id)
    assert code == 10 and job_id in err


def test_cancel_and_retry(env: dict[str, str]) -> None:
    _, out, _ = run("submit", "infer", "say later", "-m", MODEL)
    job_id = out.strip()
    code, out, _ = run("jobs", "cancel", job_id)
    assert code == 0 and "cancelled" in out
    code, out, _ = run("jobs", "retry", job_id)
    assert code == 0 and "queued" in out
    code, _, err = run("worker", "--host", "h1", "--once")
    assert "ran 1 job" in err


def test_unknown_job_and_bad_values(env: dict[str, str]) -> None:
    code, _, err = run("jobs", "show", "00000000-0000-0000-0000-000000000000")
    assert code == 10 and err.startswith("error: no job with id")
    code, _, err = run("infer", "hi", "-m", MODEL, "--temperature", "9")
    assert code == 2 and "temperature" in err
    code, _, err = run("infer", "hi", "-m", "no-such-model-anywhere")
    assert code == 6
    code, _, err = run("worker", "--host", "nope")
    assert code == 3


def test_parse_duration() -> None:
    assert parse_duration("90").total_seconds() == 90
    assert parse_duration("10m").total_seconds() == 600
    assert parse_duration("7d").days == 7
    with pytest.raises(click.BadParameter):
        parse_duration("soon")


def test_jobs_wait_timeout_tells_the_jobs_real_state(env: dict[str, str]) -> None:
    _, out, _ = run("submit", "infer", "say waited for", "-m", MODEL)
    job_id = out.strip()
    code, _, err = run("jobs", "wait", job_id, "--timeout", "0.2")
    assert code == 9
    assert "still queued" in err and f"lmstrix jobs wait {job_id}" in err
    assert "cancelled" not in err
    _, out, _ = run("jobs", "show", job_id, "--json")
    assert json.loads(out)["status"] == "queued"
    code, _, err = run("jobs", "wait", job_id, "--timeout", "0.2", "--cancel-on-timeout")
    assert code == 9 and "was cancelled" in err
    _, out, _ = run("jobs", "show", job_id, "--json")
    assert json.loads(out)["status"] == "cancelled"


@pytest.mark.redis
def test_worker_once_drains_and_exits_in_distributed_mode(
    env: dict[str, str], lmstudio_emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With Redis configured, `worker --once` runs the queued jobs here and returns; it does
    not become a long-running dramatiq worker."""
    host = f"once{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("LMSTRIX_HOSTS", f"{host}={lmstudio_emulator.url}")
    monkeypatch.setenv("LMSTRIX_REDIS_URL", require_redis())
    _, out, err = run("submit", "infer", "say drained once", "-m", MODEL)
    job_id = out.strip()
    assert job_id, err
    code, _, err = run("worker", "--host", host, "--once")
    assert code == 0 and "ran 1 job(s)" in err
    _, out, _ = run("jobs", "show", job_id, "--json")
    assert json.loads(out)["status"] == "succeeded"
    assert lmstudio_emulator.counters.inferences == 1
