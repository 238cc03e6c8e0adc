"""The emulator's parallel slots over HTTP: ``parallel`` per loaded instance, requests beyond
it waiting their turn, the throughput curve, and the counters tests rely on (requests at once
per instance, loads at once, unloads under running requests)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from lmstrix.testing.pytest_plugin import EmulatorFactory
from lmstrix.testing.slots import per_request_speed

QWEN = "qwen/qwen3-4b"
LLAMA = "llama-3.2-1b-instruct"
LONG = "say " + " ".join(f"w{i}" for i in range(8))


def chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": LONG}], "max_tokens": 32}


def config_of(client: httpx.Client, key: str) -> dict[str, Any]:
    models = client.get("/api/v1/models").json()["models"]
    (entry,) = [m for m in models if m["key"] == key]
    (inst,) = entry["loaded_instances"]
    return dict(inst["config"])


@pytest.mark.parametrize(("parallel", "requests"), [(2, 6), (4, 4), (1, 3)])
def test_an_instance_serves_at_most_its_parallel_slots_at_once(
    make_emulator: EmulatorFactory, parallel: int, requests: int
) -> None:
    emu = make_emulator(clock="real", tokens_per_second=20.0)
    with httpx.Client(base_url=emu.url, timeout=30) as client:
        loaded = client.post("/api/v1/models/load", json={"model": QWEN, "parallel": parallel})
        assert loaded.status_code == 200
        assert config_of(client, QWEN)["parallel"] == parallel
        with ThreadPoolExecutor(requests) as pool:
            calls = [
                pool.submit(client.post, "/v1/chat/completions", json=chat(QWEN))
                for _ in range(requests)
            ]
            assert [c.result(timeout=30).status_code for c in calls] == [200] * requests
    counters = emu.counters
    assert counters.max_concurrency == {QWEN: min(parallel, requests)}
    assert counters.inferences == requests


def test_the_default_parallel_is_reported_and_used(make_emulator: EmulatorFactory) -> None:
    emu = make_emulator(default_parallel=3)
    emu.load(QWEN, 4096)
    with httpx.Client(base_url=emu.url) as client:
        assert config_of(client, QWEN)["parallel"] == 3


def test_the_throughput_curve() -> None:
    assert per_request_speed(50.0, 1, 0.0) == per_request_speed(50.0, 1, 1.0) == 50.0
    assert per_request_speed(50.0, 4, 1.0) == 50.0  # linear: each as fast as alone
    assert per_request_speed(50.0, 4, 0.0) == 12.5  # flat: one request's speed, shared
    assert per_request_speed(40.0, 3, 0.5) == pytest.approx(40.0 * 2.0 / 3)


def test_a_flat_curve_makes_concurrent_answers_slower(make_emulator: EmulatorFactory) -> None:
    emu = make_emulator(clock="real", tokens_per_second=20.0, parallel_efficiency=0.0)
    emu.load(QWEN, 4096)
    with httpx.Client(base_url=emu.url, timeout=30) as client:
        alone = client.post("/api/v0/chat/completions", json=chat(QWEN)).json()
        with ThreadPoolExecutor(4) as pool:
            calls = [
                pool.submit(client.post, "/api/v0/chat/completions", json=chat(QWEN))
                for _ in range(4)
            ]
            shared = [c.result(timeout=30).json() for c in calls]
    # the emulator's own stats (computed, not measured): some request ran at a quarter speed
    speed = alone["stats"]["tokens_per_second"]
    assert min(s["stats"]["tokens_per_second"] for s in shared) < speed


def test_loads_at_once_and_unloads_under_running_requests_are_counted(
    make_emulator: EmulatorFactory,
) -> None:
    emu = make_emulator(clock="real", load_seconds=0.3, tokens_per_second=10.0)
    with ThreadPoolExecutor(2) as pool:
        loads = [pool.submit(emu.load, key, 4096) for key in (QWEN, LLAMA)]
        for f in loads:
            f.result(timeout=30)
    assert emu.counters.max_loads_in_flight == 2
    with httpx.Client(base_url=emu.url, timeout=30) as client, ThreadPoolExecutor(1) as pool:
        running = pool.submit(client.post, "/v1/chat/completions", json=chat(QWEN))
        emu.wait_for(lambda: emu.counters.in_flight == 1)
        emu.unload(QWEN)
        running.result(timeout=30)
    assert emu.counters.unloads_while_busy == 1
