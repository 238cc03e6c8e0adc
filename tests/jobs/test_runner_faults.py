"""The runner under faults, with the emulator as the host: a job it claimed always runs or goes
back to the queue at once; a job is bounded by its timeouts and its deadline, its prompt is
never sent twice, and a host found down fails its queue together (one probe, not one timeout
per job)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers.waiting import wait_for

from lmstrix.api.client import LMStudioClient
from lmstrix.domain.errors import JobDeadlineError, LMStudioConnectionError
from lmstrix.domain.queue_settings import QueueSettings
from lmstrix.jobs.notify import LocalNotifier
from lmstrix.jobs.runner import JobRunner
from lmstrix.jobs.store import JobStore, JobView
from lmstrix.testing import LMStudioEmulator

MODEL = "llama-3.2-1b-instruct"
CHAT_PATH = "/api/v0/chat/completions"


class RedisDownNotifier(LocalNotifier):
    """Done-notifications fail as a Redis outage makes them fail, after the row's commit."""

    def __init__(self) -> None:
        super().__init__()
        self.tried: list[str] = []

    def notify_done(self, job_id: str, final: JobView | None = None) -> None:
        self.tried.append(job_id)
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


def submit(store: JobStore, url: str, prompt: str) -> str:
    return store.submit(
        host="h",
        model=MODEL,
        request={"prompt": prompt, "max_tokens": 8, "context_length": 4096},
        host_url=url,
    )


def runner_for(store: JobStore, url: str, notifier: LocalNotifier) -> JobRunner:
    """A runner of one job at a time: its end and the next claim share a commit."""
    settings = QueueSettings(max_parallel=1)
    return JobRunner(store, "h", LMStudioClient(url, max_retries=0), notifier, settings=settings)


def test_failed_done_notification_never_strands_the_next_job(
    database_url: str, lmstudio_emulator: LMStudioEmulator
) -> None:
    store = JobStore(database_url)
    url = lmstudio_emulator.url
    ids = [submit(store, url, "say one"), submit(store, url, "say two")]
    notifier = RedisDownNotifier()
    runner = runner_for(store, url, notifier)
    try:
        # The first job's end and the second's claim share a commit; the notification that
        # follows it fails, and the loop still runs the second job.
        assert runner.drain() == 2
    finally:
        runner.close()
    views = [store.get(i) for i in ids]
    assert [(v.status, v.result and v.result["response"]) for v in views] == [
        ("succeeded", "one"),
        ("succeeded", "two"),
    ]
    assert notifier.tried == ids  # both notifications were attempted, and both failed
    assert store.counts("h") == {"succeeded": 2}  # nothing left running or queued
    assert lmstudio_emulator.counters.inferences == 2


class Interrupted(BaseException):
    """Something that stops a worker between two jobs (a shutdown, Ctrl-C)."""


def test_job_claimed_but_not_run_goes_back_to_the_queue_at_once(
    database_url: str, lmstudio_emulator: LMStudioEmulator
) -> None:
    store = JobStore(database_url)
    url = lmstudio_emulator.url
    first, second = submit(store, url, "say one"), submit(store, url, "say two")
    runner = runner_for(store, url, LocalNotifier())
    looks = 0

    def stop_after_the_first_job() -> bool:
        nonlocal looks
        looks += 1
        if looks == 2:  # the second job is claimed by now, and has not run
            raise Interrupted
        return True

    try:
        with pytest.raises(Interrupted):
            runner.drain(stop_after_the_first_job)
        done, held = store.get(first), store.get(second)
        assert done.status == "succeeded"
        # handed back as it was before the claim: queued, no attempt counted, nobody's lease
        assert (held.status, held.attempts, held.worker_id) == ("queued", 0, None)
        assert held.lease_until is None and held.started_at is None
        assert lmstudio_emulator.counters.inferences == 1
        assert runner.drain() == 1  # the next drain (this worker or another) runs it
    finally:
        runner.close()
    again = store.get(second)
    assert (again.status, again.attempts) == ("succeeded", 1)


