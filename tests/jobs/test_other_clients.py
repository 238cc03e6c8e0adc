"""Other clients of the same host (a chat UI, an IDE plugin) load, unload and swap models at any
moment; a job must not fail for it. And every way a host says "context overflow" reaches the
caller as ``ContextLimitExceededError``, whatever the host's kind."""

from __future__ import annotations

import pytest

from lmstrix.api.client import LMStudioClient
from lmstrix.domain.queue_settings import QueueSettings
from lmstrix.jobs.notify import LocalNotifier
from lmstrix.jobs.runner import JobRunner
from lmstrix.jobs.store import JobStore
from lmstrix.testing import LMStudioEmulator, filler_text
from lmstrix.testing.pytest_plugin import EmulatorFactory

MODEL = "llama-3.2-1b-instruct"


def submit(store: JobStore, url: str, prompt: str, context: int = 4096) -> str:
    return store.submit(
        host="h",
        model=MODEL,
        request={"prompt": prompt, "max_tokens": 8, "context_length": context},
        host_url=url,
    )


def runner_for(store: JobStore, url: str) -> JobRunner:
    return JobRunner(
        store, "h", LMStudioClient(url, max_retries=0), LocalNotifier(), settings=QueueSettings()
    )


def run_all(store: JobStore, url: str) -> None:
    runner = runner_for(store, url)
    try:
        runner.drain()
    finally:
        runner.close()


def test_unload_between_jobs_is_noticed(database_url: str, make_emulator: EmulatorFactory) -> None:
    emu = make_emulator(jit=False)
    store = JobStore(database_url)
    runner = runner_for(store, emu.url)
    try:
        first = submit(store, emu.url, "say one")
        assert runner.drain() == 1
        (instance,) = emu.loaded_instances()
        emu.unload(instance)  # another client, between two jobs
        emu.load(MODEL, 1024)  # ... and it loads the model at a size of its own
        second = submit(store, emu.url, "say two")
        assert runner.drain() == 1
    finally:
        runner.close()
    assert [store.get(i).status for i in (first, second)] == ["succeeded", "succeeded"]
    result = store.get(second).result
    assert result is not None and result["model_info"]["context_length"] == 4096
    assert sorted(emu.loaded_instances().values()) == [4096]  # the foreign size was not used


def test_unload_during_a_job_reloads_and_reruns(
    database_url: str, lmstudio_emulator: LMStudioEmulator
) -> None:
    emu = lmstudio_emulator
    store = JobStore(database_url)
    runner = runner_for(store, emu.url)
    try:
        submit(store, emu.url, "say one")
        runner.drain()
        emu.unload_on_next_chat(MODEL)  # gone just as the next request arrives
        job = submit(store, emu.url, "say two")
        runner.drain()
    finally:
        runner.close()
    view = store.get(job)
    assert view.status == "succeeded", view.error_message
    assert view.result is not None and view.result["response"] == "two"
    assert [u.reason for u in emu.counters.unloads].count("direct") == 1
    assert emu.loaded_instances() == {MODEL: 4096}


def test_a_restarted_worker_reuses_the_instance_it_loaded(
    database_url: str, lmstudio_emulator: LMStudioEmulator
) -> None:
    emu = lmstudio_emulator
    store = JobStore(database_url)
    submit(store, emu.url, "say one")
    run_all(store, emu.url)
    loads = emu.counters.load_count
    submit(store, emu.url, "say two")
    run_all(store, emu.url)  # a new runner: a restarted worker knows nothing it loaded
    assert emu.counters.load_count == loads  # found its instance instead of loading `key:2`
    assert list(emu.loaded_instances()) == [MODEL]


@pytest.mark.parametrize(
    ("generation", "shape"),
    [
        ("0.4", "error"),
        ("0.4", "ok_body"),
        ("0.4", "empty"),
        ("0.3", "error"),
        ("0.3", "ok_body"),
        ("0.3", "empty"),
        ("openai", "error"),
        ("openai", "ok_body"),
        # ("openai", "empty") cannot be told from a real empty answer: such a server says
        # nothing of its context, so the pre-check has no limit to hold the prompt against.
    ],
)
def test_every_overflow_signal_fails_the_job_as_overflow(
    database_url: str, make_emulator: EmulatorFactory, generation: str, shape: str
) -> None:
    emu = make_emulator(api_generation=generation, overflow_as=shape, default_context_length=512)
    if generation != "0.4":
        emu.load(MODEL, 512)  # what the host serves: lmstrix cannot choose it there
    store = JobStore(database_url)
    job = submit(store, emu.url, filler_text(4000), context=512)
    run_all(store, emu.url)
    view = store.get(job)
    assert (view.status, view.error_type) == ("failed", "ContextLimitExceededError")
    assert "512" in (view.error_message or "")
