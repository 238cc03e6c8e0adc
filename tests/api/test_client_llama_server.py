"""The client against a plain OpenAI-compatible server: llama.cpp's own, with a real model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lmstrix.api.client import LMStudioClient
from lmstrix.api.exceptions import ContextLimitExceededError, UnsupportedEndpointError
from lmstrix.domain.host_types import ApiGeneration
from lmstrix.testing.real_model import real_model_unavailable_reason

pytestmark = pytest.mark.real_model

_reason = real_model_unavailable_reason()


@pytest.fixture(scope="module")
def llama_url() -> Iterator[str]:
    if _reason:
        pytest.skip(_reason)
    from lmstrix.testing.llama_server import LlamaServer

    with LlamaServer(512) as server:
        yield server.url


def test_scan_lists_the_one_loaded_model(llama_url: str) -> None:
    with LMStudioClient(llama_url, max_retries=0) as client:
        assert client.api_generation is ApiGeneration.OPENAI
        assert client.greeting() is False
        models = client.list_models()
    assert len(models) == 1
    m = models[0]
    assert m.key == "smollm2-135m-instruct"
    assert m.max_context_length == 8192  # the training context llama.cpp reports
    assert [i.context_length for i in m.loaded_instances] == [512]


def test_inference_through_the_v1_fallback(llama_url: str) -> None:
    with LMStudioClient(llama_url, max_retries=0) as client:
        r = client.chat_completion(
            "smollm2-135m-instruct", "What is 2+2?", max_tokens=8, temperature=0
        )
    assert r.endpoint == "/v1/chat/completions"
    assert r.timing_source == "client"
    assert r.content
    assert r.prompt_tokens and r.prompt_tokens > 5
    assert r.completion_tokens and 0 < r.completion_tokens <= 8
    assert r.total_tokens == r.prompt_tokens + r.completion_tokens
    assert r.wall_time > 0 and r.tokens_per_second and r.tokens_per_second > 0


def test_streaming_counts_usage(llama_url: str) -> None:
    pieces: list[str] = []
    with LMStudioClient(llama_url, max_retries=0) as client:
        r = client.chat_completion(
            "smollm2-135m-instruct",
            "Name three colors.",
            max_tokens=12,
            temperature=0,
            stream=True,
            on_token=pieces.append,
        )
    assert "".join(pieces) == r.content and r.content
    assert r.time_to_first_token is not None and r.time_to_first_token > 0
    assert r.completion_tokens and r.completion_tokens <= 12


def test_overflow_maps_with_real_token_counts(llama_url: str) -> None:
    with (
        LMStudioClient(llama_url, max_retries=0) as client,
        pytest.raises(ContextLimitExceededError) as exc,
    ):
        client.chat_completion("smollm2-135m-instruct", "hello " * 700, max_tokens=4)
    assert exc.value.context_limit == 512
    assert exc.value.prompt_tokens is not None and exc.value.prompt_tokens > 512


def test_load_is_refused_with_a_clear_message(llama_url: str) -> None:
    with (
        LMStudioClient(llama_url, max_retries=0) as client,
        pytest.raises(UnsupportedEndpointError, match="OpenAI-compatible server"),
    ):
        client.load("smollm2-135m-instruct", 2048)
