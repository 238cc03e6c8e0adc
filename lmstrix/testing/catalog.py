"""The default set of downloaded models, and the memory estimate behind the OOM message.

The defaults differ on purpose in declared / loadable / usable limits, so the context tester and
the client can be tested against models whose card overstates what the machine (or the model)
really handles.
"""

from __future__ import annotations

from lmstrix.testing.backend import EmulatedModel

EMBEDDING_KEY = "text-embedding-nomic-embed-text-v1.5"

DEFAULT_MODELS: tuple[EmulatedModel, ...] = (
    EmulatedModel(
        key="qwen/qwen3-4b",
        type="llm",
        publisher="qwen",
        display_name="Qwen3 4B",
        architecture="qwen3",
        quantization="Q4_K_M",
        bits_per_weight=4,
        size_bytes=2_497_280_000,
        params_string="4B",
        max_context_length=32768,
        tool_use=True,
        reasoning=True,
        loadable_limit=24576,
        usable_limit=16384,
    ),
    EmulatedModel(
        key="google/gemma-3-4b",
        type="vlm",
        publisher="google",
        display_name="Gemma 3 4B",
        architecture="gemma3",
        quantization="Q4_K_M",
        bits_per_weight=4,
        size_bytes=3_340_000_000,
        params_string="4B",
        max_context_length=131072,
        vision=True,
        loadable_limit=32768,
        usable_limit=8192,
    ),
    EmulatedModel(
        key="llama-3.2-1b-instruct",
        type="llm",
        publisher="lmstudio-community",
        display_name="Llama 3.2 1B Instruct",
        architecture="llama",
        quantization="Q8_0",
        bits_per_weight=8,
        size_bytes=1_321_083_000,
        params_string="1B",
        max_context_length=131072,
        tool_use=True,
        loadable_limit=65536,
        usable_limit=12000,
    ),
    EmulatedModel(
        key=EMBEDDING_KEY,
        type="embedding",
        publisher="nomic-ai",
        display_name="Nomic Embed Text v1.5",
        architecture="nomic-bert",
        quantization="Q4_K_M",
        bits_per_weight=4,
        size_bytes=84_106_624,
        params_string=None,
        max_context_length=2048,
    ),
)


def memory_estimate_gb(model: EmulatedModel, context_length: int) -> float:
    """Weights plus a KV cache that grows linearly with the context (about 32 bytes per token
    per MB of weights): a 2.5 GB model at 32k context needs about 5 GB."""
    weights = model.size_bytes * 1.05
    kv_cache = context_length * 32 * (model.size_bytes / 1_000_000)
    return round((weights + kv_cache) / 1e9, 2)
