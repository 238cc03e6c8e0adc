"""The real-model backend (llama.cpp via xllamacpp, SmolLM2-135M) and the plain llama.cpp server.

The first tests need nothing installed. The rest use the real model and skip with the install
hint when the optional wheels are missing (``scripts/install-real-model.sh``). The model's wording
is never asserted beyond "Paris", which SmolLM2 says at temperature 0 on this build.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.real_model_timing import tokens_in_slot

from lmstrix.testing.backend import ContextOverflow, LoadFailure
from lmstrix.testing.llama_server import (
    LlamaServer,
    LlamaServerError,
    llama_cpp_context,
    read_gguf_context_length,
)
from lmstrix.testing.real_model import (
    SMOLLM2_KEY,
    RealModelBackend,
    RealModelError,
    RealModelInstance,
    find_smollm2_gguf,
    real_model_available,
    real_model_unavailable_reason,
    smollm2_model,
)

CAPITAL = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]

needs_real_model = pytest.mark.skipif(
    not real_model_available(),
    reason=f"real model not installed: {real_model_unavailable_reason()}",
)


def hello_prompt(extra: int) -> list[dict[str, Any]]:
    """A chat whose templated length grows by exactly one token per extra " hello"."""
    return [{"role": "user", "content": "hello" + " hello" * extra}]


def port_open(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def backend() -> Iterator[RealModelBackend]:
    if not real_model_available():
        pytest.skip(f"real model not installed: {real_model_unavailable_reason()}")
    with RealModelBackend(max_instances=3) as real:
        yield real


@pytest.fixture(scope="module")
def inst2048(backend: RealModelBackend) -> Iterator[RealModelInstance]:
    with backend.load(smollm2_model(), 2048) as instance:
        yield instance


# -- without the wheels ----------------------------------------------------------------------


def _gguf(path: Path, kvs: list[tuple[str, int, bytes]]) -> Path:
    def string(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    body = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs))
    for key, kind, value in kvs:
        body += string(key) + struct.pack("<I", kind) + value
    path.write_bytes(body)
    return path


def test_gguf_reader_finds_the_architecture_context(tmp_path: Path) -> None:
    def s(text: str) -> bytes:
        return struct.pack("<Q", len(text)) + text.encode()

    path = _gguf(
        tmp_path / "m.gguf",
        [
            ("general.architecture", 8, s("qwen2")),
            ("general.tags", 9, struct.pack("<IQ", 8, 2) + s("a") + s("bc")),
            ("general.ids", 9, struct.pack("<IQ", 5, 3) + struct.pack("<3i", 1, 2, 3)),
            ("llama.context_length", 4, struct.pack("<I", 111)),  # other arch: ignored
            ("qwen2.context_length", 10, struct.pack("<Q", 32768)),
        ],
    )
    assert read_gguf_context_length(path) == 32768


def test_gguf_reader_returns_none_for_garbage(tmp_path: Path) -> None:
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf at all")
    assert read_gguf_context_length(tmp_path / "bad.gguf") is None
    assert read_gguf_context_length(tmp_path / "missing.gguf") is None
    truncated = _gguf(tmp_path / "t.gguf", [("general.architecture", 8, b"\xff" * 4)])
    assert read_gguf_context_length(truncated) is None


def test_llama_cpp_context_rounds_up_to_256() -> None:
    assert [llama_cpp_context(n) for n in (1, 255, 256, 257, 300, 3000, 8192)] == [
        256,
        256,
        256,
        512,
        512,
        3072,
        8192,
    ]
    with pytest.raises(ValueError):
        llama_cpp_context(0)


def test_smollm2_model_describes_the_real_weights() -> None:
    model = smollm2_model()
    assert model.key == SMOLLM2_KEY == "smollm2-135m-instruct"
    assert (model.architecture, model.quantization, model.bits_per_weight) == ("llama", "Q4_1", 4)
    assert (model.format, model.params_string, model.max_context_length) == ("gguf", "135M", 8192)
    assert not (model.vision or model.tool_use or model.reasoning)
    assert model.loadable_limit is None and model.usable_limit is None
    path = find_smollm2_gguf()
    if path is not None:
        assert model.size_bytes == path.stat().st_size == 98_362_432


def test_unavailable_reason_names_the_install_script(monkeypatch: pytest.MonkeyPatch) -> None:
    import lmstrix.testing.real_model as real_model

    monkeypatch.setattr(real_model, "find_smollm2_gguf", lambda: None)
    monkeypatch.setattr(real_model, "xllamacpp_installed", lambda: True)
    reason = real_model_unavailable_reason()
    assert reason is not None and "install-real-model.sh" in reason and "--no-deps" in reason
    assert not real_model_available()


def test_llama_server_rejects_bad_sizes_before_touching_llama_cpp() -> None:
    with pytest.raises(ValueError):
        LlamaServer(0)
    server = LlamaServer(512)
    with pytest.raises(LlamaServerError, match="not running"):
        _ = server.url


# -- the backend with the real model ---------------------------------------------------------


@needs_real_model
@pytest.mark.real_model
@pytest.mark.parametrize(
    ("requested", "applied"),
    [(100, 256), (256, 256), (300, 512), (2048, 2048), (3000, 3072), (9000, 8192)],
)
def test_load_reports_what_llama_cpp_applied(
    backend: RealModelBackend, requested: int, applied: int
) -> None:
    with backend.load(smollm2_model(), requested) as instance:
        assert instance.requested_context == requested
        assert instance.applied_context == applied
        assert instance.train_context == 8192
        assert isinstance(instance.load_seconds, float) and instance.load_seconds > 0  # measured
    assert backend.train_context == 8192
    # Above the training context the request is clamped before loading (no 9000-token KV cache).
    assert backend.context_to_request(9000) == 8192


@needs_real_model
@pytest.mark.real_model
def test_round_down_never_applies_more_than_requested() -> None:
    with RealModelBackend(round_down=True) as backend:
        for requested, applied in [(300, 256), (100, 256), (3000, 2816), (2048, 2048)]:
            with backend.load(smollm2_model(), requested) as instance:
                assert instance.applied_context == applied


@needs_real_model
@pytest.mark.real_model
def test_real_answer_with_real_counts_and_timings(inst2048: RealModelInstance) -> None:
    prompt_tokens = inst2048.count_prompt_tokens(CAPITAL)
    answer = inst2048.complete(CAPITAL, max_tokens=32, temperature=0)
    assert answer.text.strip()
    assert "paris" in answer.text.lower()
    assert answer.finish_reason == "stop"
    assert answer.prompt_tokens == prompt_tokens > 0
    assert 0 < answer.completion_tokens < 32
    assert answer.prompt_seconds is not None and answer.prompt_seconds > 0
    assert answer.generation_seconds is not None and answer.generation_seconds > 0


@needs_real_model
@pytest.mark.real_model
def test_max_tokens_ends_with_length(inst2048: RealModelInstance) -> None:
    answer = inst2048.complete(
        [{"role": "user", "content": "Write a long story about a dragon."}],
        max_tokens=3,
        temperature=0.7,
        top_p=0.9,
        top_k=20,
        seed=7,
    )
    assert (answer.finish_reason, answer.completion_tokens) == ("length", 3)


@needs_real_model
@pytest.mark.real_model
def test_stop_sequence_is_passed_through(inst2048: RealModelInstance) -> None:
    messages = [{"role": "user", "content": "Name three colors."}]
    full = inst2048.complete(messages, max_tokens=24, temperature=0)
    cut = inst2048.complete(messages, max_tokens=24, temperature=0, stop=["\n"])
    assert "\n" in full.text  # "1. Red\n2. Blue\n3. Green" on this build
    assert "\n" not in cut.text and cut.completion_tokens < full.completion_tokens


@needs_real_model
@pytest.mark.real_model
def test_token_count_matches_usage_for_a_conversation(inst2048: RealModelInstance) -> None:
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    counted = inst2048.count_prompt_tokens(chat)
    assert inst2048.complete(chat, max_tokens=1).prompt_tokens == counted
    # One token per extra " hello": what the overflow tests below build on.
    assert inst2048.count_prompt_tokens(hello_prompt(10)) == (
        inst2048.count_prompt_tokens(hello_prompt(0)) + 10
    )


@needs_real_model
@pytest.mark.real_model
def test_overflow_raises_context_overflow_with_real_numbers(backend: RealModelBackend) -> None:
    with backend.load(smollm2_model(), 300) as instance:  # llama.cpp applies 512
        before = instance.complete(hello_prompt(0), max_tokens=4, temperature=0)
        held = tokens_in_slot(instance)  # that prompt and (all but the last of) its answer
        assert before.prompt_tokens < held <= before.prompt_tokens + before.completion_tokens
        messages = hello_prompt(600)
        counted = instance.count_prompt_tokens(messages)
        assert counted > 600
        with pytest.raises(ContextOverflow) as caught:
            instance.complete(messages, max_tokens=8)
        assert (caught.value.prompt_tokens, caught.value.context_length) == (counted, 512)
        # Rejected before any decoding: llama.cpp's slot still holds just the previous answer,
        # none of the overflowing prompt and no generated token.
        assert tokens_in_slot(instance) == held


@needs_real_model
@pytest.mark.real_model
def test_overflow_boundary_is_prompt_equal_to_context(backend: RealModelBackend) -> None:
    with backend.load(smollm2_model(), 256) as instance:
        base = instance.count_prompt_tokens(hello_prompt(0))
        exactly = hello_prompt(256 - base)
        assert instance.count_prompt_tokens(exactly) == 256
        with pytest.raises(ContextOverflow) as caught:
            instance.complete(exactly, max_tokens=8)
        assert (caught.value.prompt_tokens, caught.value.context_length) == (256, 256)
        # One token less fits; generation stops at the context edge instead of being rejected.
        answer = instance.complete(hello_prompt(255 - base), max_tokens=8)
        assert (answer.prompt_tokens, answer.completion_tokens) == (255, 1)
        assert answer.finish_reason == "length"


@needs_real_model
@pytest.mark.real_model
def test_close_frees_the_server_and_instance_limit() -> None:
    backend = RealModelBackend(max_instances=2)
    first = backend.load(smollm2_model(), 512)
    second = backend.load(smollm2_model(), 1024)
    try:
        assert {first.applied_context, second.applied_context} == {512, 1024}
        assert first.url != second.url
        assert port_open(first.url) and port_open(second.url)
        with pytest.raises(LoadFailure, match="at most 2 instances"):
            backend.load(smollm2_model(), 512)
        url = first.url
        first.close()
        first.close()  # idempotent
        assert first.closed and first not in backend.instances
        assert not port_open(url)
        with pytest.raises(RealModelError, match="unloaded"):
            first.complete(CAPITAL, max_tokens=4)
        with pytest.raises(RealModelError, match="unloaded"):
            first.count_prompt_tokens(CAPITAL)
        # The other instance is untouched, and the freed slot can be used again.
        assert second.complete(CAPITAL, max_tokens=4).completion_tokens > 0
        third = backend.load(smollm2_model(), 256)
        third.close()
    finally:
        backend.close()
    assert backend.instances == []


@needs_real_model
@pytest.mark.real_model
def test_backend_close_unloads_everything() -> None:
    backend = RealModelBackend()
    one = backend.load(smollm2_model(), 256)
    url = one.url
    backend.close()
    assert one.closed and backend.instances == [] and not port_open(url)


@needs_real_model
@pytest.mark.real_model
def test_load_failures(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"x" * 100)
    with RealModelBackend(gguf_path=bogus) as backend:
        assert backend.train_context is None
        with pytest.raises(LoadFailure, match="Failed to load model smollm2-135m-instruct"):
            backend.load(smollm2_model(), 512)
        with pytest.raises(LoadFailure, match="at least 1"):
            backend.load(smollm2_model(), 0)
        assert backend.instances == []


# -- the plain llama.cpp HTTP server ---------------------------------------------------------


@needs_real_model
@pytest.mark.real_model
def test_plain_llama_server_speaks_openai_and_returns_llama_cpp_overflow() -> None:
    with LlamaServer(512) as server, httpx.Client(base_url=server.url, trust_env=False) as http:
        assert server.n_ctx == 512 and server.n_ctx_train == 8192
        assert http.get("/health").status_code == 200
        models = http.get("/v1/models").json()
        assert models["data"][0]["id"] == "smollm2-135m-instruct"
        assert models["data"][0]["meta"]["n_ctx"] == 512

        reply = http.post(
            "/v1/chat/completions",
            json={"model": "anything", "messages": CAPITAL, "max_tokens": 16, "temperature": 0},
        )
        assert reply.status_code == 200
        body = reply.json()
        assert body["choices"][0]["message"]["content"].strip()
        assert body["choices"][0]["finish_reason"] in {"stop", "length"}
        assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["completion_tokens"] > 0

        overflow = http.post(
            "/v1/chat/completions",
            json={"messages": hello_prompt(600), "max_tokens": 4},
        )
        assert overflow.status_code == 400
        error = overflow.json()["error"]
        assert error["type"] == "exceed_context_size_error"
        assert error["code"] == 400 and error["n_ctx"] == 512
        assert error["n_prompt_tokens"] == len(
            server.tokenize(server.apply_template(hello_prompt(600)))
        )
        assert "exceeds the available context size (512 tokens)" in error["message"]
        url = server.url
    assert not port_open(url) and not server.running


@needs_real_model
@pytest.mark.real_model
def test_plain_llama_server_caps_at_training_context() -> None:
    with LlamaServer(9000) as server:
        assert server.n_ctx == 8192


@needs_real_model
@pytest.mark.real_model
def test_llama_server_runs_as_a_process_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmstrix.testing.llama_server", "--ctx-size", "300"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "server did not print its address"
        url, n_ctx = proc.stdout.readline().split()
        assert n_ctx == "n_ctx=512"
        assert (
            httpx.get(url + "/v1/models", trust_env=False).json()["data"][0]["meta"]["n_ctx"] == 512
        )
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert not port_open(url)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
