"""The interactive path in real ``lmstrix`` processes: Ctrl-C on ``infer`` exits 130 and its job
ends cancelled and never runs again, in embedded and in distributed mode; a killed caller's
queued job is cancelled by the first worker to come, while ``submit`` jobs run; the no-worker
notice is one stderr line; ``lmstrix workers`` lists who serves which host."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.cli_process import CliProcess
from helpers.configs import CliEnv, config_for
from helpers.dramatiq_worker import DramatiqWorkers, require_redis, worker_env
from helpers.waiting import wait_for

from lmstrix.cli import cli
from lmstrix.core.config import Config
from lmstrix.core.inference_manager import InferenceManager
from lmstrix.core.jobs import JobManager, JobView
from lmstrix.db import utcnow
from lmstrix.jobs.store import WAITER_GONE
from lmstrix.testing import LMStudioEmulator

MODEL = "llama-3.2-1b-instruct"
LONG = ["infer", "count to 2000", "-m", MODEL, "--max-tokens", "2000"]
LEASE, REAP, GRACE = 1.0, 0.5, 4.0
QUICK_QUEUE = {
    "LMSTRIX_QUEUE__LEASE_SECONDS": str(LEASE),
    "LMSTRIX_QUEUE__REAPER_INTERVAL": str(REAP),
    "LMSTRIX_QUEUE__WAITER_GRACE": str(GRACE),
    "LMSTRIX_QUEUE__LINGER_SECONDS": "1",
}


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def slow(make_emulator: Callable[..., LMStudioEmulator]) -> LMStudioEmulator:
    """Real time, 20 tokens/s: a 2000-token answer takes long enough to interrupt."""
    return make_emulator(clock="real", tokens_per_second=20.0, load_seconds=0.0)


def the_job(jobs: JobManager, host: str) -> JobView | None:
    found = jobs.list_jobs(host=host)
    return found[0] if len(found) == 1 else None


def streaming(jobs: JobManager, host: str, emu: LMStudioEmulator) -> Callable[[], bool]:
    """True once the job runs and its answer's pieces are going out."""

    def check() -> bool:
        job = the_job(jobs, host)
        running = job is not None and job.status == "running"
        # the answer is made (an inference counted) and its pieces are going out
        return running and emu.counters.inferences == 1 and emu.counters.in_flight == 1

    return check


def interrupt_infer(host: str, jobs: JobManager, emu: LMStudioEmulator) -> JobView:
    """Run ``lmstrix infer`` on a long answer, Ctrl-C it while it streams; the job it left."""
    with CliProcess(LONG) as proc:
        wait_for(streaming(jobs, host, emu), what="the job to stream")
        proc.send(signal.SIGINT)
        assert proc.finish() == 130, proc.stderr
    job = the_job(jobs, host)
    assert job is not None
    assert proc.stderr_with(f"interrupted; job {job.id} cancelled"), proc.stderr
    assert proc.stdout == []  # no half answer printed as if it were one
    return job


def wait_past_lease_grace_and_a_reaper_pass(job: JobView) -> None:
    """Long enough for a lease to expire, the caller's grace to run out and a reaper to look."""
    end = (job.finished_at or utcnow()) + timedelta(seconds=LEASE + GRACE + 2 * REAP)
    wait_for(lambda: utcnow() > end, what="the lease, the grace and a reaper pass")


def test_ctrl_c_on_infer_cancels_its_job_for_good_embedded(
    slow: LMStudioEmulator, tmp_path: Path, cli_env: CliEnv
) -> None:
    cli_env(slow.url, f"sqlite:///{tmp_path / 'cli.db'}", **QUICK_QUEUE)
    with JobManager() as jobs:
        job = interrupt_infer("h1", jobs, slow)
        # The process let its in-process worker stop the job at its next chunk before exiting.
        wait_for(lambda: jobs.get_job(job.id).status == "cancelled", what="the job to end")
        job = jobs.get_job(job.id)
        assert job.attempts == 1
        wait_past_lease_grace_and_a_reaper_pass(job)
        assert jobs.reap() == []
        assert jobs.run_worker("h1", once=True) == 0  # nothing to run: it is not queued again
        job = jobs.get_job(job.id)
        assert job.status == "cancelled" and job.attempts == 1
    slow.wait_for(lambda: slow.counters.in_flight == 0, timeout=30)
    assert slow.counters.inferences == 1


def test_workers_lists_the_hosts_workers(
    lmstudio_emulator: LMStudioEmulator, tmp_path: Path, cli_env: CliEnv
) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    cli_env(lmstudio_emulator.url, db)
    code, out, err = run("workers")
    assert code == 0 and out == ""
    assert "no live worker serves any host; start one with `lmstrix worker --host NAME`" in err
    manager = InferenceManager(config=config_for(lmstudio_emulator.url), database_url=db)
    result = manager.infer(MODEL, "say hi", max_tokens=8)  # starts this process's worker
    with JobManager() as jobs:
        wait_for(lambda: jobs.workers("h1"), what="the worker to register")
    code, out, err = run("workers", "--json")
    assert code == 0, err
    (worker,) = json.loads(out)
    assert worker["host"] == "h1" and worker["mode"] == "embedded" and worker["live"] is True
    assert worker["loaded_model"] in (None, result.model_info["id"])
    code, out, _ = run("workers")
    header, rule, line = out.splitlines()
    assert header.split()[:4] == ["Host", "Machine", "PID", "Mode"] and set(rule) == {"─"}
    assert line.split()[0] == "h1" and str(worker["pid"]) in line and "embedded" in line
    code, _, err = run("workers", "--host", "nope")
    assert code == 3 and "nope" in err
    manager.close()


