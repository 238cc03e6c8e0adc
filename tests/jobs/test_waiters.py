"""The waiter heartbeat on SQLite and PostgreSQL: a job whose interactive caller went away is
cancelled by the claim, the reaper and the worker's checks, never run (again); a job nobody waits
on is never touched; owned waits beat and cancel their job when they end early."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from lmstrix.db import Job, JobStatus, utcnow, write_session
from lmstrix.domain.errors import InferenceTimeoutError
from lmstrix.domain.scheduler import HostState, SchedulerPolicy
from lmstrix.jobs.notify import LocalNotifier
from lmstrix.jobs.reaper import reap
from lmstrix.jobs.store import WAITER_GONE, ClaimedJob, JobStore
from lmstrix.jobs.wait import WaiterBeat, await_job, wait_for_job

POLICY = SchedulerPolicy(max_wait=300, max_run=100)
GRACE = 10.0


def submit(store: JobStore, *, waiter: bool, model: str = "A") -> str:
    return store.submit(
        host="h1",
        model=model,
        request={"prompt": "hi"},
        host_url="http://127.0.0.1:1",
        waiter=waiter,
    )


def claim(store: JobStore, lease: float = 30) -> ClaimedJob | None:
    return store.claim_next(
        "h1", "w1", HostState(), lease_seconds=lease, policy=POLICY, waiter_grace=GRACE
    )


def last_heard(store: JobStore, job_id: str, seconds_ago: float) -> None:
    """Make the job's caller last heard from ``seconds_ago`` (a caller that went quiet)."""
    with write_session(store.url) as s:
        s.execute(
            update(Job)
            .where(Job.id == uuid.UUID(job_id))
            .values(waiter_seen_at=utcnow() - timedelta(seconds=seconds_ago))
        )


def seen(store: JobStore, job_id: str) -> datetime:
    at = store.get(job_id).waiter_seen_at
    assert at is not None
    return at


def test_submit_marks_an_interactive_caller_and_touch_moves_it(database_url: str) -> None:
    store = JobStore(database_url)
    plain = submit(store, waiter=False)
    owned = submit(store, waiter=True)
    assert store.get(plain).waiter_seen_at is None
    first = seen(store, owned)
    assert abs((first - store.get(owned).created_at).total_seconds()) < 1
    last_heard(store, owned, 60)
    store.touch_waiter(owned)
    assert seen(store, owned) > utcnow() - timedelta(seconds=5)


def test_claim_cancels_queued_jobs_whose_caller_went_quiet(database_url: str) -> None:
    store = JobStore(database_url)
    gone = submit(store, waiter=True)
    live = submit(store, waiter=True)
    plain = submit(store, waiter=False)
    last_heard(store, gone, GRACE + 5)
    claimed = []
    while (job := claim(store)) is not None:
        claimed.append(str(job.id))
    assert claimed == [live, plain]
    view = store.get(gone)
    assert view.status == "cancelled" and view.attempts == 0
    assert view.error_type == "cancelled" and view.error_message == WAITER_GONE
    assert view.started_at is None and view.finished_at is not None


def test_reaper_cancels_an_expired_job_whose_caller_went_quiet(database_url: str) -> None:
    store = JobStore(database_url)
    gone = submit(store, waiter=True)
    job = claim(store, lease=-1)  # born expired: its worker "died"
    assert job is not None and str(job.id) == gone
    last_heard(store, gone, GRACE + 5)
    reaped = reap(store, None, waiter_grace=GRACE)
    assert [(r.id, r.requeued, r.cancelled) for r in reaped] == [(gone, False, True)]
    view = store.get(gone)
    assert view.status == "cancelled" and view.attempts == 1
    assert view.error_message == WAITER_GONE
    assert claim(store) is None  # never claimed again
    assert store.finish(job, {"late": True}) is False