# -- timeouts that bound ----------------------------------------------------------------------

CHAT = "POST /api/v0/chat/completions"
PROBE = "GET /lmstudio-greeting"


def quick_runner(
    store: JobStore,
    url: str,
    *,
    timeout: float = 1.0,
    sleeps: list[float] | None = None,
    **queue: Any,
) -> JobRunner:
    """A runner whose host gets ``timeout`` seconds per request; sleeps between retries are
    recorded (and skipped) when ``sleeps`` is given. One job at a time unless ``max_parallel``
    says otherwise: these faults are counted per request sent."""
    queue.setdefault("retry_delays", (0.01, 0.01))
    queue.setdefault("max_parallel", 1)
    client = LMStudioClient(url, timeout=timeout, max_retries=0)
    settings = QueueSettings(**queue)
    if sleeps is None:
        return JobRunner(store, "h", client, LocalNotifier(), settings=settings)
    return JobRunner(store, "h", client, LocalNotifier(), settings=settings, sleep=sleeps.append)


def warmed_up(store: JobStore, emu: LMStudioEmulator, runner: JobRunner) -> None:
    """One job runs first, so the model is loaded and the next jobs go straight to the chat."""
    submit(store, emu.url, "say warm")
    assert runner.drain() == 1
    emu.reset_counters()


@pytest.fixture
def hung(lmstudio_emulator: LMStudioEmulator) -> Iterator[LMStudioEmulator]:
    """The emulator; a test turns ``hang_requests`` on, and it is released at the end."""
    yield lmstudio_emulator
    lmstudio_emulator.configure(hang_requests=False)
    lmstudio_emulator.release_hangs()


def test_hung_host_fails_one_job_per_timeout_and_its_queue_together(
    database_url: str, hung: LMStudioEmulator
) -> None:
    store = JobStore(database_url)
    runner = quick_runner(store, hung.url, timeout=1.0, host_down_grace=0)
    try:
        warmed_up(store, hung, runner)
        hung.configure(hang_requests=True)  # the host hangs: it takes requests, answers none
        first, *queued = [submit(store, hung.url, f"say {i}") for i in range(4)]
        assert runner.drain() == 1  # only the first job was sent
    finally:
        runner.close()
    counters = hung.counters.requests_by_endpoint
    assert counters[CHAT] == 1  # its prompt reached the host once, and only once
    assert counters[PROBE] == 1  # one probe, not one timeout per job
    failed = store.get(first)
    assert (failed.status, failed.error_type, failed.attempts) == (
        "failed",
        "LMStudioTimeoutError",
        1,
    )
    assert "1s (lmstudio.timeout)" in (failed.error_message or "")
    rest = [store.get(j) for j in queued]
    assert {(v.status, v.error_type, v.attempts) for v in rest} == {("failed", "HostDownError", 0)}
    assert all(v.started_at is None for v in rest)  # never sent anywhere
    assert len({v.finished_at for v in rest}) == 1  # ended in one go, not one after another
    failure = rest[0].failure
    assert failure is not None and failure.raised_to_caller
    assert f"job {first} failed with LMStudioTimeoutError" in failure.message


def test_host_back_within_the_grace_runs_the_held_jobs(
    tmp_path: Path, hung: LMStudioEmulator
) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'grace.db'}")
    runner = quick_runner(store, hung.url, timeout=0.5, host_down_grace=600)
    ran: list[int] = []
    try:
        warmed_up(store, hung, runner)
        hung.configure(hang_requests=True)
        first, *held = [submit(store, hung.url, f"say {i}") for i in range(4)]
        drain = threading.Thread(target=lambda: ran.append(runner.drain()))
        drain.start()
        # the first job timed out and the worker is probing while its queue waits
        wait_for(lambda: hung.counters.requests_by_endpoint[PROBE] >= 2, what="probes")
        assert [store.get(j).status for j in held] == ["queued"] * 3
        hung.configure(hang_requests=False)  # LM Studio recovers
        hung.release_hangs()
        drain.join(60)
    finally:
        runner.close()
    assert ran == [4]
    assert store.get(first).error_type == "LMStudioTimeoutError"
    views = [store.get(j) for j in held]
    assert [(v.status, v.attempts) for v in views] == [("succeeded", 1)] * 3
    assert hung.counters.requests_by_endpoint[CHAT] == 4  # each prompt sent once


