"""JIT lifetime (TTL, auto-evict), the simulated and real clocks, and the counters, over HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from lmstrix.testing import (
    BackendInstance,
    Completion,
    EmulatedModel,
    LMStudioEmulator,
    RuleBackend,
    serve,
)
from lmstrix.testing.pytest_plugin import EmulatorFactory
from lmstrix.testing.rules import RuleInstance

QWEN = "qwen/qwen3-4b"
LLAMA = "llama-3.2-1b-instruct"


@pytest.fixture
def emu(lmstudio_emulator: LMStudioEmulator) -> LMStudioEmulator:
    return lmstudio_emulator


@pytest.fixture
def http(emu: LMStudioEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, timeout=5) as client:
        yield client


def chat(text: str, model: str = QWEN, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def v0_state(http: httpx.Client, key: str) -> str:
    return str(http.get(f"/api/v0/models/{key}").json()["state"])


def test_jit_ttl_expires_lazily_on_the_simulated_clock(
    emu: LMStudioEmulator, http: httpx.Client
) -> None:
    assert http.post("/v1/chat/completions", json=chat("hi", ttl=60)).status_code == 200
    emu.advance_clock(59)
    assert v0_state(http, QWEN) == "loaded"
    http.post("/v1/chat/completions", json=chat("hi again"))  # resets the idle timer
    emu.advance_clock(59)
    assert v0_state(http, QWEN) == "loaded"
    emu.advance_clock(2)
    assert v0_state(http, QWEN) == "not-loaded"
    assert [(u.instance_id, u.reason) for u in emu.counters.unloads] == [(QWEN, "ttl")]


def test_default_ttl_applies_to_jit_only(emu: LMStudioEmulator, http: httpx.Client) -> None:
    emu.load(LLAMA, 4096)  # manual lane: no TTL
    http.post("/v1/chat/completions", json=chat("hi"))
    emu.advance_clock(3599)
    assert set(emu.loaded_instances()) == {LLAMA, QWEN}
    emu.advance_clock(2)
    assert set(emu.loaded_instances()) == {LLAMA}


def test_auto_evict_keeps_one_jit_model(emu: LMStudioEmulator, http: httpx.Client) -> None:
    emu.load(LLAMA, 4096)
    http.post("/v1/chat/completions", json=chat("hi", model=QWEN))
    http.post("/v1/chat/completions", json=chat("hi", model="google/gemma-3-4b"))
    assert set(emu.loaded_instances()) == {LLAMA, "google/gemma-3-4b"}
    assert [(u.model, u.reason) for u in emu.counters.unloads] == [(QWEN, "evict")]
    emu.configure(auto_evict=False)
    http.post("/v1/chat/completions", json=chat("hi", model=QWEN))
    assert set(emu.loaded_instances()) == {LLAMA, "google/gemma-3-4b", QWEN}


def test_default_context_length_for_jit(emu: LMStudioEmulator, http: httpx.Client) -> None:
    emu.configure(default_context_length=6000)
    body = http.post("/api/v0/chat/completions", json=chat("hi")).json()
    assert body["model_info"]["context_length"] == 6000
    http.post(
        "/v1/embeddings", json={"model": "text-embedding-nomic-embed-text-v1.5", "input": "x"}
    )
    assert emu.loaded_instances()["text-embedding-nomic-embed-text-v1.5"] == 2048  # capped at max


def test_simulated_seconds_add_up(emu: LMStudioEmulator, http: httpx.Client) -> None:
    emu.configure(
        load_seconds=1.0,
        load_seconds_per_1k_tokens=0.5,
        prompt_tokens_per_second=100.0,
        tokens_per_second=10.0,
    )
    load = http.post("/api/v1/models/load", json={"model": QWEN, "context_length": 2000}).json()
    assert load["load_time_seconds"] == pytest.approx(2.0)
    body = http.post("/api/v0/chat/completions", json=chat("count to 5")).json()
    prompt = body["usage"]["prompt_tokens"]
    assert body["stats"]["time_to_first_token"] == pytest.approx(prompt / 100, abs=1e-3)
    assert body["stats"]["generation_time"] == pytest.approx(0.5)
    assert emu.simulated_seconds == pytest.approx(2.0 + prompt / 100 + 0.5)


def test_real_clock_sleeps_scaled(make_emulator: EmulatorFactory) -> None:
    emulator = make_emulator(clock="real", time_scale=0.0, load_seconds=1000.0)
    with httpx.Client(base_url=emulator.url, timeout=5) as client:
        assert client.post("/v1/chat/completions", json=chat("hi")).status_code == 200
    assert emulator.simulated_seconds > 1000


def test_counters(emu: LMStudioEmulator, http: httpx.Client) -> None:
    http.get("/v1/models")
    http.post("/v1/chat/completions", json=chat("hi"))
    http.post("/api/v0/chat/completions", json=chat("hi"))
    http.post("/api/v1/models/load", json={"model": LLAMA, "context_length": 8000})
    http.post("/api/v1/models/load", json={"model": LLAMA, "context_length": 4000})
    http.get("/nowhere")
    counters = emu.counters
    assert counters.requests_by_endpoint == {
        "GET /v1/models": 1,
        "POST /v1/chat/completions": 1,
        "POST /api/v0/chat/completions": 1,
        "POST /api/v1/models/load": 2,
        "unknown": 1,
    }
    assert counters.requests_by_model == {QWEN: 2}
    assert counters.loads_by_model() == {QWEN: [4096], LLAMA: [8000, 4000]}
    assert counters.inferences == 2
    assert (counters.in_flight, counters.max_in_flight) == (0, 1)
    emu.reset_counters()
    fresh = emu.counters
    assert (fresh.load_count, fresh.inferences, sum(fresh.requests_by_endpoint.values())) == (
        0,
        0,
        0,
    )


class GatedBackend(RuleBackend):
    """Rule-based answers, but every completion waits at a gate the test opens."""

    def __init__(self) -> None:
        self.gate = threading.Event()

    def load(self, model: EmulatedModel, context_length: int) -> BackendInstance:
        inner = super().load(model, context_length)
        gate = self.gate

        class Gated(RuleInstance):
            def complete(self, *args: Any, **kwargs: Any) -> Completion:
                gate.wait(5)
                return inner.complete(*args, **kwargs)

        return Gated(model, context_length)


def test_concurrent_inference_is_visible_in_max_in_flight(make_emulator: EmulatorFactory) -> None:
    backend = GatedBackend()
    emulator = make_emulator(backend=backend)
    emulator.load(QWEN, 4096)
    emulator.load(LLAMA, 4096)
    with ThreadPoolExecutor(2) as pool, httpx.Client(base_url=emulator.url) as client:
        calls = [
            pool.submit(client.post, "/v1/chat/completions", json=chat("2+2=", model=key))
            for key in (QWEN, LLAMA)
        ]
        emulator.wait_for(lambda: emulator.counters.in_flight == 2)
        backend.gate.set()
        assert [c.result(timeout=5).status_code for c in calls] == [200, 200]
    assert (emulator.counters.in_flight, emulator.counters.max_in_flight) == (0, 2)


def test_sequential_calls_never_overlap(emu: LMStudioEmulator, http: httpx.Client) -> None:
    with ThreadPoolExecutor(1) as pool:
        for _ in range(5):
            pool.submit(http.post, "/v1/chat/completions", json=chat("2+2=")).result()
    assert emu.counters.max_in_flight == 1


def test_several_emulators_are_independent(make_emulator: EmulatorFactory) -> None:
    one, two = make_emulator(), make_emulator(api_generation="0.3")
    assert one.port != two.port
    assert "models" in httpx.get(f"{one.url}/api/v1/models").json()
    assert "error" in httpx.get(f"{two.url}/api/v1/models").json()


def test_configure_rejects_unknown_settings(emu: LMStudioEmulator) -> None:
    with pytest.raises(TypeError, match="jitt"):
        emu.configure(jitt=False)
    with pytest.raises(ValueError):
        emu.configure(api_generation="0.5")
    with pytest.raises(TypeError):
        LMStudioEmulator(nope=1)


def test_serve_runs_until_stopped() -> None:
    lines: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=serve, kwargs={"port": 0, "echo": lines.append, "stop": stop, "jit": False}
    )
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not lines and time.monotonic() < deadline:
            time.sleep(0.005)
        url = lines[0].split()[5]
        assert httpx.get(f"{url}/lmstudio-greeting").json() == {"lmstudio": True}
        assert httpx.get(f"{url}/v1/models").json()["data"] == []  # settings passed through
    finally:
        stop.set()
        thread.join(5)
    assert lines[-1] == "LM Studio emulator stopped"
