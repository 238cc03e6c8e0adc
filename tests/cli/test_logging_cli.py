"""What real ``lmstrix`` processes log on stderr: alembic's and httpx's INFO lines stay quiet
unless ``-v`` asks for them (with lmstrix's own debug lines), in embedded mode and in the dramatiq
worker that ``lmstrix worker`` becomes; and a worker whose host refuses the token stops at once
with exit 5 and one line of advice, in both modes."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest
from helpers.cli_process import CliProcess
from helpers.configs import CliEnv
from helpers.dramatiq_worker import require_redis

from lmstrix.cli.errors import AUTH_REFUSED
from lmstrix.core.config import Config
from lmstrix.core.inference_manager import InferenceManager
from lmstrix.core.jobs import JobManager
from lmstrix.testing import LMStudioEmulator
from lmstrix.testing.pytest_plugin import EmulatorFactory

MODEL = "llama-3.2-1b-instruct"
INFER = ["infer", "say logged", "-m", MODEL, "--max-tokens", "8"]


def library_lines(lines: list[str]) -> dict[str, list[str]]:
    """The INFO lines of alembic and of httpx among ``lines``."""
    return {
        name: [line for line in lines if name in line and "INFO" in line]
        for name in ("alembic", "httpx")
    }


def finished(args: list[str]) -> CliProcess:
    with CliProcess(args) as proc:
        assert proc.finish() == 0, proc.stderr
    return proc


def test_alembic_and_httpx_are_quiet_unless_verbose(
    lmstudio_emulator: LMStudioEmulator, tmp_path: Path, cli_env: CliEnv
) -> None:
    # each run on a new database: migrating it is what alembic talks about most
    cli_env(lmstudio_emulator.url, f"sqlite:///{tmp_path / 'quiet.db'}")
    quiet = finished(INFER)
    assert quiet.stdout == ["logged"]
    assert library_lines(quiet.stderr) == {"alembic": [], "httpx": []}, quiet.stderr

    cli_env(lmstudio_emulator.url, f"sqlite:///{tmp_path / 'verbose.db'}")
    verbose = finished(["-v", *INFER])
    assert verbose.stdout == ["logged"]
    shown = library_lines(verbose.stderr)
    assert any("Running upgrade" in line for line in shown["alembic"]), verbose.stderr
    assert any("POST" in line and lmstudio_emulator.url in line for line in shown["httpx"])
    assert any("DEBUG lmstrix." in line for line in verbose.stderr), verbose.stderr


def test_q_and_v_together_is_a_usage_error() -> None:
    with CliProcess(["-v", "-q", "list"]) as proc:
        assert proc.finish() == 2
    assert any("contradict" in line for line in proc.stderr), proc.stderr


@pytest.mark.redis
@pytest.mark.slow
def test_the_dramatiq_worker_is_quiet_unless_verbose(
    lmstudio_emulator: LMStudioEmulator, tmp_path: Path, cli_env: CliEnv
) -> None:
    redis_url = require_redis()
    for flags in ([], ["-v"]):
        host = f"log{uuid.uuid4().hex[:8]}"
        cli_env(
            lmstudio_emulator.url,
            f"sqlite:///{tmp_path / f'worker{len(flags)}.db'}",
            LMSTRIX_HOSTS=f"{host}={lmstudio_emulator.url}",
            LMSTRIX_REDIS_URL=redis_url,
        )
        with (
            CliProcess([*flags, "worker", "--host", host]) as proc,
            JobManager() as jobs,
            InferenceManager(timeout=60, config=Config.load()) as manager,
        ):
            proc.wait_for_stderr("Worker process is ready")
            assert manager.infer(MODEL, "say served", max_tokens=8).response == "served"
            assert jobs.list_jobs(host=host)[0].status == "succeeded"
            proc.send(signal.SIGTERM)
            assert proc.finish() == 0, proc.stderr
        shown = library_lines(proc.stderr)
        if flags:
            assert shown["alembic"] and shown["httpx"], proc.stderr
            assert any("/api/v0/chat/completions" in line for line in shown["httpx"])
        else:
            assert shown == {"alembic": [], "httpx": []}, proc.stderr


@pytest.mark.parametrize("distributed", [False, True], ids=["embedded", "distributed"])
def test_a_worker_whose_host_refuses_the_token_stops_with_exit_5(
    distributed: bool, make_emulator: EmulatorFactory, tmp_path: Path, cli_env: CliEnv
) -> None:
    locked = make_emulator(require_auth=True, api_tokens=["sk-right"])
    more = {"LMSTRIX_REDIS_URL": require_redis()} if distributed else {}
    cli_env(locked.url, f"sqlite:///{tmp_path / 'auth.db'}", **more)
    for token, sent in ((None, "requires authentication"), ("sk-wrong", "token was rejected")):
        env = {"LM_API_TOKEN": token} if token else {}
        with CliProcess(["worker", "--host", "h1"], env=env) as proc:
            assert proc.finish() == AUTH_REFUSED, proc.stderr
        (line,) = proc.stderr
        assert line.startswith("error: ") and sent in line and locked.url in line
        assert "LM_API_TOKEN" in line and "host's token" in line
        assert "sk-wrong" not in line
    # the right token: it starts (and --once drains the empty queue and exits)
    with CliProcess(["worker", "--host", "h1", "--once"], env={"LM_API_TOKEN": "sk-right"}) as ok:
        assert ok.finish() == 0, ok.stderr
    assert any("ran 0 job(s)" in line for line in ok.stderr)