def test_refused_host_retries_one_job_then_fails_its_queue_together(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'down.db'}")
    dead = "http://127.0.0.1:9"  # the discard port: nothing listens
    ids = [submit(store, dead, f"say {i}") for i in range(3)]
    sleeps: list[float] = []
    runner = quick_runner(store, dead, sleeps=sleeps, retry_delays=(1, 2), host_down_grace=0)
    try:
        assert runner.drain() == 1
    finally:
        runner.close()
    views = [store.get(j) for j in ids]
    assert sleeps == [1, 2]  # the retries of the first job; none for the others
    assert [v.error_type for v in views] == [
        "LMStudioConnectionError",
        "HostDownError",
        "HostDownError",
    ]
    assert views[1].failure is not None
    assert isinstance(views[1].failure.to_exception(), LMStudioConnectionError)


def test_server_error_with_a_text_body_fails_the_job_without_a_retry(
    tmp_path: Path, lmstudio_emulator: LMStudioEmulator
) -> None:
    emu = lmstudio_emulator
    store = JobStore(f"sqlite:///{tmp_path / 'e500.db'}")
    sleeps: list[float] = []
    runner = quick_runner(store, emu.url, sleeps=sleeps)
    try:
        warmed_up(store, emu, runner)
        emu.fail_next(500, "Internal Server Error", content_type="text/plain", path=CHAT_PATH)
        broken, fine = submit(store, emu.url, "say one"), submit(store, emu.url, "say two")
        assert runner.drain() == 2
    finally:
        runner.close()
    view = store.get(broken)
    assert (view.status, view.error_type) == ("failed", "LMStudioServerError")
    assert "HTTP 500: Internal Server Error" in (view.error_message or "")
    assert view.failure is not None and not view.failure.raised_to_caller  # a failed result
    assert sleeps == []
    # the host answered, so it is not down: the next job ran as usual, with no probe
    assert store.get(fine).status == "succeeded"
    assert emu.counters.requests_by_endpoint[CHAT] == 2
    assert emu.counters.requests_by_endpoint[PROBE] == 0


class FakeClock:
    """Monotonic time that only the runner's sleeps advance."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_retries_stop_before_the_job_deadline(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'deadline.db'}")
    dead = "http://127.0.0.1:9"
    jid = submit(store, dead, "say late")
    clock = FakeClock()
    settings = QueueSettings(retry_delays=(4, 4, 4, 4), job_deadline=10, host_down_grace=0)
    runner = JobRunner(
        store,
        "h",
        LMStudioClient(dead, timeout=1.0, max_retries=0),
        LocalNotifier(),
        settings=settings,
        sleep=clock.sleep,
        clock=clock,
    )
    try:
        runner.drain()
    finally:
        runner.close()
    # tries at 0, 4 and 8 s; a fourth, at 12 s, could run until 13 s: past the 10 s deadline
    assert clock.now == 8
    view = store.get(jid)
    assert (view.status, view.error_type) == ("failed", "JobDeadlineError")
    failure = view.failure
    assert failure is not None and failure.raised_to_caller
    exc = failure.to_exception()
    assert isinstance(exc, JobDeadlineError)
    assert (exc.tries, exc.elapsed_seconds, exc.deadline_seconds) == (3, 8, 10)
    assert "queue.job_deadline" in str(exc) and "connection refused" in exc.last_error
