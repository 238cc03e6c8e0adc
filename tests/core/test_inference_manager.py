"""InferenceManager in embedded mode: SQLite file, in-process worker thread, the emulator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.configs import config_for
from helpers.slots import assert_host_discipline
from helpers.waiting import wait_for

from lmstrix.api.exceptions import (
    ContextLimitExceededError,
    InferenceTimeoutError,
    LMStudioConnectionError,
    ModelNotFoundError,
    ValidationError,
)
from lmstrix.core.inference_manager import (
    RESULT_KEYS,
    AsyncInferenceManager,
    InferenceManager,
    InferenceResult,
)
from lmstrix.core.models import ModelRegistry
from lmstrix.testing import LMStudioEmulator

MODELS = ("qwen/qwen3-4b", "google/gemma-3-4b", "llama-3.2-1b-instruct")
# A refused connection is retried after 10 ms instead of seconds.


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'lmstrix.db'}"


def manager_for(url: str, db_url: str, timeout: float = 30) -> InferenceManager:
    return InferenceManager(timeout=timeout, config=config_for(url), database_url=db_url)


def test_quick_start_on_a_fresh_registry(lmstudio_emulator: LMStudioEmulator, db_url: str) -> None:
    manager = manager_for(lmstudio_emulator.url, db_url)
    result = manager.infer(
        model_id="llama-3.2-1b-instruct", prompt="What is the meaning of life?", out_ctx=100
    )
    assert isinstance(result, InferenceResult) and isinstance(result, dict)
    assert tuple(result.keys()) == RESULT_KEYS
    assert result["succeeded"] is True and result.succeeded
    assert result["response"] and result.response == result["response"]
    assert result["tokens_used"] == result["prompt_tokens"] + result["response_tokens"] > 0
    assert result["error"] is None
    assert result.model_info["id"] == "llama-3.2-1b-instruct"
    job = manager.service.store.get(result.job_id)
    assert job.status == "succeeded" and job.result is not None
    # the unknown id triggered one rescan: the registry now has the host's models
    assert ModelRegistry(db_url).has_model("qwen/qwen3-4b")


def test_unknown_model_after_rescan(lmstudio_emulator: LMStudioEmulator, db_url: str) -> None:
    manager = manager_for(lmstudio_emulator.url, db_url)
    with pytest.raises(ModelNotFoundError) as err:
        manager.infer("llama-3.2-1b-instrukt", "hi")
    assert "llama-3.2-1b-instruct" in err.value.suggestions


def test_bad_values_and_too_long_prompts_fail_before_queueing(
    lmstudio_emulator: LMStudioEmulator, db_url: str
) -> None:
    manager = manager_for(lmstudio_emulator.url, db_url)
    with pytest.raises(ValidationError) as verr:
        manager.infer("llama-3.2-1b-instruct", "hi", temperature=5.0)
    assert verr.value.field == "temperature"
    with pytest.raises(ValidationError):
        manager.infer("llama-3.2-1b-instruct", "hi", out_ctx="lots")
    with pytest.raises(ContextLimitExceededError) as cerr:
        manager.infer("llama-3.2-1b-instruct", "word " * 200_000, out_ctx=100)
    assert cerr.value.prompt_tokens and cerr.value.context_limit
    assert manager.service.store.list_jobs() == []  # nothing was queued


def test_interleaved_jobs_group_by_model(lmstudio_emulator: LMStudioEmulator, db_url: str) -> None:
    manager = manager_for(lmstudio_emulator.url, db_url)
    manager.service.rescan()
    lmstudio_emulator.reset_counters()
    # submit all first (the worker may start on the first at once), then wait for all
    jobs = [manager.submit(MODELS[i % 3], f"question {i}", max_tokens=8) for i in range(30)]
    results = [manager.wait(j.id) for j in jobs]
    assert all(r.succeeded for r in results)
    assert [r.model_info["id"] for r in results] == [MODELS[i % 3] for i in range(30)]
    counters = lmstudio_emulator.counters
    assert_host_discipline(counters)
    assert counters.load_count <= 4  # FIFO would load 30 times


def test_timeout_cancels_the_job(
    make_emulator: Callable[..., LMStudioEmulator], db_url: str
) -> None:
    emu = make_emulator()
    manager = manager_for(emu.url, db_url, timeout=1.0)
    manager.service.rescan()
    emu.configure(hang_requests=True)
    try:
        with pytest.raises(InferenceTimeoutError) as err:
            manager.infer("llama-3.2-1b-instruct", "hello")
        job_id = err.value.job_id
        assert job_id
        view = manager.service.store.get(job_id)
        assert view.cancel_requested_at is not None
    finally:
        emu.configure(hang_requests=False)
        emu.release_hangs()
    wait_for(lambda: manager.service.store.get(job_id).finished)
    assert manager.service.store.get(job_id).status in ("cancelled", "failed")


def test_cancel_running_job_stops_between_chunks(
    make_emulator: Callable[..., LMStudioEmulator], db_url: str
) -> None:
    emu = make_emulator(clock="real", tokens_per_second=20.0, load_seconds=0.0)
    manager = manager_for(emu.url, db_url)
    manager.service.rescan()
    job = manager.submit("llama-3.2-1b-instruct", "count to 2000", max_tokens=2000)
    store = manager.service.store
    # Streaming: the answer is made (an inference counted) and its pieces are going out.
    wait_for(lambda: emu.counters.inferences == 1 and emu.counters.in_flight == 1)
    store.cancel(job.id)
    result = manager.wait(job.id, timeout=60)
    assert not result.succeeded and result.stop_reason in ("userStopped", "cancelled")
    assert store.get(job.id).status == "cancelled"
    # Stopped between chunks: what arrived is the start of "1 2 ... 2000", at least one piece and
    # far from all 2000 (100 s at 20 tokens/s), and the host's stream was closed under it.
    counted = result.response.split()
    assert counted == [str(i) for i in range(1, len(counted) + 1)]
    assert 0 < len(counted) < 2000
    emu.wait_for(lambda: emu.counters.in_flight == 0, timeout=30)
    assert emu.counters.inferences == 1


def test_unreachable_host_raises_connection_error(
    make_emulator: Callable[..., LMStudioEmulator], db_url: str
) -> None:
    emu = make_emulator()
    manager = manager_for(emu.url, db_url)
    manager.service.rescan()  # the registry knows the model; then the host goes away
    emu.stop()
    with pytest.raises(LMStudioConnectionError):
        manager.infer("llama-3.2-1b-instruct", "hello")
    failed = manager.service.store.list_jobs(status=["failed"])
    assert len(failed) == 1 and failed[0].error_type == "LMStudioConnectionError"


def test_async_many_in_flight(lmstudio_emulator: LMStudioEmulator, db_url: str) -> None:
    config = config_for(lmstudio_emulator.url)

    async def main() -> list[InferenceResult]:
        manager = AsyncInferenceManager(timeout=30, config=config, database_url=db_url)
        try:
            return await asyncio.gather(
                *(manager.infer(MODELS[i % 3], f"q{i}", max_tokens=8) for i in range(12))
            )
        finally:
            await manager.aclose()

    results = asyncio.run(main())
    assert all(r.succeeded for r in results)
    assert len({r.job_id for r in results}) == 12
    assert_host_discipline(lmstudio_emulator.counters)


def test_async_accepts_the_api_docs_prompt_first_order(
    lmstudio_emulator: LMStudioEmulator, db_url: str
) -> None:
    """The documented async example calls ``manager.infer("Question 1", "model1")``."""
    config = config_for(lmstudio_emulator.url)

    async def main() -> list[InferenceResult]:
        manager = AsyncInferenceManager(timeout=30, config=config, database_url=db_url)
        try:
            manager.sync.service.rescan()
            return await asyncio.gather(
                manager.infer("What is 2+3?", "qwen/qwen3-4b"),
                manager.infer("qwen/qwen3-4b", "What is 2+3?"),
            )
        finally:
            await manager.aclose()

    swapped, regular = asyncio.run(main())
    assert swapped.succeeded and regular.succeeded
    assert "5" in swapped.response and "5" in regular.response
    assert swapped.model_info["id"] == regular.model_info["id"] == "qwen/qwen3-4b"
