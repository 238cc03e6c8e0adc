"""The runner and the pure pieces around it: routing, sizing, budget check, waiting, error
round-trips; model-side failures become failed jobs, only connection failures are retried."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lmstrix.api.client import LMStudioClient
from lmstrix.api.exceptions import (
    ContextLimitExceededError,
    HostDownError,
    InferenceError,
    JobDeadlineError,
    LMStrixError,
    LMStudioAuthError,
    LMStudioConnectionError,
    LMStudioServerError,
    LMStudioTimeoutError,
    ModelLoadError,
    ModelNotFoundError,
    RegistryError,
)
from lmstrix.domain.budget import check_fits
from lmstrix.domain.errors import ErrorPayload
from lmstrix.domain.load_sizing import DEFAULT_CONTEXT, choose_load_context
from lmstrix.domain.payloads import InferenceJobResult
from lmstrix.domain.queue_settings import QueueSettings
from lmstrix.domain.routing import choose_host
from lmstrix.jobs.doorbell import BrokerUnavailableError
from lmstrix.jobs.notify import LocalNotifier
from lmstrix.jobs.runner import JobRunner
from lmstrix.jobs.store import JobStore
from lmstrix.jobs.wait import wait_until_final
from lmstrix.testing import LMStudioEmulator

MODEL = "llama-3.2-1b-instruct"


def test_choose_host_prefers_loaded_then_shortest_queue_then_order() -> None:
    assert choose_host(["a", "b"], {"a": 5, "b": 1}) == "b"
    assert choose_host(["a", "b"], {"a": 5, "b": 1}, {"a": "m"}, "m") == "a"
    assert choose_host(["a", "b"], {}) == "a"
    with pytest.raises(ValueError):
        choose_host([], {})


def test_load_context_choice() -> None:
    assert choose_load_context(12000, 32768) == 12000
    assert choose_load_context(None, 32768) == DEFAULT_CONTEXT
    assert choose_load_context(None, 4096) == 4096
    assert choose_load_context(None, 32768, needed=20000) == 20000


def test_check_fits() -> None:
    check_fits("m", 100, 100, 4096)
    check_fits("m", 100, -1, 4096)
    with pytest.raises(ContextLimitExceededError) as err:
        check_fits("m", 4000, 200, 4096)
    assert err.value.requested_output == 200 and err.value.context_limit == 4096
    with pytest.raises(ContextLimitExceededError):
        check_fits("m", 5000, -1, 4096)


def test_wait_until_final_wakes_on_notification_and_times_out() -> None:
    notifier = LocalNotifier()
    state = {"final": False}
    waiting = threading.Event()
    slices: list[tuple[float, bool]] = []

    def wait_slice(timeout: float) -> bool:
        waiting.set()
        notified = notifier.wait_done("j", timeout)
        slices.append((timeout, notified))
        return notified

    def finish() -> None:
        waiting.wait(60)
        state["final"] = True
        notifier.notify_done("j")

    finisher = threading.Thread(target=finish)
    finisher.start()
    # One long slice: only the notification can end it with True (unnotified, it ends False).
    ok = wait_until_final(
        lambda: state["final"], wait_slice, time.monotonic() + 120, first_slice=60, max_slice=60
    )
    finisher.join()
    assert ok and slices == [(60, True)]
    assert not wait_until_final(lambda: False, lambda t: False, time.monotonic() + 0.05)


def test_errors_round_trip() -> None:
    def rebuilt(error_type: str, message: str, details: dict[str, Any] | None) -> LMStrixError:
        return ErrorPayload(error_type, message, details).to_exception()

    exc = rebuilt(
        "LMStudioConnectionError", "cannot reach", {"host_url": "http://x:1", "reason": "refused"}
    )
    assert isinstance(exc, LMStudioConnectionError) and exc.host_url == "http://x:1"
    assert str(exc) == "cannot reach"  # the worker's wording is kept
    exc = rebuilt("ModelNotFoundError", "gone", {"model_id": "m", "suggestions": ["n"]})
    assert isinstance(exc, ModelNotFoundError) and exc.suggestions == ["n"]
    exc = rebuilt("LMStudioConnectionError", "odd", None)  # details missing
    assert type(exc) is LMStrixError and str(exc) == "odd"
    exc = rebuilt("NoSuchError", "who knows", {"a": 1})
    assert type(exc) is LMStrixError and str(exc) == "who knows" and exc.details == {"a": 1}
    assert ErrorPayload("LMStudioConnectionError", "").raised_to_caller
    assert ErrorPayload("BrokerUnavailableError", "").raised_to_caller
    assert not ErrorPayload("ModelLoadError", "").raised_to_caller
    assert not ErrorPayload("RuntimeError", "").raised_to_caller


def test_every_error_serializes_itself() -> None:
    originals: list[LMStrixError] = [
        LMStudioConnectionError("http://x:1", "refused"),
        LMStudioAuthError("http://x:1", "401", token_sent=True),
        ModelNotFoundError("m", suggestions=["n"], host_url="http://x:1"),
        ContextLimitExceededError("m", prompt_tokens=9000, context_limit=4096, requested_output=5),
        ModelLoadError("m", "insufficient system resources", context_length=8192),
        InferenceError("m", "engine crashed"),
        BrokerUnavailableError("redis://u:secret@r:6379/0", "refused"),
        RegistryError("corrupt", path="/x"),
        LMStudioConnectionError("http://x:1", "HTTP 200 with HTML", request_sent=True),
        LMStudioTimeoutError("http://x:1", 2.5, operation="chat", detail="cut off after 3 pieces"),
        LMStudioServerError("http://x:1", "Internal Server Error", status=500, model_id="m"),
        LMStudioServerError("http://x:1", "the connection closed before an answer"),
        HostDownError("http://x:1", "it stopped answering", grace_seconds=10.0),
        JobDeadlineError("j", 60, elapsed_seconds=50.5, tries=3, last_error="refused"),
    ]
    for original in originals:
        payload = original.to_payload()
        assert "secret" not in repr(payload)
        back = payload.to_exception()
        assert type(back) is type(original), payload
        assert str(back) == str(original) and back.details == original.details
        assert ErrorPayload.of(original) == payload
        assert vars(back) == vars(original)  # every attribute comes back
    bug = ErrorPayload.of(RuntimeError("oops"))
    assert bug == ErrorPayload("RuntimeError", "oops") and not bug.raised_to_caller


def _runner(store: JobStore, url: str, sleeps: list[float]) -> JobRunner:
    settings = QueueSettings(retry_delays=(0.5, 0.5))
    return JobRunner(
        store,
        "h",
        LMStudioClient(url, max_retries=0),
        LocalNotifier(),
        settings=settings,
        sleep=sleeps.append,
    )


def _submit(store: JobStore, url: str, prompt: str = "say ok") -> str:
    return store.submit(
        host="h",
        model=MODEL,
        request={"prompt": prompt, "max_tokens": 8, "context_length": 4096},
        host_url=url,
    )


def test_load_failure_fails_the_job_without_retry(
    lmstudio_emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'r.db'}")
    jid = _submit(store, lmstudio_emulator.url)
    lmstudio_emulator.fail_next_load("Failed to load model: insufficient system resources")
    sleeps: list[float] = []
    runner = _runner(store, lmstudio_emulator.url, sleeps)
    try:
        assert runner.drain() == 1
    finally:
        runner.close()
    job = store.get(jid)
    assert job.status == "failed" and job.error_type == "ModelLoadError"
    assert sleeps == []  # a model-side failure is never retried


def test_connection_failure_is_retried_with_backoff(make_emulator: object, tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'r.db'}")
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    jid = _submit(store, dead)
    sleeps: list[float] = []
    runner = _runner(store, dead, sleeps)
    try:
        runner.drain()
    finally:
        runner.close()
    job = store.get(jid)
    assert job.status == "failed" and job.error_type == "LMStudioConnectionError"
    assert sleeps == [0.5, 0.5]
    assert job.result and job.result["error_details"]["host_url"] == dead


def test_same_model_same_context_loads_once(
    lmstudio_emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'r.db'}")
    ids = [_submit(store, lmstudio_emulator.url, f"say n{i}") for i in range(5)]
    runner = _runner(store, lmstudio_emulator.url, [])
    try:
        assert runner.drain() == 5
    finally:
        runner.close()
    assert all(store.get(j).status == "succeeded" for j in ids)
    assert lmstudio_emulator.counters.load_count == 1
    assert lmstudio_emulator.counters.loads[0].applied_context == 4096


def test_inference_result_payload_keeps_the_row_format() -> None:
    row = {
        "response": "ok",
        "prompt_tokens": 5,
        "response_tokens": 1,
        "tokens_used": 6,
        "inference_time": 0.1,
        "time_to_first_token": None,
        "tokens_per_second": 10.0,
        "stop_reason": "eosFound",
        "finish_reason": "stop",
        "wall_time": 0.12,
        "model_info": {
            "id": "m",
            "host": "h",
            "instance_id": "m",
            "context_length": 4096,
            "requested_context_length": 4096,
            "reduced": False,
        },
    }
    assert InferenceJobResult.from_row(row).to_row() == row
    # A failed job's row holds only its error's details; nulls read as no answer.
    failed = InferenceJobResult.from_row({"error_details": {"a": 1}, "response": None})
    assert failed.response == "" and failed.tokens_used == 0 and failed.model_info is None
