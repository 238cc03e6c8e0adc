"""What a host can do for lmstrix, decided from what it answered (pure: the client probes).

A host is one of three kinds of server, each with its own answers to the same questions:

- LM Studio 0.4+ (``/api/v1``): loads a model at a chosen context and unloads it (load control),
  gives timing stats, and runs each loaded instance with parallel slots sharing one KV cache.
- LM Studio 0.3.x (``/api/v0``): serves any downloaded model by just-in-time loading at the
  context set in LM Studio; lmstrix cannot choose that context, but can read it.
- A plain OpenAI-compatible server (llama.cpp's server, Ollama, vLLM, ``/v1`` only): serves the
  model(s) it was started with, at the context it was started with; llama.cpp reports that
  context (``/props`` and its model list's ``meta.n_ctx``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lmstrix.domain.host_types import ApiGeneration

#: The server families lmstrix tells apart.
LMSTUDIO = "lmstudio"
LLAMA_CPP = "llama.cpp"
OPENAI_COMPATIBLE = "openai-compatible"


@dataclass(frozen=True, slots=True)
class HostCapabilities:
    """One host's capabilities as detected.

    ``load_control``: lmstrix can load a model at a context of its choice and unload it.
    ``per_request_context``: a request itself can choose the context it runs at (none of the
    servers lmstrix knows can; LM Studio 0.4 chooses it per load). ``stats``: answers carry the
    server's own timing. ``streamed_usage``: a streamed answer ends with token counts.
    ``parallel``: the parallel slots of a loaded instance, where the host reports them.
    """

    api_generation: ApiGeneration
    server: str
    load_control: bool
    per_request_context: bool
    stats: bool
    streamed_usage: bool
    parallel: int | None = None

    def labels(self) -> list[str]:
        """Short words for a table: what this host can do."""
        out = ["load control" if self.load_control else "serves as loaded (JIT)"]
        if self.stats:
            out.append("stats")
        if self.streamed_usage:
            out.append("streamed usage")
        if self.parallel:
            out.append(f"{self.parallel} parallel")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["api_generation"] = str(self.api_generation)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostCapabilities:
        return cls(
            api_generation=ApiGeneration(data["api_generation"]),
            server=str(data.get("server") or OPENAI_COMPATIBLE),
            load_control=bool(data.get("load_control")),
            per_request_context=bool(data.get("per_request_context")),
            stats=bool(data.get("stats")),
            streamed_usage=bool(data.get("streamed_usage")),
            parallel=data.get("parallel") if isinstance(data.get("parallel"), int) else None,
        )


def decide_capabilities(
    generation: ApiGeneration,
    *,
    greets_as_lmstudio: bool,
    llama_cpp_props: bool,
    parallel: int | None = None,
) -> HostCapabilities:
    """The capabilities of a host that speaks ``generation``. ``greets_as_lmstudio``: it
    answered LM Studio's greeting; ``llama_cpp_props``: it has llama.cpp's ``/props``."""
    if generation is ApiGeneration.V1:
        return HostCapabilities(generation, LMSTUDIO, True, False, True, True, parallel)
    if generation is ApiGeneration.V0:
        return HostCapabilities(generation, LMSTUDIO, False, False, True, True, parallel)
    if llama_cpp_props:
        return HostCapabilities(generation, LLAMA_CPP, False, False, False, True, parallel)
    server = LMSTUDIO if greets_as_lmstudio else OPENAI_COMPATIBLE
    # A generic server may or may not end a stream with usage: lmstrix asks and copes without.
    return HostCapabilities(generation, server, False, False, False, False, parallel)


def capability_labels(data: dict[str, Any]) -> list[str]:
    """:meth:`HostCapabilities.labels` of a stored ``to_dict()``; nothing for a bad one."""
    try:
        return HostCapabilities.from_dict(data).labels()
    except (KeyError, ValueError, TypeError):
        return []