# -- distributed: real Redis, PostgreSQL and dramatiq worker processes ------------------------


@pytest.fixture
def distributed(
    postgres_database_factory: Callable[[], str], tmp_path: Path, cli_env: CliEnv
) -> Iterator[Callable[[LMStudioEmulator], tuple[str, DramatiqWorkers]]]:
    """``setup(emu)``: a fresh host name on ``emu`` in a fresh PostgreSQL database with Redis,
    for this process and the CLI processes it starts; returns the host and the (not yet
    started) dramatiq workers."""
    redis_url = require_redis()
    db_url = postgres_database_factory()
    started: list[DramatiqWorkers] = []

    def setup(emu: LMStudioEmulator) -> tuple[str, DramatiqWorkers]:
        host = f"i{uuid.uuid4().hex[:8]}"
        hosts = f"{host}={emu.url}"
        cli_env(emu.url, db_url, LMSTRIX_HOSTS=hosts, LMSTRIX_REDIS_URL=redis_url, **QUICK_QUEUE)
        workers = DramatiqWorkers(tmp_path, worker_env(hosts, db_url, redis_url, tmp_path))
        started.append(workers)
        return host, workers

    yield setup
    for workers in started:
        workers.stop_all()


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
def test_ctrl_c_on_infer_cancels_its_job_for_good_distributed(
    slow: LMStudioEmulator,
    distributed: Callable[[LMStudioEmulator], tuple[str, DramatiqWorkers]],
) -> None:
    host, workers = distributed(slow)
    workers.start(host)
    with JobManager() as jobs:
        wait_for(lambda: jobs.workers(host), what="the worker to register")
        job = interrupt_infer(host, jobs, slow)
        # The worker stops it at its next chunk.
        wait_for(lambda: jobs.get_job(job.id).status == "cancelled", what="the job to stop")
        job = jobs.get_job(job.id)
        assert job.attempts == 1
        wait_past_lease_grace_and_a_reaper_pass(job)
        # The worker is alive and has claimed since: a later job runs, the cancelled one not.
        manager = InferenceManager(timeout=60, config=Config.load())
        later = manager.submit(MODEL, "say after it", max_tokens=8)
        assert manager.wait(later.id).response == "after it"
        manager.close()
        job = jobs.get_job(job.id)
        assert job.status == "cancelled" and job.attempts == 1
    slow.wait_for(lambda: slow.counters.in_flight == 0, timeout=30)
    assert slow.counters.inferences == 2


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
def test_a_killed_callers_queued_job_never_runs_while_submitted_ones_do(
    lmstudio_emulator: LMStudioEmulator,
    distributed: Callable[[LMStudioEmulator], tuple[str, DramatiqWorkers]],
) -> None:
    host, workers = distributed(lmstudio_emulator)
    hint = f"`lmstrix worker --host {host}`"
    code, out, err = run("submit", "infer", "say still wanted", "-m", MODEL, "--host", host)
    assert code == 0, err
    submitted = out.strip()
    with JobManager() as jobs, CliProcess(["infer", "say abandoned", "-m", MODEL]) as proc:
        # Nobody serves the host: the caller is told so, once, on one stderr line.
        (notice,) = proc.wait_for_stderr(hint)
        assert notice.startswith("warning: ") and f"no worker serves host {host}" in notice
        owned = next(j for j in jobs.list_jobs(host=host) if j.id != submitted)
        assert owned.status == "queued" and owned.waiter_seen_at is not None
        proc.send(signal.SIGKILL)
        assert proc.finish() == -signal.SIGKILL
        assert len(proc.stderr_with(hint)) == 1

        def caller_gone() -> bool:
            seen = jobs.get_job(owned.id).waiter_seen_at
            return seen is not None and utcnow() - seen > timedelta(seconds=GRACE)

        wait_for(caller_gone, what="the killed caller's grace to run out")
        assert jobs.get_job(submitted).waiter_seen_at is None  # nobody waits on it: no grace
        workers.start(host)
        wait_for(lambda: jobs.get_job(submitted).status == "succeeded", what="the submitted job")
        gone = jobs.get_job(owned.id)
        assert gone.status == "cancelled" and gone.attempts == 0
        assert gone.error_message == WAITER_GONE
        assert jobs.get_job(submitted).result["response"] == "still wanted"  # type: ignore[index]
    assert lmstudio_emulator.counters.inferences == 1
