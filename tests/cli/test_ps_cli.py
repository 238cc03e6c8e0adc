"""``lmstrix ps`` and ``lmstrix stats`` against the emulator: the live worker, the model it has
loaded and its context, the job it runs, the queue, and the last hour's outcomes, swaps, load
time and speed; tables within 80 columns, --json with the one timestamp format."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.configs import CliEnv, config_for
from helpers.formats import ISO_UTC
from helpers.waiting import wait_for

from lmstrix.cli import cli
from lmstrix.cli.ps import PS_HEADERS, STATS_HEADERS
from lmstrix.core.inference_manager import InferenceManager
from lmstrix.core.jobs import JobManager
from lmstrix.testing import LMStudioEmulator

MODEL = "llama-3.2-1b-instruct"
OTHER = "qwen/qwen3-4b"
LONG = " ".join(f"word{i}" for i in range(400))


def in_order(line: str, headers: tuple[str, ...]) -> bool:
    places = [line.find(h) for h in headers]
    return -1 not in places and places == sorted(places)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def manager(
    make_emulator: Callable[..., LMStudioEmulator],
    tmp_path: Path,
    cli_env: CliEnv,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[InferenceManager]:
    emu = make_emulator(clock="real", tokens_per_second=100.0, load_seconds=0.0)
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    cli_env(emu.url, db)
    monkeypatch.setenv("COLUMNS", "80")
    with InferenceManager(config=config_for(emu.url), database_url=db, timeout=120) as m:
        yield m


def test_stats_counts_the_last_hours_jobs_loads_and_swaps(manager: InferenceManager) -> None:
    manager.infer(MODEL, "count to 3")
    manager.infer(OTHER, "say hi")  # a swap: OTHER replaces MODEL
    manager.infer(OTHER, "say again")
    code, out, err = run("stats", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert ISO_UTC.match(data["taken_at"])
    (host,) = data["hosts"]
    assert host["host"] == "h1"
    assert (host["succeeded"], host["failed"], host["queue_depth"]) == (3, 0, 0)
    assert (host["loads"], host["swaps"]) == (2, 1)
    assert host["mean_load_seconds"] is not None and host["tokens_per_second"] > 0
    code, out, _ = run("stats")
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), out
    assert in_order(lines[0], STATS_HEADERS)
    assert lines[2].split()[:7] == ["h1", "0", "3", "0", "0", "2", "1"]


def test_ps_shows_the_worker_its_model_and_context_and_the_running_job(
    manager: InferenceManager,
) -> None:
    done = manager.infer(MODEL, "say hi")
    running = manager.submit(MODEL, f"repeat {LONG}", max_tokens=400)
    waiting = manager.submit(OTHER, "hi", start_worker=False)
    with JobManager() as jobs:
        wait_for(lambda: jobs.get_job(running.id).status == "running", what="the job running")
        wait_for(
            lambda: any(w["current_job"] == running.id for w in jobs.workers("h1")),
            what="the worker to report its job",
        )
        try:
            code, out, err = run("ps", "--json")
            assert code == 0, err
            (host,) = json.loads(out)["hosts"]
            assert host["current_job"] == running.id
            assert host["loaded_model"] == MODEL
            assert host["loaded_context"] == done.model_info["context_length"]
            assert host["queue_depth"] == 1 and host["oldest_wait"] >= 0
            (worker,) = host["workers"]
            assert worker["mode"] == "embedded" and ISO_UTC.match(worker["seen_at"])
            code, out, err = run("ps")
            lines = out.splitlines()
            assert all(len(line) <= 80 for line in lines), out
            assert in_order(lines[0], PS_HEADERS)
            row = lines[2]
            assert row.startswith("h1") and "1 e" in row
            assert str(host["loaded_context"]) in row and running.id[:8] in row
            code, out, _ = run("ps", "--wide")
            assert running.id in out and MODEL in out
        finally:
            jobs.cancel_job(running.id)
            jobs.cancel_job(waiting.id)


def test_a_host_without_a_live_worker_is_named_under_the_table(
    make_emulator: Callable[..., LMStudioEmulator], tmp_path: Path, cli_env: CliEnv
) -> None:
    emu = make_emulator()
    cli_env(emu.url, f"sqlite:///{tmp_path / 'cli.db'}")
    code, out, err = run("ps")
    assert code == 0
    assert out.splitlines()[2].split()[:2] == ["h1", "none"]
    assert "h1: no live worker; start one with `lmstrix worker --host h1`" in err
