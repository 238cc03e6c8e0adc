"""The job rows on SQLite and PostgreSQL: claim by policy, leases, idempotent finish, cancel,
retry, prune, reaper, unknown ids."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update

from lmstrix.api.exceptions import JobNotFound, ValidationError
from lmstrix.db import JobStatus, utcnow, write_session
from lmstrix.db.tables import WorkerRow
from lmstrix.domain.enums import JobKind, WorkerMode
from lmstrix.domain.errors import ErrorPayload
from lmstrix.domain.heartbeats import WORKER_LIVE_WITHIN
from lmstrix.domain.requests import inference_request
from lmstrix.domain.scheduler import (
    PRIORITY_CONTEXT_TEST,
    PRIORITY_INTERACTIVE,
    HostState,
    SchedulerPolicy,
)
from lmstrix.jobs.reaper import reap
from lmstrix.jobs.store import ClaimedJob, JobStore
from lmstrix.jobs.workers import WorkerInfo, WorkerRegistry

POLICY = SchedulerPolicy(max_wait=300, max_run=100)


def url_of(host: str) -> str:
    """Each test host its own server (a host is its URL): h1 on port 1, h2 on port 2..."""
    return f"http://127.0.0.1:{host.removeprefix('h')}"


def submit(store: JobStore, model: str, host: str = "h1", priority: int = 0) -> str:
    return store.submit(
        host=host,
        model=model,
        request={"prompt": f"hi {model}"},
        host_url=url_of(host),
        priority=priority,
    )


def claim(
    store: JobStore, state: HostState | None = None, host: str = "h1", lease: float = 30
) -> ClaimedJob | None:
    return store.claim_next(host, "w1", state or HostState(), lease_seconds=lease, policy=POLICY)


def test_submit_then_get(database_url: str) -> None:
    store = JobStore(database_url)
    jid = submit(store, "m-a")
    job = store.get(jid)
    assert job.status == "queued" and job.model == "m-a" and job.host == "h1"
    assert job.request == {"prompt": "hi m-a"}
    assert store.status(jid) == "queued"


def test_unknown_job_id(database_url: str) -> None:
    store = JobStore(database_url)
    with pytest.raises(JobNotFound):
        store.get("not-a-uuid")
    with pytest.raises(JobNotFound):
        store.get("00000000-0000-0000-0000-000000000000")
    with pytest.raises(JobNotFound):
        store.cancel("00000000-0000-0000-0000-000000000000")


def test_claim_prefers_loaded_model_and_only_once(database_url: str) -> None:
    store = JobStore(database_url)
    a = submit(store, "A")
    b = submit(store, "B")
    got = claim(store, HostState("B", 1))
    assert got is not None and str(got.id) == b and got.attempt == 1
    assert store.get(b).status == "running"
    got2 = claim(store, HostState("B", 2))
    assert got2 is not None and str(got2.id) == a
    assert claim(store) is None


def test_concurrent_claims_never_share_a_job(database_url: str) -> None:
    store = JobStore(database_url)
    ids = {submit(store, "A") for _ in range(30)}
    won: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        s = JobStore(database_url)
        while job := s.claim_next("h1", "w", HostState(), lease_seconds=30, policy=POLICY):
            with lock:
                won.append(str(job.id))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == sorted(ids)


def test_finish_is_idempotent_and_attempt_bound(database_url: str) -> None:
    store = JobStore(database_url)
    jid = submit(store, "A")
    job = claim(store)
    assert job is not None
    assert store.finish(job, {"response": "x"}) is True
    assert store.finish(job, {"response": "y"}) is False
    view = store.get(jid)
    assert view.status == "succeeded" and view.result == {"response": "x"}


def test_cancel_queued_and_running(database_url: str) -> None:
    store = JobStore(database_url)
    q = submit(store, "A")
    assert store.cancel(q).status == "cancelled"
    r = submit(store, "A")
    job = claim(store)
    assert job is not None and str(job.id) == r
    view = store.cancel(r)
    assert view.status == "running" and view.cancel_requested_at is not None
    assert store.renew_lease(job, 30) is True  # tells the worker to stop
    assert store.mark_cancelled(job) is True
    assert store.get(r).status == "cancelled"


def test_release_hands_a_claim_back_without_counting_it(database_url: str) -> None:
    store = JobStore(database_url)
    older, newer = submit(store, "A"), submit(store, "A")
    job = claim(store)
    assert job is not None and str(job.id) == older and job.attempt == 1
    assert store.release(job) is True
    view = store.get(older)
    assert (view.status, view.attempts, view.worker_id, view.lease_until, view.started_at) == (
        "queued",
        0,
        None,
        None,
        None,
    )
    assert store.release(job) is False  # no longer this attempt's job: nothing changes
    again = claim(store)
    assert again is not None and str(again.id) == older  # its place in the queue is kept
    assert again.attempt == 1 and store.get(newer).status == "queued"


def test_fail_queued_ends_one_hosts_queue_in_one_go(database_url: str) -> None:
    store = JobStore(database_url)
    queued = [submit(store, "A"), submit(store, "B")]
    running = submit(store, "A")
    other_host = submit(store, "A", host="h2")
    # the oldest two are claimed and one of them finished; the third stays queued
    first = claim(store)
    assert first is not None and store.finish(first, {"ok": 1})
    job = claim(store)
    assert job is not None
    ended = store.fail_queued("h1", ErrorPayload("HostDownError", "down", {"host_url": "u"}))
    left = [j for j in [*queued, running] if j not in (str(first.id), str(job.id))]
    assert sorted(v.id for v in ended) == sorted(left) and len(left) == 1
    (view,) = ended
    assert view.status == "failed" and view.error_type == "HostDownError"
    assert view.error_message == "down" and view.finished_at is not None
    assert view.failure == ErrorPayload("HostDownError", "down", {"host_url": "u"})
    assert store.get(str(job.id)).status == "running"
    assert store.get(other_host).status == "queued"
    assert store.fail_queued("h1", ErrorPayload("HostDownError", "down")) == []


def test_reaper_requeues_expired_lease_then_fails_after_max_attempts(database_url: str) -> None:
    store = JobStore(database_url)
    jid = store.submit(
        host="h1", model="A", request={"prompt": "x"}, host_url="http://h:1", max_attempts=2
    )
    rung: list[str] = []

    class Bell:
        def ring(self, host: str) -> None:
            rung.append(host)

    job = claim(store, lease=-1)  # born expired: no waiting
    assert job is not None
    reaped = reap(store, Bell())
    assert [(r.id, r.requeued) for r in reaped] == [(jid, True)]
    assert store.get(jid).status == "queued" and rung == ["h1"]
    assert store.finish(job, {"late": True}) is False  # the dead attempt cannot finish it
    job2 = claim(store, lease=-1)
    assert job2 is not None and job2.attempt == 2
    reaped = reap(store, Bell())
    assert [(r.id, r.requeued) for r in reaped] == [(jid, False)]
    view = store.get(jid)
    assert view.status == "failed" and view.error_type == "worker_lost"


def test_live_lease_is_not_reaped(database_url: str) -> None:
    store = JobStore(database_url)
    submit(store, "A")
    job = claim(store, lease=30)
    assert job is not None
    assert reap(store, None) == []
    assert store.renew_lease(job, 30) is False


def backdate_worker(database_url: str, worker_id: str, seconds: float) -> None:
    with write_session(database_url) as s:
        s.execute(
            update(WorkerRow)
            .where(WorkerRow.worker_id == worker_id)
            .values(seen_at=utcnow() - timedelta(seconds=seconds))
        )


def test_a_job_whose_worker_went_silent_is_requeued_long_before_its_lease_ends(
    database_url: str,
) -> None:
    store = JobStore(database_url)
    registry = WorkerRegistry(database_url)
    silent = WorkerInfo("w1", "h1", WorkerMode.DISTRIBUTED, "box", 1)
    registry.register(silent)
    registry.register(WorkerInfo("w2", "h2", WorkerMode.DISTRIBUTED, "box", 2))
    jid, other = submit(store, "A"), submit(store, "B", host="h2")
    job = claim(store, lease=300)
    job2 = store.claim_next("h2", "w2", HostState(), lease_seconds=300, policy=POLICY)
    assert job is not None and job2 is not None and str(job2.id) == other
    assert reap(store, None) == []  # both workers beat just now
    backdate_worker(database_url, "w1", WORKER_LIVE_WITHIN + 1)
    reaped = reap(store, None)
    assert [(r.id, r.requeued, r.noticed_by) for r in reaped] == [(jid, True, "heartbeat")]
    assert store.get(jid).status == "queued" and store.get(other).status == "running"
    assert store.renew_lease(job, 300) is True  # the silent worker, if it wakes, stops the job
    assert store.finish(job, {"late": True}) is False


def test_a_worker_without_a_row_keeps_its_job_until_the_lease_ends(database_url: str) -> None:
    # A worker that could not write its row yet (the database hiccupped) is not taken for dead.
    store = JobStore(database_url)
    submit(store, "A")
    job = claim(store, lease=300)
    assert job is not None
    WorkerRegistry(database_url).register(WorkerInfo("w9", "h1", WorkerMode.EMBEDDED, "box", 3))
    backdate_worker(database_url, "w9", 3600)
    assert reap(store, None) == []
    assert store.get(str(job.id)).status == "running"


def test_retry_and_prune(database_url: str) -> None:
    store = JobStore(database_url)
    jid = submit(store, "A")
    job = claim(store)
    assert job is not None
    store.fail(job, "InferenceError", "boom")
    with pytest.raises(ValidationError):
        store.retry(submit(store, "B"))  # queued jobs cannot be retried
    again = store.retry(jid)
    assert again.status == "queued" and again.error_type is None and again.attempts == 0
    job = claim(store)
    assert job is not None and str(job.id) == jid
    store.finish(job, {"ok": True})
    assert store.prune(timedelta(hours=1)) == 0
    assert store.prune(timedelta(seconds=-1)) == 1
    with pytest.raises(JobNotFound):
        store.get(jid)


def test_list_and_queue_depths(database_url: str) -> None:
    store = JobStore(database_url)
    submit(store, "A", host="h1")
    submit(store, "A", host="h1")
    submit(store, "B", host="h2")
    assert store.queue_depths() == {"h1": 2, "h2": 1}
    assert len(store.list_jobs(host="h2")) == 1
    assert len(store.list_jobs(status=[JobStatus.QUEUED.value], model="A")) == 2


def test_request_validation_names_the_field() -> None:
    with pytest.raises(ValidationError) as err:
        inference_request(prompt="x", temperature=5)
    assert err.value.field == "temperature"
    with pytest.raises(ValidationError) as err:
        inference_request(prompt="")
    assert err.value.field == "prompt"


def submit_test(store: JobStore) -> str:
    return store.submit(
        host="h1",
        model="m-a",
        request={"declared": 8192},
        kind=JobKind.CONTEXT_TEST,
        host_url=url_of("h1"),
        priority=PRIORITY_CONTEXT_TEST,
    )


def test_a_context_test_holds_its_host(database_url: str) -> None:
    """Nothing starts on a host while a context test runs there, and a test starts only on a
    host where nothing runs: two workers serving one host by mistake cannot disturb a probe."""
    store = JobStore(database_url)
    first = submit_test(store)
    infer = submit(store, "m-a", priority=PRIORITY_INTERACTIVE)
    running = claim(store)  # interactive first
    assert running is not None and str(running.id) == infer
    assert claim(store) is None  # the test waits: something runs on the host
    store.finish(running, {"ok": True})
    testing = claim(store)
    assert testing is not None and str(testing.id) == first
    later = submit(store, "m-b", priority=PRIORITY_INTERACTIVE)
    other_host = submit(store, "m-b", host="h2")
    assert claim(store) is None  # the infer job waits for the test
    got = claim(store, host="h2")  # other hosts are not held
    assert got is not None and str(got.id) == other_host
    store.finish(testing, {"ok": True})
    after = claim(store)
    assert after is not None and str(after.id) == later


def test_a_context_test_with_an_expired_lease_holds_nothing(database_url: str) -> None:
    store = JobStore(database_url)
    submit_test(store)
    assert claim(store, lease=-1) is not None  # its worker died: the lease ran out
    infer = submit(store, "m-a")
    got = claim(store)
    assert got is not None and str(got.id) == infer


def test_a_host_nothing_was_queued_for_has_nothing_to_claim_or_fail(database_url: str) -> None:
    # A worker rings its own host at boot, before any job of that host exists.
    store = JobStore(database_url)
    assert claim(store, host="fresh") is None
    assert store.fail_queued("fresh", ErrorPayload("HostDownError", "down")) == []
    submit(store, "A", host="h1")  # the row appears with its first job
    assert claim(store, host="h1") is not None


def test_claims_a_worker_never_heard_of_are_handed_back(database_url: str) -> None:
    # A claim whose commit reached the database while its answer was lost (a restart).
    store = JobStore(database_url)
    lost, kept, others = submit(store, "A"), submit(store, "A"), submit(store, "A", host="h2")
    first, second = claim(store), claim(store)
    assert first is not None and second is not None
    assert store.claim_next("h2", "w2", HostState(), lease_seconds=30, policy=POLICY)
    assert [str(first.id), str(second.id)] == [lost, kept]  # the oldest first
    running = kept  # the worker runs this one; it never heard of the other claim
    assert store.release_lost_claims("w1", keep=[running]) == [lost]
    view = store.get(lost)
    assert (view.status, view.attempts, view.worker_id) == ("queued", 0, None)
    assert store.get(running).status == "running" and store.get(others).status == "running"
    assert store.release_lost_claims("w1", keep=[running]) == []
    again = claim(store)
    assert again is not None and str(again.id) == lost and again.attempt == 1
