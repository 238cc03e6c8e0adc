"""The workers table on SQLite and PostgreSQL: register, beat, live, unregister, forget the
long dead; the presence a runner keeps fresh from its lease keeper."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from helpers.configs import config_for
from helpers.waiting import wait_for
from sqlalchemy import update

from lmstrix.core.inference_manager import InferenceManager
from lmstrix.core.jobs import JobManager
from lmstrix.db import utcnow, write_session
from lmstrix.db.tables import WorkerRow
from lmstrix.domain.enums import WorkerMode
from lmstrix.jobs import embedded
from lmstrix.jobs.workers import WorkerInfo, WorkerPresence, WorkerRegistry
from lmstrix.testing import LMStudioEmulator

MODEL = "llama-3.2-1b-instruct"


def info(worker_id: str, host: str = "h1") -> WorkerInfo:
    return WorkerInfo(worker_id, host, WorkerMode.DISTRIBUTED, "box", 4242)


def last_seen(url: str, worker_id: str, seconds_ago: float) -> None:
    with write_session(url) as s:
        s.execute(
            update(WorkerRow)
            .where(WorkerRow.worker_id == worker_id)
            .values(seen_at=utcnow() - timedelta(seconds=seconds_ago))
        )


def test_register_beat_live_unregister(database_url: str) -> None:
    registry = WorkerRegistry(database_url)
    registry.register(info("w1"))
    registry.register(info("w2", host="h2"))
    assert [w.worker_id for w in registry.live()] == ["w1", "w2"]
    assert registry.serves("h1") and registry.serves("h2") and not registry.serves("h3")
    assert registry.beat("w1", "job-1", "model-a") is True
    (w1,) = registry.live("h1")
    assert (w1.host, w1.hostname, w1.pid, w1.mode) == ("h1", "box", 4242, "distributed")
    assert (w1.current_job, w1.loaded_model) == ("job-1", "model-a")
    assert w1.seen_at >= w1.started_at
    last_seen(database_url, "w1", 60)
    assert registry.live("h1") == [] and not registry.serves("h1")
    assert [w.worker_id for w in registry.rows("h1")] == ["w1"]  # remembered, not live
    assert registry.live("h1", within=120) != []
    registry.unregister("w2")
    assert registry.beat("w2", None, None) is False  # gone: its presence registers again
    assert not registry.serves("h2")


def test_workers_quiet_for_a_day_are_forgotten_when_another_registers(database_url: str) -> None:
    registry = WorkerRegistry(database_url)
    registry.register(info("old"))
    registry.register(info("recent"))
    last_seen(database_url, "old", timedelta(days=1, minutes=1).total_seconds())
    last_seen(database_url, "recent", 3600)
    registry.register(info("new"))
    assert sorted(w.worker_id for w in registry.rows()) == ["new", "recent"]


def test_presence_registers_beats_at_its_interval_and_leaves(database_url: str) -> None:
    registry = WorkerRegistry(database_url)
    loaded: list[str | None] = [None]
    presence = WorkerPresence(registry, info("w1"), interval=2.0, loaded_model=lambda: loaded[0])
    presence.beat(None, now=100.0)
    assert [w.worker_id for w in registry.live()] == ["w1"]
    loaded[0] = "model-a"
    presence.beat("job-1", now=101.0)  # within the interval: no write
    assert registry.live()[0].current_job is None
    presence.beat("job-1", now=102.0)
    (w,) = registry.live()
    assert (w.current_job, w.loaded_model) == ("job-1", "model-a")
    registry.unregister("w1")  # someone deleted the row: the next beat puts it back
    presence.beat("job-2", now=104.0)
    assert [(w.worker_id, w.current_job) for w in registry.live()] == [("w1", "job-2")]
    presence.stop()
    assert registry.rows() == []


def test_presence_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "dir.db").mkdir()  # a database that cannot be opened
    presence = WorkerPresence(WorkerRegistry(f"sqlite:///{tmp_path / 'dir.db'}"), info("w1"))
    with caplog.at_level(logging.WARNING, logger="lmstrix"):
        presence.beat(None, now=1.0)
        presence.beat(None, now=10.0)
        presence.stop()
    assert sum("heartbeat failed" in r.message for r in caplog.records) == 2


def test_a_running_worker_shows_its_job_and_model_then_leaves(
    make_emulator: Callable[..., LMStudioEmulator], tmp_path: Path
) -> None:
    emu = make_emulator(clock="real", tokens_per_second=20.0, load_seconds=0.0)
    config = config_for(emu.url)
    db_url = f"sqlite:///{tmp_path / 'w.db'}"
    manager = InferenceManager(timeout=60, config=config, database_url=db_url)
    jobs = JobManager(config, database_url=db_url)
    job = manager.submit(MODEL, "count to 2000", max_tokens=2000)

    def running_it() -> bool:
        found = jobs.workers("h1")
        return len(found) == 1 and (found[0]["current_job"], found[0]["loaded_model"]) == (
            job.id,
            MODEL,
        )

    wait_for(running_it, what="the worker to report the job it runs")
    (worker,) = jobs.workers()
    assert worker["mode"] == "embedded" and worker["live"] is True and worker["hostname"]
    jobs.cancel_job(job.id)
    manager.wait(job.id)
    wait_for(lambda: jobs.workers("h1")[0]["current_job"] is None, what="the worker to be idle")
    embedded.stop_all()
    assert jobs.workers(include_stale=True) == []  # a clean stop leaves the table
    manager.close()
    jobs.close()
