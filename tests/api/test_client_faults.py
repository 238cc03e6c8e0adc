"""What the client does when a host it reached fails: each failure gets its own typed error, and
a request the host received is never sent twice, whatever ``max_retries`` says. Against the
emulator over real HTTP, with its fault switches."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from lmstrix.api.client import LMStudioClient
from lmstrix.api.exceptions import (
    InferenceError,
    LMStudioConnectionError,
    LMStudioServerError,
    LMStudioTimeoutError,
)
from lmstrix.domain.host_types import ApiGeneration
from lmstrix.testing.backend import EmulatedModel
from lmstrix.testing.emulator import LMStudioEmulator
from lmstrix.testing.pytest_plugin import EmulatorFactory

MODEL = EmulatedModel(key="acme/small-7b", max_context_length=32768)
CHAT = "POST /api/v0/chat/completions"
CHAT_PATH = "/api/v0/chat/completions"


@pytest.fixture
def emu(make_emulator: EmulatorFactory) -> LMStudioEmulator:
    return make_emulator([MODEL])


def client_for(emu: LMStudioEmulator, **kw: Any) -> LMStudioClient:
    """A client that would retry three times if it thought retrying were safe."""
    kw.setdefault("max_retries", 3)
    kw.setdefault("retry_backoff", 0.01)
    client = LMStudioClient(emu.url, **kw)
    assert client.api_generation is ApiGeneration.V1
    emu.reset_counters()
    return client


def chats(emu: LMStudioEmulator) -> int:
    return emu.counters.requests_by_endpoint[CHAT]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_hung_host_times_out_once_and_the_prompt_is_sent_once(
    emu: LMStudioEmulator, stream: bool
) -> None:
    with client_for(emu, timeout=0.5) as c:
        emu.configure(hang_requests=True)
        try:
            with pytest.raises(LMStudioTimeoutError) as exc:
                c.chat_completion("acme/small-7b", "hi", stream=stream)
            # still held by the host: the client's own limit ended the call
            assert emu.hanging == 1
        finally:
            emu.configure(hang_requests=False)
            emu.release_hangs()
    assert chats(emu) == 1
    err = exc.value
    assert (err.seconds, err.setting, err.operation) == (0.5, "lmstudio.timeout", "chat")
    assert not isinstance(err, LMStudioConnectionError)
    assert err.to_payload().raised_to_caller


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (500, "Internal Server Error", "text/plain"),
        (502, "<html><body>Bad Gateway</body></html>", "text/html"),
        (503, "", "text/plain"),
        (500, {"error": {"message": "engine crashed"}}, None),
    ],
    ids=["500-text", "502-html", "503-empty", "500-json"],
)
def test_server_error_answers_are_typed_and_not_retried(
    emu: LMStudioEmulator, stream: bool, status: int, body: Any, content_type: str | None
) -> None:
    with client_for(emu) as c:
        emu.fail_next(status, body, content_type=content_type, path=CHAT_PATH)
        with pytest.raises(LMStudioServerError) as exc:
            c.chat_completion("acme/small-7b", "hi", stream=stream)
    assert chats(emu) == 1
    err = exc.value
    assert err.status == status and err.host_url == emu.url and err.model_id == "acme/small-7b"
    assert f"HTTP {status}" in str(err) and "not sent again" in str(err)
    if status == 500 and content_type == "text/plain":
        assert err.reason == "Internal Server Error"
    # a model-side failure of this one request: the caller gets a failed result, as before
    assert isinstance(err, InferenceError) and not err.to_payload().raised_to_caller


def test_connection_dropped_after_sending_is_a_server_error(emu: LMStudioEmulator) -> None:
    with client_for(emu, timeout=60) as c:
        emu.configure(hang_requests=True)
        failed: list[BaseException] = []

        def call() -> None:
            try:
                c.chat_completion("acme/small-7b", "hi")
            except BaseException as exc:  # handed over to the test's thread
                failed.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        emu.wait_for(lambda: emu.hanging == 1, timeout=30)
        emu.stop()  # LM Studio quits while it holds the request
        caller.join(30)
    assert len(failed) == 1 and isinstance(failed[0], LMStudioServerError)
    assert failed[0].status is None and "closed before an answer" in str(failed[0])
    assert chats(emu) == 1


def test_connect_failure_is_the_one_retried_fault() -> None:
    with (
        LMStudioClient("http://127.0.0.1:9", max_retries=2, retry_backoff=0.01) as c,
        pytest.raises(LMStudioConnectionError) as exc,
    ):
        c.list_models()
    assert not exc.value.request_sent and "refused" in exc.value.reason


def test_stalled_stream_is_cut_off_at_the_timeout(make_emulator: EmulatorFactory) -> None:
    emu = make_emulator([MODEL], stall_streams=True)
    pieces: list[str] = []
    with client_for(emu, timeout=0.5) as c:
        try:
            with pytest.raises(LMStudioTimeoutError) as exc:
                c.chat_completion("acme/small-7b", "say a b c", stream=True, on_token=pieces.append)
        finally:
            emu.configure(stall_streams=False)
            emu.release_hangs()
    assert pieces == ["a"]  # one piece came, then nothing within the time left
    assert exc.value.detail == "cut off after 1 pieces"
    assert chats(emu) == 1


def test_stream_that_keeps_going_is_cut_off_at_the_timeout(make_emulator: EmulatorFactory) -> None:
    """Every gap is short, yet the whole answer takes longer than the timeout: the stream is
    cut off then, not when the host finishes."""
    emu = make_emulator([MODEL], clock="real", tokens_per_second=40.0, load_seconds=0.0)
    pieces: list[str] = []
    with client_for(emu, timeout=1.0) as c:
        c.load("acme/small-7b", 4096)
        with pytest.raises(LMStudioTimeoutError) as exc:
            c.chat_completion("acme/small-7b", "count to 400", stream=True, on_token=pieces.append)
    # 400 pieces at 40 a second would take 10 s; the cut came long before the end
    assert 0 < len(pieces) < 400
    assert exc.value.detail == f"cut off after {len(pieces)} pieces"
    assert chats(emu) == 1


def test_probe_says_whether_anything_answers(emu: LMStudioEmulator) -> None:
    with LMStudioClient(emu.url) as c:
        assert c.answers(1.0)
        emu.configure(hang_requests=True)
        try:
            assert not c.answers(0.2)
        finally:
            emu.configure(hang_requests=False)
            emu.release_hangs()
    with LMStudioClient("http://127.0.0.1:9") as dead:
        assert not dead.answers(1.0)