def test_reaper_requeues_expired_jobs_whose_caller_is_there_or_that_have_none(
    database_url: str,
) -> None:
    store = JobStore(database_url)
    live = submit(store, waiter=True)
    plain = submit(store, waiter=False)
    for _ in range(2):
        assert claim(store, lease=-1) is not None
    reaped = reap(store, None, waiter_grace=GRACE)
    assert sorted((r.id, r.requeued, r.cancelled) for r in reaped) == sorted(
        [(live, True, False), (plain, True, False)]
    )
    assert store.get(live).status == store.get(plain).status == "queued"


def test_reaper_cancels_an_expired_job_that_was_being_cancelled(database_url: str) -> None:
    """The worker died (or its process exited) after the cancel flag was set: the job is over,
    not queued again for nobody."""
    store = JobStore(database_url)
    jid = submit(store, waiter=False)
    assert claim(store, lease=-1) is not None
    assert store.cancel(jid).status == "running"
    reaped = reap(store, None)
    assert [(r.id, r.cancelled) for r in reaped] == [(jid, True)]
    view = store.get(jid)
    assert view.status == "cancelled" and view.attempts == 1 and view.error_message is None


def test_the_workers_checks_stop_a_running_job_whose_caller_went_quiet(database_url: str) -> None:
    store = JobStore(database_url)
    jid = submit(store, waiter=True)
    job = claim(store)
    assert job is not None
    assert store.renew_lease(job, 30, waiter_grace=GRACE) is False
    assert store.cancel_requested(job, waiter_grace=GRACE) is False
    last_heard(store, jid, GRACE + 5)
    assert store.renew_lease(job, 30) is False  # without a grace the caller is not looked at
    assert store.cancel_requested(job, waiter_grace=GRACE) is True
    assert store.get(jid).cancel_requested_at is not None  # every later check sees a cancel
    assert store.cancel_requested(job) is True
    assert store.renew_lease(job, 30, waiter_grace=GRACE) is True


def test_renewing_the_lease_stops_a_running_job_whose_caller_went_quiet(database_url: str) -> None:
    store = JobStore(database_url)
    jid = submit(store, waiter=True)
    job = claim(store)
    assert job is not None
    last_heard(store, jid, GRACE + 5)
    assert store.renew_lease(job, 30, waiter_grace=GRACE) is True
    assert store.get(jid).cancel_requested_at is not None
    # a job nobody waits on runs on, whatever its age
    plain = submit(store, waiter=False)
    job2 = claim(store)
    assert job2 is not None and str(job2.id) == plain
    assert store.renew_lease(job2, 30, waiter_grace=GRACE) is False


def test_waiter_beat_is_rate_limited(database_url: str) -> None:
    store = JobStore(database_url)
    jid = submit(store, waiter=True)
    last_heard(store, jid, 60)
    quiet = seen(store, jid)
    slow = WaiterBeat(store, jid, interval=3600)
    slow.beat()
    assert not slow.due and seen(store, jid) == quiet  # not due yet: no write
    eager = WaiterBeat(store, jid, interval=0)
    assert eager.due
    eager.beat()
    assert seen(store, jid) > quiet


def test_waiter_beat_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "dir.db").mkdir()  # a database that cannot be opened
    beat = WaiterBeat(JobStore(f"sqlite:///{tmp_path / 'dir.db'}"), str(uuid.uuid4()), 0)
    with caplog.at_level(logging.WARNING, logger="lmstrix"):
        beat.beat()
        beat.beat()  # tried again at the next beat
    assert [r.levelname for r in caplog.records if "could not mark" in r.message] == [
        "WARNING",
        "WARNING",
    ]


def test_an_owned_wait_cancels_its_job_when_interrupted(database_url: str) -> None:
    store = JobStore(database_url)
    owned = submit(store, waiter=True)
    notifier = LocalNotifier()

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        wait_for_job(store, notifier, owned, 30, on_look=interrupt, owned=True)
    view = store.get(owned)
    assert view.status == "cancelled" and view.attempts == 0
    plain = submit(store, waiter=False)
    with pytest.raises(KeyboardInterrupt):
        wait_for_job(store, notifier, plain, 30, on_look=interrupt)
    assert store.get(plain).status == "queued"  # not owned: it goes on


