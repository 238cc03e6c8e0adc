"""What the emulator puts behind LM Studio's API: a model description and the backend protocol.

The emulator owns everything LM Studio-shaped (routes, JSON bodies, error strings, instances,
JIT, TTL, auth, counters). A backend owns only "the model": loading it at a context size (and
saying what size it really applied) and answering chat messages with real token counts.
Two backends exist: the deterministic rule-based one (``rules.py``) and a real llama.cpp model
(``real_model.py``).

Streaming is optional (:class:`StreamingInstance`): a backend whose answers take real time
streams the pieces as they are generated, so a streamed call sees a real time to first token
and real pacing, and a client that hangs up stops the generation. Without it the emulator
computes the whole answer, then streams it on its (simulated or real) clock.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

Message = dict[str, Any]  # {"role": "user", "content": "..."}


@dataclass(frozen=True, slots=True)
class EmulatedModel:
    """A downloaded model as the emulator presents it, plus its *true* limits on this machine."""

    key: str
    type: str = "llm"  # "llm" | "vlm" | "embedding"
    publisher: str = "lmstudio-community"
    display_name: str | None = None
    architecture: str | None = "llama"
    quantization: str | None = "Q4_K_M"
    bits_per_weight: int | None = 4
    format: str = "gguf"
    size_bytes: int = 2_000_000_000
    params_string: str | None = "3B"
    max_context_length: int = 32768  # declared (model card) maximum
    vision: bool = False
    tool_use: bool = False
    reasoning: bool = False
    # Largest context that loads within the memory budget (None: anything up to declared).
    loadable_limit: int | None = None
    # Largest context the model still *uses*: beyond it, facts early in the prompt are forgotten.
    usable_limit: int | None = None
    # Lost in the middle: a prompt longer than this forgets the facts in its middle half.
    middle_limit: int | None = None
    # A "load-size" model (quality set by the size it is loaded at, as with rope scaling):
    # loaded above this, a prompt filling more than half the context forgets every fact.
    load_usable_limit: int | None = None

    @property
    def effective_loadable(self) -> int:
        return min(self.loadable_limit or self.max_context_length, self.max_context_length)

    @property
    def effective_usable(self) -> int:
        return min(self.usable_limit or self.effective_loadable, self.effective_loadable)


@dataclass(frozen=True, slots=True)
class Completion:
    """One answer from a backend instance.

    ``prompt_seconds`` / ``generation_seconds`` are real measured times when the backend ran a real
    model; ``None`` lets the emulator derive them from its (simulated or real) clock settings.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    prompt_seconds: float | None = None
    generation_seconds: float | None = None


class ContextOverflow(Exception):
    """The prompt does not fit in the instance's context."""

    def __init__(self, prompt_tokens: int, context_length: int) -> None:
        super().__init__(f"prompt of {prompt_tokens} tokens exceeds context {context_length}")
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


class LoadFailure(Exception):
    """The backend could not load the model; ``reason`` is LM Studio-style text."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BackendInstance(Protocol):
    """A model loaded at one context size."""

    @property
    def applied_context(self) -> int:
        """The context size really in effect (may differ from the requested one)."""
        ...

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens the chat-templated messages take."""
        ...

    def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Completion:
        """Answer; raises ``ContextOverflow`` when the prompt does not fit."""
        ...

    def close(self) -> None:
        """Free the instance (unload)."""
        ...


class StreamingInstance(BackendInstance, Protocol):
    """An instance that can stream: pieces reach the client while the model generates them."""

    def stream(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Iterator[str | Completion]:
        """Yield text pieces as they are generated, then exactly one final ``Completion`` (its
        ``text`` is the pieces joined). Raises ``ContextOverflow`` before the first piece.
        Closing the iterator early (``close()``, the client hung up) stops the generation.
        """
        ...


def streaming(instance: BackendInstance) -> StreamingInstance | None:
    """``instance`` as a :class:`StreamingInstance` when it has ``stream()``, else None.

    A duck-typed check rather than ``isinstance`` on a runtime protocol: that would compare
    every member on each request, and existing backends need not change to keep working.
    """
    if callable(getattr(instance, "stream", None)):
        return cast(StreamingInstance, instance)
    return None


class ModelBackend(Protocol):
    """Creates instances. ``context_length`` is what the load asked for (already capped by the
    emulator's memory budget or auto-fit rules); the instance reports what it applied."""

    def load(self, model: EmulatedModel, context_length: int) -> BackendInstance:
        """Load; raises ``LoadFailure`` when the model cannot be loaded."""
        ...

    def close(self) -> None:
        """Release everything (called when the emulator stops)."""
        ...
