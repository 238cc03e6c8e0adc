"""Every error body of the LM Studio reference (section 3) maps to a typed exception."""

from __future__ import annotations

from typing import Any

import pytest

from lmstrix.api.error_mapping import extract_error, to_exception
from lmstrix.api.exceptions import (
    ContextLimitExceededError,
    InferenceError,
    LMStudioAuthError,
    LMStudioServerError,
    ModelLoadError,
    ModelNotFoundError,
    UnsupportedEndpointError,
)

HOST = "http://studio:1234"


def mapped(body: Any, status: int = 400, **kw: Any) -> Exception:
    err = extract_error(body)
    assert err is not None, body
    return to_exception(err, status=status, host_url=HOST, **kw)


@pytest.mark.parametrize(
    ("body", "prompt", "ctx"),
    [
        (
            {
                "error": "The number of tokens to keep from the initial prompt is greater than the "
                "context length (n_keep: 13055>= n_ctx: 4096). Try to load the model with a "
                "larger context length, or provide a shorter input."
            },
            13055,
            4096,
        ),
        (
            {
                "error": "The number of tokens to keep from the initial prompt is greater than "
                "the context length."
            },
            None,
            None,
        ),
        (
            {
                "error": "Trying to keep the first 15857 tokens when context the overflows. "
                "However, the model is loaded with context length of only 4096 tokens, which is "
                "not enough. Try to load the model with a larger context length, or provide a "
                "shorter input."
            },
            15857,
            4096,
        ),
        (
            {
                "error": {
                    "message": "Input does not fit in context length. The input has 31430 "
                    "tokens, but the context length only supports 30000 tokens."
                },
                "message": "Input does not fit in context length. The input has 31430 tokens, "
                "but the context length only supports 30000 tokens.",
            },
            31430,
            30000,
        ),
        ({"error": "Context size has been exceeded"}, None, None),
        (
            {
                "error": {
                    "code": 400,
                    "message": "request (2324 tokens) exceeds the available context size "
                    "(512 tokens), try increasing it",
                    "type": "exceed_context_size_error",
                    "n_prompt_tokens": 2324,
                    "n_ctx": 512,
                }
            },
            2324,
            512,
        ),
        (
            {
                "error": {
                    "message": "This model's maximum context length is 512 tokens. However, you "
                    "requested 520 tokens (512 in the messages, 8 in the completion). Please "
                    "reduce the length of the messages or completion.",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            },
            520,
            512,
        ),
    ],
)
def test_every_overflow_wording(body: Any, prompt: int | None, ctx: int | None) -> None:
    exc = mapped(body, model="m", context_length=4096 if ctx is None else None)
    assert isinstance(exc, ContextLimitExceededError)
    assert exc.prompt_tokens == prompt
    assert exc.context_limit == (ctx or 4096)
    assert exc.model_id == "m"
    assert "do not fit" in str(exc)


def test_invalid_model_identifier_lists_suggestions() -> None:
    exc = mapped(
        {
            "error": {
                "message": 'Invalid model identifier "o4-mini". Please specify a valid downloaded '
                "model (e.g., qwen3-8b, gemma-3-1b, llama-3.2-3b-instruct).",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
        }
    )
    assert isinstance(exc, ModelNotFoundError)
    assert exc.model_id == "o4-mini"
    assert exc.suggestions == ["qwen3-8b", "gemma-3-1b", "llama-3.2-3b-instruct"]
    assert exc.host_url == HOST


def test_old_model_not_found_lists_your_models() -> None:
    exc = mapped(
        {
            "error": {
                "message": 'Model "local model" not found. Please specify a valid model.\n\n'
                "Your models:\n\nalpha-7b\nbeta-3b",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
        },
        status=404,
    )
    assert isinstance(exc, ModelNotFoundError)
    assert exc.model_id == "local model"
    assert exc.suggestions == ["alpha-7b", "beta-3b"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (
            {
                "error": "No models loaded. Please load a model in the developer page or use the "
                "'lms load' command."
            },
            400,
        ),
        (
            {
                "error": {
                    "message": "Multiple models are loaded. Please specify a model...",
                    "type": "invalid_request_error",
                    "param": "model",
                    "code": "model_not_found",
                }
            },
            404,
        ),
        (
            {
                "error": {
                    "type": "model_not_found",
                    "message": "Model totally/made-up-9000 not found in downloaded models",
                }
            },
            404,
        ),
    ],
)
def test_other_not_found_shapes(body: Any, status: int) -> None:
    exc = mapped(body, status=status, model="x")
    assert isinstance(exc, ModelNotFoundError)


@pytest.mark.parametrize(
    ("message", "needle", "model"),
    [
        (
            'Failed to load model "gemma4unc". Error: Model loading was stopped due to '
            "insufficient system resources. Under the current settings, this model requires "
            "approximately 14.36 GB of memory, and continuing to load it would likely overload "
            "your system and cause it to freeze.",
            "insufficient system resources",
            "gemma4unc",
        ),
        (
            'Failed to load model "gpt-oss-20b". Error: Error loading model.',
            "Error loading",
            "gpt-oss-20b",
        ),
        ("No LM Runtime found for model format 'gguf'", "No LM Runtime", "asked"),
    ],
)
def test_load_failures(message: str, needle: str, model: str) -> None:
    exc = mapped({"error": {"message": message, "type": "invalid_request_error"}}, model="asked")
    assert isinstance(exc, ModelLoadError)
    assert needle in exc.reason
    assert exc.model_id == model
    assert not exc.reason.startswith("Failed to load model")


def test_insufficient_resources_flag() -> None:
    exc = mapped(
        {
            "error": "Model loading was stopped due to insufficient system resources. Continuing "
            "to load the model would likely overload your system."
        }
    )
    assert isinstance(exc, ModelLoadError) and exc.insufficient_resources


def test_missing_token_and_wrong_token() -> None:
    body = {
        "error": {
            "type": "invalid_request",
            "code": "invalid_api_key",
            "message": "An LM Studio API token is required to make requests to this server, but "
            "none was provided using the Authorization header using the 'Bearer' scheme.",
        }
    }
    missing = mapped(body, status=401)
    assert isinstance(missing, LMStudioAuthError) and not missing.token_sent
    assert "LM_API_TOKEN" in str(missing)
    wrong = mapped(body, status=401, token_sent=True)
    assert isinstance(wrong, LMStudioAuthError) and wrong.token_sent
    assert "rejected" in str(wrong)


def test_unknown_endpoint_names_the_version() -> None:
    exc = mapped({"error": "Unexpected endpoint or method. (POST /api/v1/models/load)"}, 200)
    assert isinstance(exc, UnsupportedEndpointError)
    assert "0.4.0" in str(exc)


def test_unclassified_is_inference_error_with_status() -> None:
    exc = mapped({"error": {"message": "boom"}}, status=400, model="m")
    assert type(exc) is InferenceError
    assert "HTTP 400" in str(exc) and exc.model_id == "m"


def test_unclassified_5xx_is_a_server_error_and_known_texts_keep_their_type() -> None:
    exc = mapped({"error": {"message": "boom"}}, status=500, model="m", operation="chat")
    assert isinstance(exc, LMStudioServerError) and isinstance(exc, InferenceError)
    assert (exc.status, exc.reason, exc.model_id, exc.host_url) == (500, "boom", "m", HOST)
    assert str(exc).startswith(f"LM Studio at {HOST} failed to chat: HTTP 500: boom;")
    loading = mapped({"error": 'Failed to load model "m". Error: Error loading model.'}, 500)
    assert isinstance(loading, ModelLoadError)


def test_not_error_bodies() -> None:
    assert extract_error({"data": []}) is None
    assert extract_error([1, 2]) is None
    assert extract_error(None) is None
