"""`lmstrix infer --stream` and `lmstrix jobs follow`: pieces on stdout as the model writes them,
stats on stderr, Ctrl-C cancels the streamed job (exit 130) and it never runs again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.configs import CliEnv, config_for
from helpers.waiting import wait_for

from lmstrix.cli import cli
from lmstrix.core.inference_manager import InferenceManager
from lmstrix.jobs.store import JobStore
from lmstrix.testing import LMStudioEmulator

MODEL = "llama-3.2-1b-instruct"


@pytest.fixture
def slow_host() -> Iterator[LMStudioEmulator]:
    emu = LMStudioEmulator(clock="real", tokens_per_second=50.0, load_seconds=0.0).start()
    yield emu
    emu.stop()


def _start_infer(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "lmstrix.cli", "infer", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _first_output(proc: subprocess.Popen[bytes]) -> bytes:
    assert proc.stdout is not None
    first = proc.stdout.read1(65536)  # returns as soon as anything was written
    assert first, proc.stderr.read() if proc.stderr else ""
    return first


def test_infer_stream_prints_pieces_while_the_job_runs(
    slow_host: LMStudioEmulator, tmp_path: Path, cli_env: CliEnv
) -> None:
    db_url = f"sqlite:///{tmp_path / 'lmstrix.db'}"
    cli_env(slow_host.url, db_url)
    proc = _start_infer("count to 100", "-m", MODEL, "--max-tokens", "120", "--stream")
    first = _first_output(proc)
    store = JobStore(db_url)
    (job,) = store.list_jobs()
    assert job.status == "running"  # output came before the answer was done
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    text = (first + rest).decode()
    assert text.split() == [str(i) for i in range(1, 101)]
    assert f"job {job.id}" in err.decode() and "tok/s" in err.decode()
    assert store.get(job.id).result["response"] == text.rstrip("\n")


def test_ctrl_c_cancels_the_streamed_job_and_exits_130(
    slow_host: LMStudioEmulator, tmp_path: Path, cli_env: CliEnv
) -> None:
    db_url = f"sqlite:///{tmp_path / 'lmstrix.db'}"
    cli_env(slow_host.url, db_url, LMSTRIX_QUEUE__LEASE_SECONDS="1")
    proc = _start_infer("count to 2000", "-m", MODEL, "--max-tokens", "2100", "--stream")
    _first_output(proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err
    store = JobStore(db_url)
    (job,) = store.list_jobs()
    # a lease of 1 s has long expired when the row is read again below: nothing re-ran it
    wait_for(lambda: store.get(job.id).status == "cancelled", what="the job cancelled")
    manager = InferenceManager(config=config_for(slow_host), database_url=db_url)
    manager.service.store.reap_expired()
    assert store.get(job.id).status == "cancelled" and store.get(job.id).attempts == 1
    manager.close()


def test_jobs_follow_prints_a_running_job_and_its_stats(
    slow_host: LMStudioEmulator, tmp_path: Path, cli_env: CliEnv
) -> None:
    db_url = f"sqlite:///{tmp_path / 'lmstrix.db'}"
    cli_env(slow_host.url, db_url)
    manager = InferenceManager(config=config_for(slow_host), database_url=db_url)
    job = manager.submit(MODEL, "count to 30", max_tokens=40)  # run by this process's worker
    result = CliRunner().invoke(cli, ["jobs", "follow", job.id], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(i) for i in range(1, 31)]
    assert job.id in result.stderr and "succeeded" in result.stderr
    manager.close()


def test_jobs_follow_of_a_failed_job_exits_1_with_its_error(
    slow_host: LMStudioEmulator, tmp_path: Path, cli_env: CliEnv
) -> None:
    db_url = f"sqlite:///{tmp_path / 'lmstrix.db'}"
    cli_env(slow_host.url, db_url)
    slow_host.configure(truncate_streams=True)
    manager = InferenceManager(config=config_for(slow_host), database_url=db_url)
    job = manager.submit(MODEL, "count to 30", max_tokens=40)
    result = CliRunner().invoke(cli, ["jobs", "follow", job.id], catch_exceptions=False)
    assert result.exit_code == 1
    assert "error:" in result.stderr and "before completion" in result.stderr
    manager.close()


def test_jobs_follow_of_an_unknown_job_is_a_one_line_error(tmp_path: Path, cli_env: CliEnv) -> None:
    cli_env("http://127.0.0.1:1", f"sqlite:///{tmp_path / 'lmstrix.db'}")
    result = CliRunner().invoke(cli, ["jobs", "follow", "0" * 32], catch_exceptions=False)
    assert result.exit_code == 10
    assert result.stderr.count("\n") == 1 and "error:" in result.stderr
