"""The real model streamed through the emulator: pieces arrive while llama.cpp generates them.

Before live streaming the emulator computed the whole answer and then sent every frame at once,
so a streamed call measured a time to first token equal to the whole generation. These tests
watch llama.cpp itself (its ``/slots`` route) to prove the pieces arrive during generation and
that a client hanging up stops it; the stats must be the real model's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from real_model_timing import TimedBackend, TimedInstance

from lmstrix.api.client import LMStudioClient
from lmstrix.testing.emulator import LMStudioEmulator
from lmstrix.testing.pytest_plugin import EmulatorFactory
from lmstrix.testing.real_model import (
    SMOLLM2_KEY,
    RealModelBackend,
    RealModelInstance,
    smollm2_model,
)
from lmstrix.testing.sse import sse_json

pytestmark = pytest.mark.real_model

STORY = "Write a long story about a dragon."  # SmolLM2 goes on for hundreds of tokens


@pytest.fixture
def timed(real_backend: RealModelBackend) -> TimedBackend:
    return TimedBackend(real_backend)


@pytest.fixture
def emulator(make_emulator: EmulatorFactory, timed: TimedBackend) -> LMStudioEmulator:
    return make_emulator([smollm2_model()], backend=timed, jit=False)


@pytest.fixture
def loaded(emulator: LMStudioEmulator, timed: TimedBackend) -> TimedInstance:
    emulator.load(SMOLLM2_KEY, 1024)
    (instance,) = timed.instances
    return instance


@pytest.fixture
def http(emulator: LMStudioEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, timeout=60, trust_env=False) as client:
        yield client


def generating(instance: TimedInstance | RealModelInstance) -> bool:
    """Whether llama.cpp's only slot is busy right now."""
    slots = httpx.get(f"{instance.url}/slots", timeout=5, trust_env=False).json()
    return bool(slots[0]["is_processing"])


def idle_within(instance: TimedInstance, seconds: float) -> float:
    """Seconds until llama.cpp's slot is idle; fails past ``seconds``."""
    started = time.monotonic()
    while generating(instance):
        if time.monotonic() - started > seconds:
            raise AssertionError(f"llama.cpp still generating {seconds}s later")
        time.sleep(0.01)
    return time.monotonic() - started


def first_piece(lines: Iterator[str], path: str) -> str:
    event = None
    for line in lines:
        if line.startswith("event:"):
            event = line[len("event:") :].strip()
        if not line.startswith("data:"):
            continue
        data: Any = json.loads(line[len("data:") :])
        if path == "/api/v1/chat":
            if event == "message.delta":
                return str(data["content"])
        elif data.get("choices") and data["choices"][0]["delta"].get("content"):
            return str(data["choices"][0]["delta"]["content"])
    raise AssertionError("the stream ended without a piece")


def story_request(path: str, max_tokens: int) -> dict[str, Any]:
    if path == "/api/v1/chat":
        return {
            "model": SMOLLM2_KEY,
            "input": STORY,
            "max_output_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
        }
    return {
        "model": SMOLLM2_KEY,
        "messages": [{"role": "user", "content": STORY}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }


PATHS = ["/v1/chat/completions", "/api/v0/chat/completions", "/api/v1/chat"]


def test_streamed_stats_are_the_real_generation(
    emulator: LMStudioEmulator, loaded: TimedInstance
) -> None:
    with LMStudioClient(emulator.url) as client:
        chat = client.chat_completion(SMOLLM2_KEY, STORY, max_tokens=48, temperature=0, stream=True)
    assert chat.content.strip()
    assert chat.completion_tokens == 48 and chat.finish_reason == "length"
    assert chat.prompt_tokens == loaded.count_prompt_tokens([{"role": "user", "content": STORY}])
    ttft, gen, wall = chat.time_to_first_token, chat.generation_time, chat.wall_time
    assert ttft is not None and gen is not None and chat.tokens_per_second is not None
    # 47 tokens after the first take real time; before live streaming gen was ~0 and ttft ~wall
    assert 0 < ttft < wall and gen > wall / 4
    assert 1 < chat.tokens_per_second < 10_000


@pytest.mark.parametrize("path", PATHS)
def test_pieces_arrive_while_llama_cpp_generates_and_hanging_up_stops_it(
    http: httpx.Client, loaded: TimedInstance, emulator: LMStudioEmulator, path: str
) -> None:
    with http.stream("POST", path, json=story_request(path, 1000)) as reply:
        assert reply.status_code == 200
        lines = reply.iter_lines()  # held: dropping the iterator closes the connection
        assert first_piece(lines, path)
        # A thousand tokens take seconds: with the first piece in hand, generation must be on.
        assert generating(loaded)
        hung_up = time.monotonic()
    # The emulator sees the hang-up when it writes the next piece(s) and closes llama.cpp's
    # stream; llama.cpp in turn stops at its next token or two.
    assert loaded.closed.wait(10)
    assert loaded.closed_at is not None and not loaded.finished
    next_chunk = loaded.first_piece_after(hung_up) or hung_up
    assert loaded.closed_at - next_chunk < 1.0
    assert loaded.pieces_after(hung_up) <= 5
    idle = idle_within(loaded, 2.0)
    emulator.wait_for(lambda: emulator.counters.in_flight == 0)
    print(
        f"\n{path}: stream closed {(loaded.closed_at - hung_up) * 1000:.0f} ms and "
        f"{loaded.pieces_after(hung_up)} piece(s) after the hang-up, llama.cpp idle "
        f"{idle * 1000:.0f} ms later"
    )


def test_overflow_streams_lm_studio_error_frames(http: httpx.Client, loaded: TimedInstance) -> None:
    long = "hello " * 1200  # > 1024 real tokens
    messages = [{"role": "user", "content": long}]
    reply = http.post(
        "/v1/chat/completions", json={"model": SMOLLM2_KEY, "messages": messages, "stream": True}
    )
    ((event, data),) = sse_json(reply.text)
    assert event == "error"
    message = data["error"]["message"]
    tokens = loaded.count_prompt_tokens(messages)
    assert message == (
        f"Input does not fit in context length. The input has {tokens} tokens, but the "
        f"context length only supports {loaded.applied_context} tokens."
    )
    reply = http.post("/api/v1/chat", json={"model": SMOLLM2_KEY, "input": long, "stream": True})
    frames = sse_json(reply.text)
    assert [e for e, _ in frames] == ["chat.start", "prompt_processing.start", "error", "chat.end"]
    assert "Input does not fit in context length" in frames[2][1]["error"]["message"]
    assert not generating(loaded)


def test_v1_chat_stream_ends_with_real_stats(http: httpx.Client, loaded: TimedInstance) -> None:
    reply = http.post("/api/v1/chat", json=story_request("/api/v1/chat", 24))
    frames = sse_json(reply.text)
    pieces = [d["content"] for e, d in frames if e == "message.delta"]
    result = frames[-1][1]["result"]
    assert len(pieces) > 1 and "".join(pieces) == result["output"][0]["content"]
    stats = result["stats"]
    assert stats["total_output_tokens"] == 24 and stats["input_tokens"] > 0
    assert 1 < stats["tokens_per_second"] < 10_000
    assert 0 < stats["time_to_first_token_seconds"] < 5
