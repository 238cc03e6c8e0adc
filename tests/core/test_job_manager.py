"""``JobManager``, the facade of the queue's housekeeping, and ``core.database``, in embedded mode
(SQLite file, the emulator over HTTP)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from lmstrix.core.database import schema_state, upgrade_schema
from lmstrix.core.inference_manager import InferenceManager
from lmstrix.core.jobs import JobManager
from lmstrix.domain.errors import ConfigurationError, JobNotFound, ValidationError
from lmstrix.jobs import embedded
from lmstrix.testing import LMStudioEmulator
from lmstrix.utils.config import Config

MODEL = "llama-3.2-1b-instruct"


@pytest.fixture
def config(
    lmstudio_emulator: LMStudioEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Config]:
    monkeypatch.setenv("LMSTRIX_HOSTS", f"h1={lmstudio_emulator.url}")
    monkeypatch.setenv("LMSTRIX_DATABASE_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("LMSTRIX_REDIS_URL", raising=False)
    monkeypatch.delenv("LMSTRIX_CONFIG", raising=False)
    yield Config.load()
    embedded.stop_all()


def queue(config: Config, prompt: str) -> str:
    with InferenceManager(config=config) as manager:
        return manager.submit(MODEL, prompt, max_tokens=8, start_worker=False).id


def test_list_run_once_get_prune(config: Config) -> None:
    job_id = queue(config, "say one")
    with JobManager(config) as manager:
        assert not manager.distributed
        assert [j.id for j in manager.list_jobs(status=["queued"])] == [job_id]
        started: list[str] = []
        assert manager.run_worker("h1", once=True, on_start=lambda h: started.append(h.url)) == 1
        assert started == [config.host("h1").url]
        assert manager.get_job(job_id).status == "succeeded"
        assert manager.wait_job(job_id, 1.0).result["response"] == "one"  # type: ignore[index]
        assert manager.prune_jobs(timedelta(0)) == 1
        with pytest.raises(JobNotFound):
            manager.get_job(job_id)


def test_cancel_retry_reap(config: Config) -> None:
    job_id = queue(config, "say later")
    with JobManager(config) as manager:
        assert manager.cancel_job(job_id).status == "cancelled"
        assert manager.retry_job(job_id).status == "queued"
        with pytest.raises(ValidationError):
            manager.retry_job(job_id)  # queued, not finished
        assert manager.reap() == []


def test_worker_argv_names_the_host_queue(config: Config) -> None:
    with JobManager(config) as manager:
        argv = manager.worker_argv("h1")
        assert argv[0] == sys.executable
        assert argv[-2:] == ["--queues", "lmstudio.h1"]
        with pytest.raises(ConfigurationError):
            manager.worker_argv("nowhere")


def test_schema_upgrade_and_state(config: Config) -> None:
    state = upgrade_schema(config=config)
    assert state.at_head and state.current
    assert schema_state(config=config) == state
