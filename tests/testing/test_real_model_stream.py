"""The real model streamed through the emulator: pieces arrive while llama.cpp generates them.

Before live streaming the emulator computed the whole answer and then sent every frame at once,
so a streamed call measured a time to first token equal to the whole generation. These tests
watch llama.cpp itself (its ``/slots`` route) to prove the pieces arrive during generation and
that a client hanging up stops it; the stats must be the real model's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers.real_model_timing import (
    CLOSED,
    FINISHED,
    TimedBackend,
    TimedInstance,
    generating,
    tokens_in_slot,
)

from lmstrix.api.client import LMStudioClient
from lmstrix.testing.emulator import LMStudioEmulator
from lmstrix.testing.pytest_plugin import EmulatorFactory
from lmstrix.testing.real_model import (
    SMOLLM2_KEY,
    RealModelBackend,
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
        chat = client.chat_completion(
            SMOLLM2_KEY,
            STORY,
            max_tokens=48,
            temperature=0,
            stream=True,
            on_token=lambda piece: loaded.mark("received"),
        )
    assert chat.content.strip()
    assert chat.completion_tokens == 48 and chat.finish_reason == "length"
    assert chat.prompt_tokens == loaded.count_prompt_tokens([{"role": "user", "content": STORY}])
    # Live: the first piece reached the client before the model's answer ended (before live
    # streaming the emulator took the whole answer first, so the client measured a time to first
    # token equal to the whole generation).
    log = loaded.log()
    assert log.count("received") == loaded.pieces  # each piece the model made reached the client
    assert log.index("received") < log.index(FINISHED)
    # The client's figures are its measurements of that stream, and consistent with its counts.
    ttft, gen = chat.time_to_first_token, chat.generation_time
    assert ttft is not None and gen is not None and chat.tokens_per_second is not None
    assert ttft > 0 and gen > 0
    assert chat.tokens_per_second == pytest.approx(48 / gen)


@pytest.mark.parametrize("path", PATHS)
def test_pieces_arrive_while_llama_cpp_generates_and_hanging_up_stops_it(
    http: httpx.Client, loaded: TimedInstance, emulator: LMStudioEmulator, path: str
) -> None:
    max_tokens = 1000
    with http.stream("POST", path, json=story_request(path, max_tokens)) as reply:
        assert reply.status_code == 200
        lines = reply.iter_lines()  # held: dropping the iterator closes the connection
        assert first_piece(lines, path)
        # A thousand tokens take seconds: with the first piece in hand, generation must be on.
        assert generating(loaded)
        loaded.mark("hung up")
    # The emulator sees the hang-up when it writes the next piece(s) and closes llama.cpp's
    # stream before the answer ends; llama.cpp in turn stops at its next token or two.
    assert loaded.closed.wait(60)
    assert not loaded.finished and loaded.log()[-1] == CLOSED
    assert loaded.pieces_after("hung up") <= 5
    emulator.wait_for(lambda: not generating(loaded), timeout=60)
    prompt = loaded.count_prompt_tokens([{"role": "user", "content": STORY}])
    generated = tokens_in_slot(loaded) - prompt
    assert loaded.pieces <= generated + 1  # every piece was a token llama.cpp generated
    assert generated <= loaded.pieces + 3 < max_tokens  # and it made hardly any more
    emulator.wait_for(lambda: emulator.counters.in_flight == 0)
    print(
        f"\n{path}: stream closed {loaded.ms_between('hung up', CLOSED):.0f} ms and "
        f"{loaded.pieces_after('hung up')} piece(s) after the hang-up; llama.cpp generated "
        f"{generated} tokens for {loaded.pieces} pieces"
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
    # llama.cpp's own counts and timings of this answer, not figures the emulator simulates.
    (answer,) = loaded.answers
    assert answer.prompt_seconds is not None and answer.generation_seconds is not None
    assert stats["total_output_tokens"] == answer.completion_tokens == 24
    assert stats["input_tokens"] == answer.prompt_tokens > 0
    assert stats["tokens_per_second"] == 24 / answer.generation_seconds
    assert stats["time_to_first_token_seconds"] == round(answer.prompt_seconds, 6) > 0
