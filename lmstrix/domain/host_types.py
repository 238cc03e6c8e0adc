"""Typed records the LM Studio client returns, whatever API generation served them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class ApiGeneration(StrEnum):
    """Which HTTP API a host speaks, newest first."""

    V1 = "v1"  # LM Studio >= 0.4.0: /api/v1 (load with context length, unload)
    V0 = "v0"  # LM Studio 0.3.6 - 0.3.x: /api/v0 (model state, stats), no HTTP load
    OPENAI = "openai"  # only /v1 (very old LM Studio, or a plain OpenAI-compatible server)


@dataclass(frozen=True, slots=True)
class Capabilities:
    vision: bool = False
    tool_use: bool = False
    reasoning: bool = False

    def names(self) -> list[str]:
        return [
            n
            for n, on in (
                ("vision", self.vision),
                ("tools", self.tool_use),
                ("reasoning", self.reasoning),
            )
            if on
        ]


@dataclass(frozen=True, slots=True)
class LoadedInstance:
    """One loaded instance of a model (LM Studio names them ``key``, ``key:2``...)."""

    id: str
    context_length: int | None
    #: parallel slots sharing the instance's KV cache (LM Studio 0.4: 4 by default)
    parallel: int | None = None


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """One downloaded model as a host reports it."""

    key: str
    type: str = "llm"  # "llm" | "vlm" | "embedding"
    publisher: str | None = None
    display_name: str | None = None
    architecture: str | None = None
    quantization: str | None = None
    format: str | None = None  # "gguf" | "mlx" | None
    size_bytes: int | None = None
    params_string: str | None = None
    max_context_length: int | None = None
    capabilities: Capabilities = field(default_factory=Capabilities)
    loaded_instances: tuple[LoadedInstance, ...] = ()

    @property
    def is_embedding(self) -> bool:
        return self.type.startswith("embedding")

    @property
    def is_loaded(self) -> bool:
        return bool(self.loaded_instances)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a load really did. ``context_length`` is what LM Studio applied, not what was asked."""

    model: str
    instance_id: str
    requested_context: int | None
    context_length: int | None
    load_time_seconds: float | None = None
    reused: bool = False  # an instance already loaded at the wanted size was kept

    @property
    def reduced(self) -> bool:
        """True when LM Studio silently applied less context than requested."""
        return (
            self.requested_context is not None
            and self.context_length is not None
            and self.context_length < self.requested_context
        )


@dataclass(frozen=True, slots=True)
class ChatResult:
    """One chat completion with its usage and timing.

    Timing comes from LM Studio's ``stats`` when the endpoint gives them (``/api/v0``), else it is
    measured by the client (``timing_source == "client"``).
    """

    model: str
    content: str
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    finish_reason: str | None
    stop_reason: str | None
    tokens_per_second: float | None
    time_to_first_token: float | None
    generation_time: float | None
    wall_time: float
    loaded_context_length: int | None = None
    reasoning: str | None = None
    endpoint: str = ""
    timing_source: str = "server"  # "server" | "client"
    raw: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("raw", None)
        return d


@dataclass(frozen=True, slots=True)
class HostHealth:
    """The result of probing one host."""

    url: str
    reachable: bool
    is_lmstudio: bool = False
    api_generation: ApiGeneration | None = None
    models: int = 0
    loaded_instances: int = 0
    latency_ms: float | None = None
    error: str | None = None
    #: the host answered, but wants a (valid) API token
    auth_required: bool = False
    #: what the host can do (``HostCapabilities.to_dict()``), when it answered
    capabilities: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["api_generation"] = str(self.api_generation) if self.api_generation else None
        return d
