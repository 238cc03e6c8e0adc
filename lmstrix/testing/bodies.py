"""LM Studio's JSON bodies: error texts, model list entries, ids.

The strings are LM Studio's exact wordings, as its servers send them. Where a body was inferred
rather than captured from a real server, the docstring says what was chosen, so that what is
verified and what is a guess stay apart.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Sequence
from typing import Any

from lmstrix.testing.backend import EmulatedModel
from lmstrix.testing.catalog import memory_estimate_gb

JsonObj = dict[str, Any]

_BASE36 = string.digits + string.ascii_lowercase

AUTH_MISSING_MESSAGE = (
    "An LM Studio API token is required to make requests to this server, but none was provided "
    "using the Authorization header using the 'Bearer' scheme (i.e., 'Authorization: Bearer "
    "$LM_API_TOKEN'). Learn more at: https://lmstudio.ai/docs/developer/core/authentication."
)
# [inf] the reference only knows that a wrong token gives 401 invalid_api_key.
AUTH_INVALID_MESSAGE = (
    "The provided LM Studio API token is invalid. Learn more at: "
    "https://lmstudio.ai/docs/developer/core/authentication."
)
NO_MODELS_LOADED = (
    "No models loaded. Please load a model in the developer page or use the 'lms load' command."
)
MULTIPLE_MODELS_LOADED = "Multiple models are loaded. Please specify a model by providing a 'model' field in the request."  # noqa: E501


def completion_id(prefix: str = "chatcmpl-") -> str:
    """``chatcmpl-`` / ``cmpl-`` + 21 random base36 characters."""
    return prefix + "".join(secrets.choice(_BASE36) for _ in range(21))


def response_id() -> str:
    """``resp_`` + 48 hex characters (v1 chat)."""
    return "resp_" + secrets.token_hex(24)


# --- errors ---------------------------------------------------------------------------------


def unexpected_endpoint(method: str, path: str) -> JsonObj:
    return {"error": f"Unexpected endpoint or method. ({method} {path})"}


def not_found_plain() -> JsonObj:
    """llama.cpp's server (and most plain OpenAI-compatible servers) on an unknown path: 404."""
    return {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}}


def auth_missing() -> JsonObj:
    return {
        "error": {
            "type": "invalid_request",
            "code": "invalid_api_key",
            "message": AUTH_MISSING_MESSAGE,
        }
    }


def auth_invalid() -> JsonObj:
    return {
        "error": {
            "type": "invalid_request",
            "code": "invalid_api_key",
            "message": AUTH_INVALID_MESSAGE,
        }
    }


