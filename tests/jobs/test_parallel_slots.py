"""Parallel slots: a host's worker runs several jobs of the loaded model at once, against the
emulator over real HTTP (real clock, so requests really overlap). What is asserted are the
emulator's counters (requests at once per instance, loads at once, unloads under running
requests) and the order things happened in, never timings."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from helpers.slots import assert_host_discipline
from helpers.waiting import wait_for

from lmstrix.api.client import LMStudioClient
from lmstrix.db import JobKind
from lmstrix.domain.queue_settings import QueueSettings
from lmstrix.domain.scheduler import PRIORITY_BATCH, PRIORITY_INTERACTIVE
from lmstrix.jobs.notify import LocalNotifier
from lmstrix.jobs.runner import JobRunner
from lmstrix.jobs.store import JobStore
from lmstrix.testing import LMStudioEmulator

MODEL = "llama-3.2-1b-instruct"
OTHER = "qwen/qwen3-4b"
WORDS = "say " + " ".join(f"w{i}" for i in range(8))


@pytest.fixture
def emu() -> Any:
    # about 8 tokens at 20 tokens/s per request: long enough for requests to overlap
    e = LMStudioEmulator(clock="real", tokens_per_second=20.0, load_seconds=0.05).start()
    yield e
    e.stop()


def runner_for(store: JobStore, url: str, **queue: Any) -> JobRunner:
    client = LMStudioClient(url, max_retries=0)
    return JobRunner(store, "h", client, LocalNotifier(), settings=QueueSettings(**queue))


def submit(
    store: JobStore,
    url: str,
    prompt: str = WORDS,
    *,
    model: str = MODEL,
    priority: int = PRIORITY_INTERACTIVE,
    **request: Any,
) -> str:
    body = {"prompt": prompt, "max_tokens": 32, "context_length": 4096, **request}
    return store.submit(host="h", model=model, request=body, host_url=url, priority=priority)


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(f"sqlite:///{tmp_path / 'slots.db'}")


def drained(runner: JobRunner) -> int:
    try:
        return runner.drain()
    finally:
        runner.close()


def test_jobs_of_the_loaded_model_fill_the_host_s_slots(
    store: JobStore, emu: LMStudioEmulator
) -> None:
    ids = [submit(store, emu.url) for _ in range(12)]
    assert drained(runner_for(store, emu.url)) == 12
    assert all(store.get(j).status == "succeeded" for j in ids)
    counters = emu.counters
    assert counters.max_concurrency == {MODEL: 4}  # the emulator's 4 slots, all used
    assert counters.load_count == 1 and counters.inferences == 12
    assert_host_discipline(counters)


@pytest.mark.parametrize("cap", [1, 2])
def test_max_parallel_caps_the_slots(store: JobStore, emu: LMStudioEmulator, cap: int) -> None:
    for _ in range(6):
        submit(store, emu.url)
    assert drained(runner_for(store, emu.url, max_parallel=cap)) == 6
    assert emu.counters.max_concurrency == {MODEL: cap}


def test_the_instance_s_own_slot_count_is_used(store: JobStore, emu: LMStudioEmulator) -> None:
    emu.configure(default_parallel=2)  # the host loads with 2 slots
    for _ in range(6):
        submit(store, emu.url)
    assert drained(runner_for(store, emu.url)) == 6
    assert emu.counters.max_concurrency == {MODEL: 2}


def test_another_model_is_loaded_only_after_the_running_jobs_end(
    store: JobStore, emu: LMStudioEmulator
) -> None:
    order = [MODEL] * 4 + [OTHER] * 4 + [MODEL] * 4
    ids = [submit(store, emu.url, model=m) for m in order]
    assert drained(runner_for(store, emu.url)) == 12
    views = [store.get(j) for j in ids]
    assert all(v.status == "succeeded" for v in views)
    counters = emu.counters
    assert [r.model for r in counters.loads] == [MODEL, OTHER]  # grouped: two loads, not three
    assert_host_discipline(counters)
    # the swap came after every job of the first model had ended
    firsts = [v for v in views if v.model == MODEL]
    seconds = [v for v in views if v.model == OTHER]
    assert max(v.finished_at for v in firsts if v.finished_at) <= min(  # type: ignore[type-var]
        v.started_at for v in seconds if v.started_at
    )


def test_a_different_load_size_waits_for_the_running_jobs(
    store: JobStore, emu: LMStudioEmulator
) -> None:
    for ctx in (4096, 4096, 8192, 8192):
        submit(store, emu.url, context_length=ctx)
    assert drained(runner_for(store, emu.url)) == 4
    counters = emu.counters
    assert [r.applied_context for r in counters.loads] == [4096, 8192]
    assert_host_discipline(counters)
    assert sorted(counters.max_concurrency.values()) == [2]


def test_shared_cache_budgets_bound_how_many_run_together(
    store: JobStore, emu: LMStudioEmulator
) -> None:
    # 4096 tokens shared by all slots: three outputs of 1500 do not fit together, two do
    for _ in range(6):
        submit(store, emu.url, max_tokens=1500)
    assert drained(runner_for(store, emu.url)) == 6
    assert emu.counters.max_concurrency == {MODEL: 2}


def test_a_context_test_keeps_the_host_to_itself(store: JobStore, emu: LMStudioEmulator) -> None:
    before = [submit(store, emu.url) for _ in range(3)]
    test = store.submit(
        host="h",
        model=MODEL,
        request={"threshold": 8192},
        host_url=emu.url,
        kind=JobKind.CONTEXT_TEST,
        priority=PRIORITY_INTERACTIVE,
    )
    after = [submit(store, emu.url) for _ in range(3)]
    assert drained(runner_for(store, emu.url)) == 7
    probe = store.get(test)
    assert probe.finished and probe.started_at and probe.finished_at
    for job in (store.get(j) for j in before + after):
        assert job.status == "succeeded" and job.started_at and job.finished_at
        # each inference job ran wholly before or wholly after the context test
        assert job.finished_at <= probe.started_at or job.started_at >= probe.finished_at
    assert_host_discipline(emu.counters)


def test_interactive_jobs_of_another_model_go_before_the_loaded_model_s_batch(
    store: JobStore, emu: LMStudioEmulator
) -> None:
    batch = [submit(store, emu.url, priority=PRIORITY_BATCH) for _ in range(12)]
    runner = runner_for(store, emu.url)
    done = threading.Thread(target=runner.drain)
    done.start()
    try:
        wait_for(lambda: emu.counters.inferences >= 1, what="the batch to start")
        urgent = submit(store, emu.url, model=OTHER)
        done.join(120)
    finally:
        runner.close()
    views = [store.get(j) for j in batch]
    late = [v for v in views if v.started_at and v.started_at > store.get(urgent).finished_at]  # type: ignore[operator]
    assert store.get(urgent).status == "succeeded"
    assert late  # the batch's rest waited for the interactive job of the other model
    assert_host_discipline(emu.counters)


def test_cancelling_one_running_job_leaves_the_others_running(
    store: JobStore, emu: LMStudioEmulator
) -> None:
    emu.configure(tokens_per_second=4.0)
    ids = [submit(store, emu.url) for _ in range(4)]
    runner = runner_for(store, emu.url)
    drain = threading.Thread(target=runner.drain)
    drain.start()
    try:
        wait_for(lambda: emu.counters.in_flight >= 4, what="four requests in flight")
        store.cancel(ids[0])
        drain.join(120)
    finally:
        runner.close()
    statuses = [store.get(j).status for j in ids]
    assert statuses == ["cancelled", "succeeded", "succeeded", "succeeded"]


class CountingStore(JobStore):
    """A store that records what each claim found: a job, or an empty queue."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.claims: list[str] = []

    def claim_or_empty(self, *args: Any, **kwargs: Any) -> Any:
        job, empty = super().claim_or_empty(*args, **kwargs)
        self.claims.append("job" if job is not None else "empty" if empty else "wait")
        return job, empty


def test_a_drain_that_saw_the_queue_empty_ends_without_claiming_again(
    tmp_path: Path, emu: LMStudioEmulator
) -> None:
    """Once a claim found nothing queued while a job ran, the drain ends when the job does: a
    job queued later rings the doorbell, which starts the next drain."""
    store = CountingStore(f"sqlite:///{tmp_path / 'claims.db'}")
    first = submit(store, emu.url)
    runner = runner_for(store, emu.url)
    try:
        assert runner.drain() == 1
        assert store.claims == ["job", "empty"]  # the second while the job ran, none after
        second = submit(store, emu.url)
        assert runner.drain() == 1  # the next drain starts by claiming
    finally:
        runner.close()
    assert [store.get(j).status for j in (first, second)] == ["succeeded", "succeeded"]
    assert store.claims == ["job", "empty", "job", "empty"]
