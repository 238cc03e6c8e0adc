"""The LM Studio emulator with the real model behind it: LM Studio's API, llama.cpp's numbers.

The API shapes (load, load_config, v0 stats, overflow wording) are the emulator's; what these
tests check is that the numbers in them are the real model's: applied context as llama.cpp
applied it, token counts from its tokenizer, measured timings, real overflow.
"""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest
from helpers.real_model_timing import TimedBackend

from lmstrix.testing.emulator import LMStudioEmulator
from lmstrix.testing.pytest_plugin import EmulatorFactory
from lmstrix.testing.real_model import SMOLLM2_KEY, RealModelBackend, smollm2_model

pytestmark = pytest.mark.real_model

CAPITAL = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


def load(http: httpx.Client, context_length: int) -> dict[str, Any]:
    reply = http.post(
        "/api/v1/models/load",
        json={"model": SMOLLM2_KEY, "context_length": context_length, "echo_load_config": True},
    )
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def port_open(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def emulator(make_emulator: EmulatorFactory, real_backend: RealModelBackend) -> LMStudioEmulator:
    return make_emulator([smollm2_model()], backend=real_backend, jit=False)


def test_load_then_v0_chat_gives_real_usage_and_stats(
    make_emulator: EmulatorFactory, real_backend: RealModelBackend
) -> None:
    timed = TimedBackend(real_backend)  # keeps the answers llama.cpp gave, with its timings
    emulator = make_emulator([smollm2_model()], backend=timed, jit=False)
    # A simulated pace of 1 token/s: stats from it would read 1 s per token.
    emulator.configure(tokens_per_second=1.0, prompt_tokens_per_second=1.0)
    with httpx.Client(base_url=emulator.url, trust_env=False, timeout=60) as http:
        loaded = load(http, 2048)
        assert loaded["status"] == "loaded"
        assert loaded["load_config"]["context_length"] == 2048
        (instance,) = real_backend.instances
        assert instance.applied_context == 2048
        expected_prompt = instance.count_prompt_tokens(CAPITAL)

        listed = http.get("/api/v1/models").json()
        (entry,) = [m for m in listed["models"] if m["key"] == SMOLLM2_KEY]
        assert [i["config"]["context_length"] for i in entry["loaded_instances"]] == [2048]

        reply = http.post(
            "/api/v0/chat/completions",
            json={"model": SMOLLM2_KEY, "messages": CAPITAL, "max_tokens": 32, "temperature": 0},
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
    choice = body["choices"][0]
    assert "paris" in choice["message"]["content"].lower()
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] == expected_prompt > 0
    assert 0 < usage["completion_tokens"] < 32
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # The stats are llama.cpp's own timings of this answer, not the simulated pace.
    (answer,) = timed.instances[0].answers
    assert answer.prompt_seconds is not None and answer.generation_seconds is not None
    assert answer.completion_tokens == usage["completion_tokens"]
    stats = body["stats"]
    assert stats["time_to_first_token"] == round(answer.prompt_seconds, 3)
    assert stats["generation_time"] == round(answer.generation_seconds, 3) > 0
    assert stats["tokens_per_second"] == answer.completion_tokens / answer.generation_seconds
    assert body["model_info"]["context_length"] == 2048
    assert body["model_info"]["quant"] == "Q4_1"


def test_overlong_prompt_gives_lm_studio_overflow_with_real_numbers(
    emulator: LMStudioEmulator, real_backend: RealModelBackend
) -> None:
    with httpx.Client(base_url=emulator.url, trust_env=False, timeout=60) as http:
        load(http, 2048)
        (instance,) = real_backend.instances
        messages = [{"role": "user", "content": "hello" + " hello" * 2100}]
        real_tokens = instance.count_prompt_tokens(messages)
        assert real_tokens > 2048
        reply = http.post(
            "/api/v0/chat/completions",
            json={"model": SMOLLM2_KEY, "messages": messages, "max_tokens": 8},
        )
    assert reply.status_code == 400
    assert reply.json() == {
        "error": (
            "The number of tokens to keep from the initial prompt is greater than the context "
            f"length (n_keep: {real_tokens}>= n_ctx: 2048). Try to load the model with a larger "
            "context length, or provide a shorter input."
        )
    }


def test_applied_context_is_llama_cpps_and_unload_frees(
    emulator: LMStudioEmulator, real_backend: RealModelBackend
) -> None:
    with httpx.Client(base_url=emulator.url, trust_env=False, timeout=60) as http:
        loaded = load(http, 300)  # llama.cpp rounds up to a multiple of 256
        assert loaded["load_config"]["context_length"] == 512
        (instance,) = real_backend.instances
        url = instance.url
        assert port_open(url)
        reply = http.post("/api/v1/models/unload", json={"instance_id": loaded["instance_id"]})
        assert reply.status_code == 200
    assert instance.closed and real_backend.instances == [] and not port_open(url)