def openai_error(
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> JsonObj:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def v1_error(
    message: str,
    *,
    type: str = "invalid_request",
    code: str | None = None,
    param: str | None = None,
) -> JsonObj:
    """The native v1 error object ``{"error":{"type","message","code"?,"param"?}}``."""
    error: JsonObj = {"type": type, "message": message}
    if code is not None:
        error["code"] = code
    if param is not None:
        error["param"] = param
    return {"error": error}


def invalid_model_identifier(name: str, choices: Sequence[str]) -> JsonObj:
    """400, LM Studio 0.3.3x-0.4.x, exact."""
    return openai_error(
        f'Invalid model identifier "{name}". Please specify a valid downloaded model '
        f"(e.g., {', '.join(choices)}).",
        param="model",
        code="model_not_found",
    )


def legacy_model_not_found(name: str, choices: Sequence[str]) -> JsonObj:
    """404, LM Studio 0.3.5-0.3.16, exact."""
    listing = "\n".join(choices)
    return openai_error(
        f'Model "{name}" not found. Please specify a valid model.\n\nYour models:\n\n{listing}',
        param="model",
        code="model_not_found",
    )


def multiple_models_loaded() -> JsonObj:
    """404."""
    return openai_error(MULTIPLE_MODELS_LOADED, param="model", code="model_not_found")


def no_models_loaded() -> JsonObj:
    """400, a bare string."""
    return {"error": NO_MODELS_LOADED}


def wrong_model_type(name: str, wanted: str) -> str:
    """[inf] Text when a chat names an embedding model or embeddings name an LLM."""
    if wanted == "embedding":
        return f'Model "{name}" is not an embedding model.'
    return f'Model "{name}" is an embedding model and cannot be used for text generation.'


def insufficient_resources(model: EmulatedModel, context_length: int) -> str:
    """The memory guardrail's refusal, with ``catalog.memory_estimate_gb``'s estimate."""
    gb = memory_estimate_gb(model, context_length)
    return (
        "Model loading was stopped due to insufficient system resources. Under the current "
        f"settings, this model requires approximately {gb:.2f} GB of memory, and continuing to "
        "load it would likely overload your system and cause it to freeze. If you think this is "
        "incorrect, you can adjust the model loading guardrails in settings."
    )


def failed_to_load(model_id: str, reason: str) -> str:
    return f'Failed to load model "{model_id}". Error: {reason}'


def jit_load_failed(model_id: str, reason: str) -> JsonObj:
    """400 on OpenAI/v0 inference; message exact, ``type`` observed, ``param`` and
    ``code`` [inf] (we send null)."""
    return openai_error(failed_to_load(model_id, reason))


def v1_load_failed(model_id: str, reason: str) -> JsonObj:
    """[inf] ``/api/v1/models/load`` (and ``/api/v1/chat``) load failure: we answer **400**
    (like the observed JIT failure) with ``{"error":{"type":"model_load_failed","message":
    "Failed to load model \\"<key>\\". Error: <reason>"}}``."""
    return v1_error(failed_to_load(model_id, reason), type="model_load_failed")


def v1_model_not_found_for_load(key: str) -> JsonObj:
    """404, exact."""
    return v1_error(f"Model {key} not found in downloaded models", type="model_not_found")


def v1_instance_not_found(instance_id: str) -> JsonObj:
    """[inf] 404 for unload of an unknown instance (type observed, message and status guessed)."""
    return v1_error(
        f'No loaded model instance found with id "{instance_id}"', type="model_not_found"
    )


def overflow_text(wording: int, prompt_tokens: int, context_length: int) -> str:
    """The four wordings of a context overflow, verbatim."""
    if wording == 1:
        return (
            "The number of tokens to keep from the initial prompt is greater than the context "
            f"length (n_keep: {prompt_tokens}>= n_ctx: {context_length}). Try to load the model "
            "with a larger context length, or provide a shorter input."
        )
    if wording == 2:
        return (
            f"Trying to keep the first {prompt_tokens} tokens when context the overflows. However, "
            f"the model is loaded with context length of only {context_length} tokens, which is "
            "not enough. Try to load the model with a larger context length, or provide a shorter "
            "input."
        )
    if wording == 3:
        return (
            f"Input does not fit in context length. The input has {prompt_tokens} tokens, but the "
            f"context length only supports {context_length} tokens."
        )
    return "Context size has been exceeded."


def empty_completion() -> JsonObj:
    """An HTTP 200 answer with no content and no usage (an overflow some builds send)."""
    return {
        "id": completion_id("chatcmpl-"),
        "object": "chat.completion",
        "created": 0,
        "choices": [],
    }


def stream_error(message: str) -> JsonObj:
    """The ``event: error`` data object a streamed overflow ends with."""
    return {"error": {"message": message}, "message": message}


# --- model list entries ---------------------------------------------------------------------


def v0_type(model: EmulatedModel) -> str:
    return "embeddings" if model.type == "embedding" else model.type


def v1_type(model: EmulatedModel) -> str:
    return "embedding" if model.type == "embedding" else "llm"


def variant(model: EmulatedModel) -> str:
    quant = (model.quantization or "").lower()
    return f"{model.key}@{quant}" if quant else model.key


def v0_model(model: EmulatedModel, state: str, loaded_context: int | None) -> JsonObj:
    entry: JsonObj = {
        "id": model.key,
        "object": "model",
        "type": v0_type(model),
        "publisher": model.publisher,
        "arch": model.architecture,
        "compatibility_type": model.format,
        "quantization": model.quantization,
        "state": state,
        "max_context_length": model.max_context_length,
    }
    if loaded_context is not None:
        entry["loaded_context_length"] = loaded_context
    if model.type != "embedding":
        caps = []
        if model.tool_use:
            caps.append("tool_use")
        if model.vision or model.type == "vlm":
            caps.append("vision")
        entry["capabilities"] = caps
    return entry


def load_config(model: EmulatedModel, context_length: int, options: JsonObj) -> JsonObj:
    """``loaded_instances[].config`` and the echoed ``load_config`` (embeddings: context only)."""
    if model.type == "embedding":
        return {"context_length": context_length}
    config: JsonObj = {
        "context_length": context_length,
        "eval_batch_size": options.get("eval_batch_size", 512),
        "parallel": options.get("parallel", 4),
        "flash_attention": options.get("flash_attention", True),
        "offload_kv_cache_to_gpu": options.get("offload_kv_cache_to_gpu", True),
    }
    if "num_experts" in options:
        config["num_experts"] = options["num_experts"]
    return config


def v1_model(model: EmulatedModel, instances: list[JsonObj]) -> JsonObj:
    entry: JsonObj = {
        "type": v1_type(model),
        "publisher": model.publisher,
        "key": model.key,
        "display_name": model.display_name or model.key,
    }
    if model.type != "embedding":
        entry["architecture"] = model.architecture
    entry.update(
        {
            "quantization": (
                {"name": model.quantization, "bits_per_weight": model.bits_per_weight}
                if model.quantization
                else None
            ),
            "size_bytes": model.size_bytes,
            "params_string": model.params_string,
            "loaded_instances": instances,
            "max_context_length": model.max_context_length,
            "format": model.format,
        }
    )
    if model.type != "embedding":
        caps: JsonObj = {
            "vision": model.vision or model.type == "vlm",
            "trained_for_tool_use": model.tool_use,
        }
        if model.reasoning:
            caps["reasoning"] = {"allowed_options": ["off", "on"], "default": "on"}
        entry["capabilities"] = caps
        entry["description"] = None
    entry["variants"] = [variant(model)]
    entry["selected_variant"] = variant(model)
    return entry


def runtime(model: EmulatedModel) -> JsonObj:
    if model.format == "mlx":
        return {
            "name": "mlx-llm-mac-arm64-apple-metal-advsimd",
            "version": "0.30.0",
            "supported_formats": ["safetensors"],
        }
    return {
        "name": "llama.cpp-linux-x86_64-avx2",
        "version": "1.3.0",
        "supported_formats": ["gguf"],
    }
