"""Every knob of the emulator, in one mutable dataclass that tests may flip at runtime.

Reads happen per request without a lock: assigning one attribute is atomic in CPython, and each
request reads a setting once where it matters. ``LMStudioEmulator.configure`` validates names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

ClockMode = Literal["simulated", "real"]


@dataclass
class EmulatorSettings:
    """Behaviour switches; defaults reproduce a stock LM Studio 0.4 server."""

    # "0.4": all API families. "0.3": /api/v1/* answer as unknown routes (pre-0.4 server).
    # "openai": only /v1/* (a plain OpenAI-compatible server such as Ollama's or vLLM's);
    # every other path is a 404 and there is no LM Studio greeting.
    api_generation: str = "0.4"
    # Just-in-time loading on inference; off: /v1/models lists only loaded models.
    jit: bool = True
    # A JIT load first unloads the other JIT-loaded instances ("Only Keep Last JIT Loaded Model").
    auto_evict: bool = True
    # Idle TTL (seconds) of JIT-loaded instances when the request has no "ttl"; None: never.
    default_ttl: float | None = 3600.0
    require_auth: bool = False
    api_tokens: frozenset[str] = field(default_factory=frozenset)
    # Context of JIT loads and of /api/v1/models/load without context_length (capped at the
    # model's declared maximum).
    default_context_length: int = 4096
    # LM Studio 0.4.19+: a load above the loadable limit is reduced to it instead of failing.
    auto_fit: bool = False
    # Force every load to apply exactly this context (a server that ignores the request).
    context_override: int | None = None
    # Cap every applied context at this value (a server that silently clamps).
    max_applied_context: int | None = None
    # A load whose requested context exceeds this blocks until release_hangs() or stop().
    hang_loads_above: int | None = None
    # Context-overflow wording (bodies.overflow_text): None = realistic (1 non-streaming,
    # 3 streaming), or 1..4 to force one wording everywhere.
    overflow_wording: int | None = None
    # How an overflow is answered: "error" (HTTP 400, or an SSE error frame when streaming),
    # "ok_body" (HTTP 200 carrying the error body) or "empty" (HTTP 200 with an empty answer:
    # a stream with no content, as LM Studio 0.4 builds sometimes send).
    overflow_as: str = "error"
    # Pre-0.3.17 "Model "x" not found ... Your models:" 404 instead of "Invalid model identifier".
    legacy_not_found: bool = False
    # LM Studio quirk (#619): with exactly one model loaded, an unknown model name is served by it.
    single_model_fallback: bool = False
    clock: ClockMode = "simulated"
    # Real clock only: multiply every sleep (0.01 makes a 2 s load take 20 ms).
    time_scale: float = 1.0
    load_seconds: float = 2.0
    load_seconds_per_1k_tokens: float = 0.05
    prompt_tokens_per_second: float = 2000.0
    tokens_per_second: float = 50.0
    embedding_dimensions: int = 16
    # Parallel slots (lmstrix.testing.slots): of a load that does not ask for a number, and how
    # much each further concurrent request adds to an instance's throughput (1: linear, 0: none).
    default_parallel: int = 4
    parallel_efficiency: float = 1.0
    # Faults: end SSE streams after the first content frame, before [DONE] / chat.end.
    truncate_streams: bool = False
    # Faults: every request blocks (no answer) until release_hangs() or stop().
    hang_requests: bool = False
    # Faults: SSE streams stop after each content frame (the connection stays open, nothing
    # more comes) until release_hangs() or stop(): a server that stalls mid-answer.
    stall_streams: bool = False

    def update(self, changes: Mapping[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"unknown emulator setting(s): {', '.join(unknown)}")
        for name, value in changes.items():
            if name == "api_tokens":
                value = frozenset(value or ())
            if name == "api_generation" and value not in ("0.3", "0.4", "openai"):
                raise ValueError("api_generation must be '0.3', '0.4' or 'openai'")
            if name == "overflow_as" and value not in ("error", "ok_body", "empty"):
                raise ValueError("overflow_as must be 'error', 'ok_body' or 'empty'")
            if name == "clock" and value not in ("simulated", "real"):
                raise ValueError("clock must be 'simulated' or 'real'")
            if name == "overflow_wording" and value not in (None, 1, 2, 3, 4):
                raise ValueError("overflow_wording must be None or 1..4")
            setattr(self, name, value)
