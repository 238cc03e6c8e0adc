"""Right after the database was away every worker's row looks silent: the reaper then leaves
running jobs to their leases for a few beats, so it never takes a live worker for dead."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from lmstrix.db import utcnow, write_session
from lmstrix.db.tables import WorkerRow
from lmstrix.domain.enums import WorkerMode
from lmstrix.domain.heartbeats import WORKER_LIVE_WITHIN
from lmstrix.domain.scheduler import HostState, SchedulerPolicy
from lmstrix.jobs.reaper import SilenceTrust, reap
from lmstrix.jobs.store import JobStore
from lmstrix.jobs.workers import WorkerInfo, WorkerRegistry


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_silence_counts_again_a_few_beats_after_an_outage() -> None:
    clock = FakeClock()
    trust = SilenceTrust(clock)
    assert trust.worker_silent_for() == WORKER_LIVE_WITHIN
    trust.failed()
    trust.succeeded()
    assert trust.worker_silent_for() is None
    clock.now += WORKER_LIVE_WITHIN - 0.1
    assert trust.worker_silent_for() is None
    clock.now += 0.2
    assert trust.worker_silent_for() == WORKER_LIVE_WITHIN
    trust.succeeded()  # a success without a failure before it changes nothing
    assert trust.worker_silent_for() == WORKER_LIVE_WITHIN


def test_a_reaper_back_from_an_outage_spares_a_silent_worker_until_it_could_beat(
    database_url: str,
) -> None:
    store = JobStore(database_url)
    WorkerRegistry(database_url).register(WorkerInfo("w1", "h1", WorkerMode.EMBEDDED, "box", 1))
    job_id = store.submit(host="h1", model="m", request={"prompt": "x"}, host_url="http://h:1")
    policy = SchedulerPolicy(max_wait=300, max_run=100)
    assert store.claim_next("h1", "w1", HostState(), lease_seconds=300, policy=policy)
    with write_session(database_url) as s:  # the worker's beats failed during the outage
        s.execute(update(WorkerRow).values(seen_at=utcnow() - timedelta(seconds=30)))
    clock = FakeClock()
    trust = SilenceTrust(clock)
    trust.failed()
    assert reap(store, None, trust=trust) == []
    assert store.get(job_id).status == "running"
    clock.now += WORKER_LIVE_WITHIN  # the worker had time to beat, and did not
    assert [r.id for r in reap(store, None, trust=trust)] == [job_id]
    assert store.get(job_id).status == "queued"
