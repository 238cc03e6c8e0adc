"""Streamed answers in embedded mode: InferenceManager.stream and its asyncio twin, following a
job from another reader, early exits that cancel, timeouts, and failures mid-stream. The host is
the emulator on a real clock, so tokens come one by one as from a model."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.configs import config_for
from helpers.waiting import wait_for

from lmstrix.api.exceptions import InferenceTimeoutError
from lmstrix.core.inference_manager import AsyncInferenceManager, InferenceManager
from lmstrix.core.jobs import JobManager
from lmstrix.testing import LMStudioEmulator

MODEL = "llama-3.2-1b-instruct"
# The emulator answers "You said: <prompt>", one token per word: a long prompt, a long answer.
LONG = " ".join(f"word{i}" for i in range(200))


@pytest.fixture
def slow_host() -> Iterator[LMStudioEmulator]:
    emu = LMStudioEmulator(clock="real", tokens_per_second=100.0, load_seconds=0.0).start()
    yield emu
    emu.stop()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'lmstrix.db'}"


def _manager(host: LMStudioEmulator, db_url: str, timeout: float = 60) -> InferenceManager:
    return InferenceManager(timeout=timeout, config=config_for(host), database_url=db_url)


def test_pieces_arrive_while_the_job_runs_in_order_and_complete(
    slow_host: LMStudioEmulator, db_url: str
) -> None:
    manager = _manager(slow_host, db_url)
    stream = manager.stream(MODEL, "one two three four five six seven eight", max_tokens=64)
    store = manager.service.store
    assert store.get(stream.job_id).status in ("queued", "running")  # the id is known at once
    pieces, status_at_first = [], None
    for piece in stream:
        if not pieces:
            status_at_first = store.status(stream.job_id)
        pieces.append(piece)
    assert status_at_first == "running"  # the first piece came before the answer was done
    assert len(pieces) > 5
    result = stream.result
    assert result is not None and result.succeeded, result
    assert "".join(pieces) == result.response
    assert result.job_id == stream.job_id
    assert store.get(stream.job_id).result["response"] == result.response  # the row has it all
    manager.close()


def test_closing_the_stream_early_cancels_the_job(slow_host: LMStudioEmulator, db_url: str) -> None:
    manager = _manager(slow_host, db_url)
    stream = manager.stream(MODEL, LONG, max_tokens=400)
    taken = [next(stream), next(stream)]
    stream.close()
    store = manager.service.store
    wait_for(lambda: store.status(stream.job_id) == "cancelled", what="the job cancelled")
    job = store.get(stream.job_id)
    assert job.attempts == 1
    # it stopped mid-answer, at a chunk after the ones taken
    assert (job.result or {}).get("stop_reason") == "userStopped"
    assert (job.result or {})["response"].startswith("".join(taken))
    manager.close()


def test_breaking_out_of_a_for_loop_cancels_the_job(
    slow_host: LMStudioEmulator, db_url: str
) -> None:
    manager = _manager(slow_host, db_url)
    job_ids = []
    for _piece in (stream := manager.stream(MODEL, LONG, max_tokens=400)):
        job_ids.append(stream.job_id)
        break
    del stream, _piece
    gc.collect()
    store = manager.service.store
    wait_for(lambda: store.status(job_ids[0]) == "cancelled", what="the job cancelled")
    manager.close()


def test_a_with_block_cancels_on_an_exception(slow_host: LMStudioEmulator, db_url: str) -> None:
    manager = _manager(slow_host, db_url)
    with pytest.raises(RuntimeError), manager.stream(MODEL, LONG, max_tokens=400) as stream:
        next(stream)
        raise RuntimeError("the caller's own failure")
    wait_for(lambda: manager.service.store.status(stream.job_id) == "cancelled", what="cancelled")
    manager.close()


def test_a_follower_that_joins_late_gets_every_piece_from_the_start(
    slow_host: LMStudioEmulator, db_url: str
) -> None:
    manager = _manager(slow_host, db_url)
    stream = manager.stream(MODEL, "alpha beta gamma delta epsilon zeta eta theta", max_tokens=64)
    first = [next(stream), next(stream), next(stream)]
    with JobManager(config_for(slow_host), database_url=db_url) as jobs:
        follower = jobs.follow_job(stream.job_id, timeout=60)
        followed = list(follower)
        mine = first + list(stream)
        assert stream.result is not None and follower.result is not None
        assert "".join(followed) == "".join(mine) == stream.result.response
        # a follower of a finished job gets the whole answer too, and stopping it cancels nothing
        again = jobs.follow_job(stream.job_id, timeout=60)
        assert "".join(again) == stream.result.response
        partial = jobs.follow_job(stream.job_id)
        next(partial)
        partial.close()
    assert manager.service.store.status(stream.job_id) == "succeeded"
    manager.close()


def test_following_is_not_owning(slow_host: LMStudioEmulator, db_url: str) -> None:
    manager = _manager(slow_host, db_url)
    job = manager.submit(MODEL, LONG, max_tokens=400)
    with JobManager(config_for(slow_host), database_url=db_url) as jobs:
        follower = jobs.follow_job(job.id, timeout=60)
        first = next(follower)
        follower.close()  # a reader that is not the job's owner leaves it running
        assert manager.service.store.status(job.id) == "running"
    result = manager.wait(job.id)
    assert result.succeeded and result.stop_reason != "userStopped"
    assert result.response.startswith(first) and len(result.response) > len(first)
    manager.close()


def test_a_stream_past_its_timeout_raises_and_cancels(
    slow_host: LMStudioEmulator, db_url: str
) -> None:
    manager = _manager(slow_host, db_url, timeout=0.5)
    stream = manager.stream(MODEL, LONG, max_tokens=400)
    with pytest.raises(InferenceTimeoutError) as caught:
        for _ in stream:
            pass
    assert caught.value.job_id == stream.job_id
    wait_for(lambda: manager.service.store.status(stream.job_id) == "cancelled", what="cancelled")
    manager.close()


def test_a_stream_that_breaks_off_ends_with_the_failure(
    slow_host: LMStudioEmulator, db_url: str
) -> None:
    slow_host.configure(truncate_streams=True)
    manager = _manager(slow_host, db_url)
    stream = manager.stream(MODEL, "one two three four", max_tokens=32)
    pieces = list(stream)
    assert stream.result is not None and not stream.result.succeeded
    assert "before completion" in (stream.result.error or "")
    assert len(pieces) <= 1
    manager.close()


def test_async_stream(slow_host: LMStudioEmulator, db_url: str) -> None:
    async def main() -> None:
        manager = AsyncInferenceManager(
            timeout=60, config=config_for(slow_host), database_url=db_url
        )
        stream = await manager.stream(MODEL, "red green blue cyan magenta yellow", max_tokens=32)
        assert stream.job_id is not None  # queued before any piece
        pieces = [piece async for piece in stream]
        assert len(pieces) > 3
        assert stream.result is not None and stream.result.succeeded
        assert "".join(pieces) == stream.result.response
        # iterated without awaiting first: queued on the first piece asked for
        lazy = manager.stream(MODEL, "lazy start", max_tokens=16)
        assert lazy.job_id is None
        assert "".join([p async for p in lazy]) == lazy.result.response  # type: ignore[union-attr]
        await manager.aclose()

    asyncio.run(main())


def test_async_stream_left_early_cancels(slow_host: LMStudioEmulator, db_url: str) -> None:
    async def main() -> str:
        manager = AsyncInferenceManager(
            timeout=60, config=config_for(slow_host), database_url=db_url
        )
        async with manager.stream(MODEL, LONG, max_tokens=400) as stream:
            async for _ in stream:
                break
        await manager.aclose()
        assert stream.job_id is not None
        return stream.job_id

    job_id = asyncio.run(main())
    manager = _manager(slow_host, db_url)
    wait_for(lambda: manager.service.store.status(job_id) == "cancelled", what="cancelled")
    manager.close()