def test_an_owned_running_job_gets_its_cancel_flag(database_url: str) -> None:
    store = JobStore(database_url)
    owned = submit(store, waiter=True)
    job = claim(store)
    assert job is not None

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        wait_for_job(store, LocalNotifier(), owned, 30, on_look=interrupt, owned=True)
    view = store.get(owned)
    assert view.status == "running" and view.cancel_requested_at is not None
    assert store.renew_lease(job, 30) is True  # the worker stops it at its next chunk


def test_a_cancelled_task_cancels_its_owned_job(database_url: str) -> None:
    store = JobStore(database_url)
    owned = submit(store, waiter=True)
    plain = submit(store, waiter=False)

    async def main() -> None:
        notifier = LocalNotifier()
        tasks = [
            asyncio.create_task(await_job(store, notifier, owned, 60, owned=True)),
            asyncio.create_task(await_job(store, notifier, plain, 60)),
        ]
        # One turn of the loop runs each task to its first wait (an in-process notifier needs
        # no read for the first look), so both are inside their waits; nothing will finish them.
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    assert store.get(owned).status == "cancelled"
    assert store.get(plain).status == "queued"


def test_an_owned_wait_beats_and_its_timeout_cancels(database_url: str) -> None:
    store = JobStore(database_url)
    owned = submit(store, waiter=True)
    submitted = seen(store, owned)
    with pytest.raises(InferenceTimeoutError) as err:
        wait_for_job(store, LocalNotifier(), owned, 3.5, owned=True, cancel_on_timeout=False)
    assert err.value.cancelled  # an owned job lives only while its caller waits
    view = store.get(owned)
    assert view.status == "cancelled"
    assert view.waiter_seen_at is not None and view.waiter_seen_at > submitted


def test_a_caller_that_beats_again_keeps_its_job(database_url: str) -> None:
    """Only silence counts: a caller heard from again within the grace gets its job run."""
    store = JobStore(database_url)
    jid = submit(store, waiter=True)
    last_heard(store, jid, GRACE + 5)
    WaiterBeat(store, jid, interval=0).beat()
    job = claim(store)
    assert job is not None and str(job.id) == jid
    assert store.get(jid).status == JobStatus.RUNNING.value


class _Bell:
    """A notifier that loses nothing but hands no row over (as Redis's does): the waiter must
    read the final row itself."""

    hands_over_rows = False

    def __init__(self) -> None:
        self.done = threading.Event()

    def wait_done(self, job_id: str, timeout: float) -> bool:
        return self.done.wait(timeout)

    def handed_over(self, job_id: str) -> None:
        return None

    def forget(self, job_id: str) -> None:
        pass


class _ReadCounter(JobStore):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.reads: list[str] = []

    def status(self, job_id: str | uuid.UUID) -> str:
        self.reads.append("status")
        return super().status(job_id)

    def get(self, job_id: str | uuid.UUID) -> Any:
        self.reads.append("get")
        return super().get(job_id)


def test_an_owned_wait_reads_the_row_only_once_it_is_told_the_job_is_done(
    database_url: str,
) -> None:
    """The caller has just queued its job: the first look reads nothing (the job cannot be done
    yet), and the row is read once, after the notification."""
    store = _ReadCounter(database_url)
    job_id = submit(store, waiter=True)
    bell = _Bell()

    def worker() -> None:
        job = claim(store)
        assert job is not None
        store.finish(job, {"response": "done"})
        bell.done.set()

    threading.Thread(target=worker, daemon=True).start()
    view = wait_for_job(store, bell, job_id, 60, owned=True)  # type: ignore[arg-type]
    assert view.status == "succeeded" and view.result == {"response": "done"}
    assert store.reads == ["get"]
