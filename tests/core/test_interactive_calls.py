"""infer() owns its job (an interrupt or a cancelled task cancels it; submit() jobs stay), and
``verbose=True`` logs each call: embedded mode, SQLite file, the emulator over HTTP."""

from __future__ import annotations

import _thread
import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.configs import config_for
from helpers.waiting import wait_for

from lmstrix.core.inference_manager import AsyncInferenceManager, InferenceManager
from lmstrix.jobs.store import JobStore, JobView
from lmstrix.testing import LMStudioEmulator

MODEL = "llama-3.2-1b-instruct"
LONG = "count to 2000"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'lmstrix.db'}"


@pytest.fixture
def slow(make_emulator: Callable[..., LMStudioEmulator]) -> LMStudioEmulator:
    """Real time, 20 tokens/s: a 2000-token answer takes long enough to interrupt."""
    return make_emulator(clock="real", tokens_per_second=20.0, load_seconds=0.0)


def streaming(emu: LMStudioEmulator, made: int = 0) -> Callable[[], bool]:
    """True once the answer is being made and its pieces are going out."""
    return lambda: emu.counters.inferences == made + 1 and emu.counters.in_flight == 1


def only_job(store: JobStore) -> JobView:
    (job,) = store.list_jobs()
    return job


def test_interrupting_infer_cancels_its_job(slow: LMStudioEmulator, db_url: str) -> None:
    manager = InferenceManager(timeout=60, config=config_for(slow.url), database_url=db_url)
    manager.service.rescan()
    store = manager.service.store

    def interrupt_when_streaming() -> None:
        wait_for(streaming(slow))
        _thread.interrupt_main()  # Ctrl-C in the main thread, which is in infer()

    interrupter = threading.Thread(target=interrupt_when_streaming)
    interrupter.start()
    with pytest.raises(KeyboardInterrupt):
        manager.infer(MODEL, LONG, max_tokens=2000)
    interrupter.join()
    # The interrupted call gave its in-process worker a moment to stop at its next chunk.
    job = only_job(store)
    assert job.status == "cancelled" and job.attempts == 1
    assert job.waiter_seen_at is not None
    slow.wait_for(lambda: slow.counters.in_flight == 0, timeout=30)
    assert slow.counters.inferences == 1
    manager.close()


def test_cancelling_an_async_infer_cancels_its_job(slow: LMStudioEmulator, db_url: str) -> None:
    config = config_for(slow.url)

    async def main() -> None:
        manager = AsyncInferenceManager(timeout=60, config=config, database_url=db_url)
        try:
            await asyncio.to_thread(manager.sync.service.rescan)
            task = asyncio.create_task(manager.infer(MODEL, LONG, max_tokens=2000))
            await asyncio.to_thread(wait_for, streaming(slow))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            await manager.aclose()

    asyncio.run(main())
    store = JobStore(db_url)
    wait_for(lambda: only_job(store).status == "cancelled", what="the job to stop")
    assert only_job(store).attempts == 1


def test_a_submitted_job_outlives_an_interrupted_wait(slow: LMStudioEmulator, db_url: str) -> None:
    manager = InferenceManager(timeout=60, config=config_for(slow.url), database_url=db_url)
    manager.service.rescan()
    job = manager.submit(MODEL, "count to 20", max_tokens=20)
    assert manager.service.store.get(job.id).waiter_seen_at is None

    def interrupt_when_streaming() -> None:
        wait_for(streaming(slow))
        _thread.interrupt_main()

    interrupter = threading.Thread(target=interrupt_when_streaming)
    interrupter.start()
    with pytest.raises(KeyboardInterrupt):
        manager.wait(job.id)
    interrupter.join()
    result = manager.wait(job.id)  # it went on: its caller may fetch it later
    assert result.succeeded and result.response.split()[-1] == "20"
    manager.close()


def test_verbose_logs_each_call_at_info(
    lmstudio_emulator: LMStudioEmulator, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = config_for(lmstudio_emulator.url)
    quiet = InferenceManager(timeout=30, config=config, database_url=db_url)
    with caplog.at_level(logging.INFO, logger="lmstrix"):
        quiet.infer(MODEL, "say quiet", max_tokens=8)
        assert [r for r in caplog.records if r.name == "lmstrix.core.inference_manager"] == []
        verbose = InferenceManager(verbose=True, timeout=30, config=config, database_url=db_url)
        result = verbose.infer(MODEL, "say loud", max_tokens=8)
        again = quiet.infer(MODEL, "say quiet again", max_tokens=8)
    lines = [r for r in caplog.records if r.name == "lmstrix.core.inference_manager"]
    assert [r.levelno for r in lines] == [logging.INFO]  # the verbose call only
    message = lines[0].getMessage()
    info = result.model_info
    for part in (
        f"job {result.job_id} on h1",
        MODEL,
        "succeeded",
        f"loaded as {info['instance_id']} at {info['context_length']} tokens",
        "queued ",
        f"inference {result.inference_time:.2f}s",
        "tok/s",
    ):
        assert part in message, (part, message)
    assert "reduced" not in message  # loaded at the size asked for
    assert again.job_id not in message
    quiet.close()
    verbose.close()


def test_verbose_says_when_the_load_was_reduced(
    make_emulator: Callable[..., LMStudioEmulator],
    db_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emu = make_emulator(max_applied_context=2048)  # a server that silently clamps
    manager = InferenceManager(
        verbose=True, timeout=30, config=config_for(emu.url), database_url=db_url
    )
    with caplog.at_level(logging.INFO, logger="lmstrix"):
        result = manager.infer(MODEL, "say small", max_tokens=8)
    assert result.model_info["reduced"] is True
    (line,) = [r for r in caplog.records if r.name == "lmstrix.core.inference_manager"]
    requested = result.model_info["requested_context_length"]
    assert f"at 2048 tokens (reduced from {requested})" in line.getMessage()
    manager.close()
