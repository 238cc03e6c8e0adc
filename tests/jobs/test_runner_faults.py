"""The runner under faults, on SQLite and PostgreSQL with the emulator as the host: a job it
claimed always runs or goes back to the queue at once."""

from __future__ import annotations

import pytest
import redis

from lmstrix.api.client import LMStudioClient
from lmstrix.domain.queue_settings import QueueSettings
from lmstrix.jobs.notify import LocalNotifier
from lmstrix.jobs.runner import JobRunner
from lmstrix.jobs.store import JobStore, JobView
from lmstrix.testing import LMStudioEmulator

MODEL = "llama-3.2-1b-instruct"


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
    return JobRunner(
        store, "h", LMStudioClient(url, max_retries=0), notifier, settings=QueueSettings()
    )


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
