"""The emulator's other kinds of host: OpenAI-only, overflow as HTTP 200, another client."""

from __future__ import annotations

import json

import httpx
import pytest

from lmstrix.testing import LMStudioEmulator, filler_text
from lmstrix.testing.pytest_plugin import EmulatorFactory

LLAMA = "llama-3.2-1b-instruct"


def _chat(url: str, prompt: str, *, stream: bool = False) -> httpx.Response:
    body = {"model": LLAMA, "messages": [{"role": "user", "content": prompt}], "stream": stream}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)


def test_openai_mode_serves_only_v1(make_emulator: EmulatorFactory) -> None:
    emu = make_emulator(api_generation="openai")
    for path in ("/lmstudio-greeting", "/api/v0/models", "/api/v1/models"):
        resp = httpx.get(emu.url + path, timeout=5)
        assert resp.status_code == 404, path
        assert resp.json()["error"]["type"] == "not_found_error"
    ids = [m["id"] for m in httpx.get(emu.url + "/v1/models", timeout=5).json()["data"]]
    assert LLAMA in ids
    reply = _chat(emu.url, "hello")
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]
    assert list(emu.loaded_instances()) == [LLAMA]  # served by a JIT load


def test_overflow_as_a_200_error_body(make_emulator: EmulatorFactory) -> None:
    emu = make_emulator(overflow_as="ok_body", default_context_length=256)
    resp = _chat(emu.url, filler_text(2000))
    assert resp.status_code == 200
    assert "context length" in json.dumps(resp.json()["error"])
    streamed = _chat(emu.url, filler_text(2000), stream=True)
    assert streamed.status_code == 200
    frames = [line for line in streamed.text.splitlines() if line]
    assert len(frames) == 1 and frames[0].startswith("data:") and '"error"' in frames[0]


def test_overflow_as_an_empty_answer(make_emulator: EmulatorFactory) -> None:
    emu = make_emulator(overflow_as="empty", default_context_length=256)
    resp = _chat(emu.url, filler_text(2000))
    assert resp.status_code == 200 and resp.json()["choices"] == []
    streamed = _chat(emu.url, filler_text(2000), stream=True)
    assert streamed.status_code == 200 and streamed.text.strip() == ""


def test_another_client_unloads_as_the_chat_arrives(lmstudio_emulator: LMStudioEmulator) -> None:
    emu = lmstudio_emulator
    emu.load(LLAMA, 4096)
    emu.unload_on_next_chat(LLAMA)
    resp = httpx.post(
        f"{emu.url}/api/v0/chat/completions",
        json={"model": LLAMA, "messages": [{"role": "user", "content": "hi"}]},
        timeout=5,
    )
    assert resp.status_code == 400 and "unloaded" in resp.json()["error"]["message"]
    assert emu.loaded_instances() == {}
    assert _chat(emu.url, "hi").status_code == 200  # one-shot: the next request is served


@pytest.mark.parametrize("value", ["0.2", "lmstudio"])
def test_unknown_generation_is_refused(make_emulator: EmulatorFactory, value: str) -> None:
    with pytest.raises(ValueError, match="openai"):
        make_emulator(api_generation=value)
