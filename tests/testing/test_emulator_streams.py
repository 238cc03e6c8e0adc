"""Streaming frames of every family, v1 chat, and the fault hooks (truncation, hangs, injection)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from lmstrix.testing import LMStudioEmulator, filler_text
from lmstrix.testing.pytest_plugin import EmulatorFactory
from lmstrix.testing.sse import sse_json

QWEN = "qwen/qwen3-4b"
LLAMA = "llama-3.2-1b-instruct"
GEMMA_KEY = "google/gemma-3-4b"


@pytest.fixture
def emu(lmstudio_emulator: LMStudioEmulator) -> LMStudioEmulator:
    return lmstudio_emulator


@pytest.fixture
def http(emu: LMStudioEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, timeout=5) as client:
        yield client


def chat(text: str, model: str = QWEN, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


# --- OpenAI-compatible / v0 streams ----------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/v1", "/api/v0"])
def test_chat_stream_frames(http: httpx.Client, prefix: str) -> None:
    request = chat("count to 6", stream=True, stream_options={"include_usage": True})
    response = http.post(f"{prefix}/chat/completions", json=request)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    frames = sse_json(response.text)
    assert all(event is None for event, _ in frames)
    assert frames[-1][1] == "[DONE]"
    chunks = [data for _, data in frames[:-1]]
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and re.fullmatch(r"chatcmpl-[0-9a-z]{21}", ids.pop())
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["system_fingerprint"] == QWEN for c in chunks)
    content = [c["choices"][0]["delta"].get("content") for c in chunks[:-2]]
    assert "".join(content) == "1 2 3 4 5 6"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    ]
    usage = chunks[-1]
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 6
    assert "stats" not in usage


def test_stream_without_usage_and_text_completion_stream(http: httpx.Client) -> None:
    frames = sse_json(http.post("/v1/chat/completions", json=chat("2+2=", stream=True)).text)
    assert all("usage" not in data for _, data in frames[:-1])
    text = http.post(
        "/v1/completions", json={"model": QWEN, "prompt": "count to 3", "stream": True}
    )
    chunks = [data for _, data in sse_json(text.text)[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == "1 2 3"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_length_finish(http: httpx.Client) -> None:
    frames = sse_json(
        http.post("/v1/chat/completions", json=chat("count to 9", stream=True, max_tokens=2)).text
    )
    assert frames[-2][1]["choices"][0]["finish_reason"] == "length"


def test_stream_overflow_is_200_with_error_event(emu: LMStudioEmulator, http: httpx.Client) -> None:
    emu.load(LLAMA, 64)
    request = chat(filler_text(100), model=LLAMA, stream=True)
    response = http.post("/v1/chat/completions", json=request)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    prompt = 100 + 6 + 3
    message = (
        f"Input does not fit in context length. The input has {prompt} tokens, but the context "
        "length only supports 64 tokens."
    )
    assert response.text == (
        "event: error\ndata: "
        + json.dumps({"error": {"message": message}, "message": message})
        + "\n\n"
    )
    emu.configure(overflow_wording=1)
    data = sse_json(http.post("/api/v0/chat/completions", json=request).text)[0][1]
    assert data["message"].startswith("The number of tokens to keep from the initial prompt")


def test_truncated_stream_has_no_done(emu: LMStudioEmulator, http: httpx.Client) -> None:
    emu.configure(truncate_streams=True)
    frames = sse_json(http.post("/v1/chat/completions", json=chat("count to 9", stream=True)).text)
    assert len(frames) == 1
    assert frames[0][1]["choices"][0]["delta"]["content"] == "1"
    events = [
        e
        for e, _ in sse_json(
            http.post(
                "/api/v1/chat", json={"model": QWEN, "input": "count to 5", "stream": True}
            ).text
        )
    ]
    assert "chat.end" not in events
    emu.configure(truncate_streams=False)
    again = sse_json(http.post("/v1/chat/completions", json=chat("count to 9", stream=True)).text)
    assert again[-1][1] == "[DONE]"


def test_stalled_stream_waits_after_each_piece(emu: LMStudioEmulator, http: httpx.Client) -> None:
    emu.configure(stall_streams=True)
    with http.stream("POST", "/v1/chat/completions", json=chat("say a b", stream=True)) as reply:
        lines = reply.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))
        assert json.loads(first[5:])["choices"][0]["delta"]["content"] == "a"
        emu.wait_for(lambda: emu.hanging == 1)  # nothing more comes until released
        emu.configure(stall_streams=False)
        emu.release_hangs()
        rest = [line for line in lines if line.startswith("data:")]
    assert rest[-1] == "data: [DONE]"
    assert emu.hanging == 0


# --- native v1 chat --------------------------------------------------------------------------


def test_v1_chat_non_streaming(emu: LMStudioEmulator, http: httpx.Client) -> None:
    first = http.post("/api/v1/chat", json={"model": QWEN, "input": "The door code is 7391."})
    assert first.status_code == 200
    body = first.json()
    assert body["model_instance_id"] == QWEN
    assert body["output"] == [{"type": "message", "content": "You said: The door code is 7391."}]
    stats = body["stats"]
    assert set(stats) == {
        "input_tokens",
        "total_output_tokens",
        "reasoning_output_tokens",
        "tokens_per_second",
        "time_to_first_token_seconds",
        "model_load_time_seconds",
    }
    assert stats["model_load_time_seconds"] == emu.counters.loads[0].seconds
    assert re.fullmatch(r"resp_[0-9a-f]{48}", body["response_id"])
    follow = http.post(
        "/api/v1/chat",
        json={
            "model": QWEN,
            "input": [{"type": "text", "content": "What is the door code?"}],
            "previous_response_id": body["response_id"],
            "store": False,
        },
    ).json()
    assert follow["output"][0]["content"] == "The door code is 7391."
    assert "response_id" not in follow
    assert "model_load_time_seconds" not in follow["stats"]
    assert emu.counters.load_count == 1


def test_v1_chat_errors_and_context_length(emu: LMStudioEmulator, http: httpx.Client) -> None:
    missing = http.post("/api/v1/chat", json={"input": "hi"})
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "missing_required_parameter"
    unknown = http.post("/api/v1/chat", json={"model": "ghost", "input": "hi"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "model_not_found"
    loaded = http.post("/api/v1/chat", json={"model": LLAMA, "input": "hi", "context_length": 9000})
    assert loaded.status_code == 200
    assert emu.loaded_instances() == {LLAMA: 9000}
    emu.load(QWEN, 32)
    overflow = http.post("/api/v1/chat", json={"model": QWEN, "input": filler_text(50)})
    assert overflow.status_code == 400
    assert "greater than the context length" in overflow.json()["error"]["message"]


def test_v1_chat_stream_events_with_jit_load(emu: LMStudioEmulator, http: httpx.Client) -> None:
    response = http.post(
        "/api/v1/chat", json={"model": QWEN, "input": "count to 3", "stream": True}
    )
    assert response.status_code == 200
    frames = sse_json(response.text)
    assert all(data["type"] == event for event, data in frames)
    events = [event for event, _ in frames]
    assert events == [
        "chat.start",
        "model_load.start",
        "model_load.progress",
        "model_load.end",
        "prompt_processing.start",
        "prompt_processing.progress",
        "prompt_processing.end",
        "message.start",
        "message.delta",
        "message.delta",
        "message.delta",
        "message.end",
        "chat.end",
    ]
    deltas = "".join(d["content"] for e, d in frames if e == "message.delta")
    assert deltas == "1 2 3"
    result = frames[-1][1]["result"]
    assert result["output"] == [{"type": "message", "content": "1 2 3"}]
    assert result["stats"]["total_output_tokens"] == 3
    assert frames[3][1]["load_time_seconds"] == result["stats"]["model_load_time_seconds"]
    second = [
        e
        for e, _ in sse_json(
            http.post("/api/v1/chat", json={"model": QWEN, "input": "x", "stream": True}).text
        )
    ]
    assert "model_load.start" not in second


def test_v1_chat_stream_load_failure(emu: LMStudioEmulator, http: httpx.Client) -> None:
    emu.fail_next_load("Operation canceled.")
    frames = sse_json(
        http.post("/api/v1/chat", json={"model": QWEN, "input": "x", "stream": True}).text
    )
    assert [e for e, _ in frames] == ["chat.start", "model_load.start", "error", "chat.end"]
    assert frames[2][1]["error"]["message"] == (
        'Failed to load model "qwen/qwen3-4b". Error: Operation canceled.'
    )


# --- faults ----------------------------------------------------------------------------------


def test_fail_next_injects_one_response(emu: LMStudioEmulator, http: httpx.Client) -> None:
    emu.fail_next(502, "<html>Bad Gateway</html>", content_type="text/html")
    broken = http.get("/v1/models")
    assert (broken.status_code, broken.text) == (502, "<html>Bad Gateway</html>")
    assert broken.headers["content-type"] == "text/html"
    assert http.get("/v1/models").status_code == 200
    emu.fail_next(500, {"error": "boom"}, path="/api/v1/models")
    assert http.get("/v1/models").status_code == 200
    assert http.get("/api/v1/models").json() == {"error": "boom"}


def test_hang_requests_until_released(emu: LMStudioEmulator, http: httpx.Client) -> None:
    emu.configure(hang_requests=True)
    with ThreadPoolExecutor(2) as pool:
        pending = [pool.submit(http.get, "/lmstudio-greeting") for _ in range(2)]
        emu.wait_for(lambda: emu.hanging == 2)
        assert not any(f.done() for f in pending)
        emu.configure(hang_requests=False)
        emu.release_hangs()
        assert [f.result(timeout=5).status_code for f in pending] == [200, 200]
    assert emu.hanging == 0


def test_hanging_request_times_out_client(emu: LMStudioEmulator) -> None:
    emu.configure(hang_requests=True)
    with httpx.Client(base_url=emu.url, timeout=0.2) as client, pytest.raises(httpx.ReadTimeout):
        client.get("/v1/models")
    emu.release_hangs()


def test_stop_drops_hung_requests(make_emulator: EmulatorFactory) -> None:
    emulator = make_emulator(hang_loads_above=8192)
    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=emulator.url, timeout=5) as client:
        hung = pool.submit(
            client.post, "/api/v1/models/load", json={"model": QWEN, "context_length": 16384}
        )
        emulator.wait_for(lambda: emulator.hanging == 1)
        emulator.stop()
        with pytest.raises(httpx.TransportError):
            hung.result(timeout=5)


def test_hang_loads_above_threshold(emu: LMStudioEmulator, http: httpx.Client) -> None:
    emu.configure(hang_loads_above=8192)
    with ThreadPoolExecutor(2) as pool, httpx.Client(base_url=emu.url) as other:
        big = [
            pool.submit(
                client.post, "/api/v1/models/load", json={"model": key, "context_length": n}
            )
            for client, key, n in ((http, QWEN, 16384), (other, LLAMA, 9000))
        ]
        emu.wait_for(lambda: emu.hanging == 2)
        counters = emu.counters
        assert (counters.in_flight, counters.max_in_flight) == (2, 2)
        v0 = {m["id"]: m for m in httpx.get(f"{emu.url}/api/v0/models").json()["data"]}
        assert v0[QWEN]["state"] == "loading"
        small = httpx.post(
            f"{emu.url}/api/v1/models/load", json={"model": GEMMA_KEY, "context_length": 4096}
        )
        assert small.status_code == 200
        emu.release_hangs()
        assert [f.result(timeout=5).status_code for f in big] == [200, 200]
    assert emu.loaded_instances() == {GEMMA_KEY: 4096, QWEN: 16384, LLAMA: 9000}
    assert emu.counters.in_flight == 0
