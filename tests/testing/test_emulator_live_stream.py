"""Live streaming through the emulator, with a backend the test steps piece by piece.

Why a gated backend: it proves the emulator passes each piece on as the backend yields it (the
client holds the first piece while the backend is still blocked before the second), that a
client hanging up closes the backend's stream, and that measured timings reach the stats, all
without the real model, without sleeps and in every environment. The real model's own streaming
is covered in ``test_real_model_stream.py``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest

from lmstrix.testing import LMStudioEmulator, filler_text
from lmstrix.testing.backend import (
    BackendInstance,
    Completion,
    EmulatedModel,
    Message,
    streaming,
)
from lmstrix.testing.pytest_plugin import EmulatorFactory
from lmstrix.testing.rules import RuleBackend
from lmstrix.testing.sse import sse_json
from lmstrix.testing.tokenizer import pieces

MODEL = "llama-3.2-1b-instruct"
PROMPT_SECONDS = 0.5
GENERATION_SECONDS = 2.0
WAIT = 10.0  # generous bound for a step that takes milliseconds; never a pacing guess


class GatedInstance:
    """A rule-based instance whose ``stream()`` yields the first piece at once and each further
    piece only when the test releases the gate; it records what it produced and its closing."""

    def __init__(self, inner: BackendInstance) -> None:
        self.inner = inner
        self.gate = threading.Semaphore(0)
        self.produced = 0
        self.total = 0
        self.closed = threading.Event()
        self.finished = False

    @property
    def applied_context(self) -> int:
        return self.inner.applied_context

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        return self.inner.count_prompt_tokens(messages)

    def complete(self, messages: Sequence[Message], **options: Any) -> Completion:
        return self.inner.complete(messages, **options)

    def stream(self, messages: Sequence[Message], **options: Any) -> Iterator[str | Completion]:
        whole = self.inner.complete(messages, **options)  # raises ContextOverflow up front
        parts = pieces(whole.text)
        self.total = len(parts)
        try:
            for index, part in enumerate(parts):
                if index and not self.gate.acquire(timeout=WAIT):
                    raise AssertionError("the test never released the next piece")
                self.produced += 1
                yield part
            self.finished = True
            yield Completion(
                text=whole.text,
                prompt_tokens=whole.prompt_tokens,
                completion_tokens=whole.completion_tokens,
                finish_reason=whole.finish_reason,
                prompt_seconds=PROMPT_SECONDS,
                generation_seconds=GENERATION_SECONDS,
            )
        finally:
            self.closed.set()

    def close(self) -> None:
        self.inner.close()


class GatedBackend:
    def __init__(self) -> None:
        self.rules = RuleBackend()
        self.instances: list[GatedInstance] = []

    def load(self, model: EmulatedModel, context_length: int) -> GatedInstance:
        instance = GatedInstance(self.rules.load(model, context_length))
        self.instances.append(instance)
        return instance

    def close(self) -> None:
        self.rules.close()


@pytest.fixture
def backend() -> GatedBackend:
    return GatedBackend()


@pytest.fixture
def emu(make_emulator: EmulatorFactory, backend: GatedBackend) -> LMStudioEmulator:
    emulator = make_emulator(backend=backend)
    emulator.load(MODEL)
    return emulator


@pytest.fixture
def http(emu: LMStudioEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, timeout=WAIT, trust_env=False) as client:
        yield client


def request_for(path: str, text: str, **extra: Any) -> dict[str, Any]:
    if path == "/api/v1/chat":
        return {"model": MODEL, "input": text, "stream": True, **extra}
    messages = [{"role": "user", "content": text}]
    return {"model": MODEL, "messages": messages, "stream": True, **extra}


def content_of(path: str, event: str | None, data: Any) -> str | None:
    """The text piece a frame carries, if any."""
    if path == "/api/v1/chat":
        return str(data["content"]) if event == "message.delta" else None
    if not isinstance(data, dict) or not data.get("choices"):
        return None
    piece = data["choices"][0].get("delta", {}).get("content")
    return None if piece is None else str(piece)


def frames_of(lines: Iterator[str]) -> Iterator[tuple[str | None, Any]]:
    """SSE frames as they arrive (``sse_json`` needs the whole body)."""
    event: str | None = None
    for line in lines:
        if line.startswith("event:"):
            event = line[len("event:") :].strip()
        elif line.startswith("data:"):
            data = line[len("data:") :].strip()
            yield event, data if data == "[DONE]" else json.loads(data)
            event = None


PATHS = ["/v1/chat/completions", "/api/v0/chat/completions", "/api/v1/chat"]


def test_rule_instances_do_not_stream() -> None:
    # The simulated-clock path stays the one for the default backend.
    model = EmulatedModel(key="m")
    assert streaming(RuleBackend().load(model, 4096)) is None
    assert streaming(GatedInstance(RuleBackend().load(model, 4096))) is not None


@pytest.mark.parametrize("path", PATHS)
def test_each_piece_reaches_the_client_while_the_backend_generates(
    emu: LMStudioEmulator, http: httpx.Client, backend: GatedBackend, path: str
) -> None:
    (instance,) = backend.instances
    spent_before = emu.simulated_seconds  # the load's share
    received: list[str] = []
    frames: list[tuple[str | None, Any]] = []
    request = request_for(path, "count to 12", stream_options={"include_usage": True})
    with http.stream("POST", path, json=request) as reply:
        assert reply.status_code == 200
        for event, data in frames_of(reply.iter_lines()):
            frames.append((event, data))
            piece = content_of(path, event, data)
            if piece is None:
                continue
            received.append(piece)
            # the client holds this piece while the backend waits to make the next one
            assert instance.produced == len(received)
            if len(received) < 12:  # after the last piece the completion follows ungated
                assert not instance.finished
            instance.gate.release()
    assert "".join(received) == "1 2 3 4 5 6 7 8 9 10 11 12"
    assert instance.finished and instance.closed.is_set()
    assert emu.counters.in_flight == 0 and emu.counters.inferences == 1
    # measured timings are taken as they are (no simulated pace on top)
    spent = emu.simulated_seconds - spent_before
    assert spent == pytest.approx(PROMPT_SECONDS + GENERATION_SECONDS, abs=1e-6)
    if path == "/api/v1/chat":
        assert [e for e, _ in frames][-3:] == ["message.delta", "message.end", "chat.end"]
        stats = frames[-1][1]["result"]["stats"]
        assert stats["total_output_tokens"] == 12
        assert stats["tokens_per_second"] == pytest.approx(12 / GENERATION_SECONDS)
        assert stats["time_to_first_token_seconds"] == pytest.approx(PROMPT_SECONDS)
    else:
        assert frames[-1] == (None, "[DONE]")
        assert frames[-2][1]["usage"]["completion_tokens"] == 12
        assert frames[-3][1]["choices"][0]["finish_reason"] == "stop"
        assert frames[0][1]["choices"][0]["delta"]["role"] == "assistant"


@pytest.mark.parametrize("path", PATHS)
def test_client_hanging_up_closes_the_backend_stream(
    emu: LMStudioEmulator, http: httpx.Client, backend: GatedBackend, path: str
) -> None:
    (instance,) = backend.instances
    with http.stream("POST", path, json=request_for(path, "count to 500")) as reply:
        for event, data in frames_of(reply.iter_lines()):
            if content_of(path, event, data) is not None:
                break  # hang up after the first piece
    # The server sees the hang-up at its next write: let the backend produce until it does.
    for _ in range(100):
        instance.gate.release()
        if instance.closed.wait(0.1):
            break
    assert instance.closed.is_set()
    assert not instance.finished and instance.produced < instance.total == 500
    emu.wait_for(lambda: emu.counters.in_flight == 0)
    # the instance is free again: the next request is served
    answer = http.post("/v1/chat/completions", json={**request_for("/v1", "hi"), "stream": False})
    assert answer.status_code == 200


def test_truncated_live_stream_closes_the_backend(
    emu: LMStudioEmulator, http: httpx.Client, backend: GatedBackend
) -> None:
    (instance,) = backend.instances
    emu.configure(truncate_streams=True)
    reply = http.post("/v1/chat/completions", json=request_for("/v1", "count to 5"))
    frames = sse_json(reply.text)
    assert len(frames) == 1 and frames[0][1]["choices"][0]["delta"]["content"] == "1"
    assert instance.closed.is_set() and instance.produced == 1


def test_overflow_is_an_error_frame_before_any_piece(
    emu: LMStudioEmulator, http: httpx.Client
) -> None:
    long = filler_text(5000)
    reply = http.post("/v1/chat/completions", json=request_for("/v1", long))
    ((event, data),) = sse_json(reply.text)
    assert event == "error"
    assert data["error"]["message"].startswith("Input does not fit in context length.")
    reply = http.post("/api/v1/chat", json=request_for("/api/v1/chat", long))
    frames = sse_json(reply.text)
    assert [e for e, _ in frames] == ["chat.start", "prompt_processing.start", "error", "chat.end"]
    assert frames[2][1]["error"]["type"] == "invalid_request"
    assert emu.counters.in_flight == 0


def test_unload_waits_for_the_stream_then_frees_the_model(
    emu: LMStudioEmulator, http: httpx.Client, backend: GatedBackend
) -> None:
    # An unload during a live stream must not free the model under it.
    (instance,) = backend.instances
    unloaded = threading.Event()
    received: list[str] = []
    with http.stream("POST", "/v1/chat/completions", json=request_for("/v1", "count to 3")) as r:
        for event, data in frames_of(r.iter_lines()):
            piece = content_of("/v1", event, data)
            if piece is None:
                continue
            received.append(piece)
            if len(received) == 1:

                def unload() -> None:
                    emu.unload(MODEL)
                    unloaded.set()

                threading.Thread(target=unload, daemon=True).start()
                assert not unloaded.wait(0.2)  # blocked while the stream holds the instance
            instance.gate.release()
    assert "".join(received) == "1 2 3"
    assert unloaded.wait(WAIT)
    assert emu.loaded_instances() == {}
