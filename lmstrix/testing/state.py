"""The emulated server's state machine: downloaded models, loaded instances, JIT, TTL, hangs.

No HTTP here: routes call these methods and translate the domain exceptions below into LM
Studio's bodies. One re-entrant lock guards the instance table; slow work (loading, inference,
hangs) runs outside it so concurrent requests behave as on a real server, and every model call is
counted in ``counters`` (in flight / max in flight).
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lmstrix.testing import bodies
from lmstrix.testing.backend import (
    BackendInstance,
    Completion,
    EmulatedModel,
    LoadFailure,
    Message,
    ModelBackend,
)
from lmstrix.testing.clock import Clock
from lmstrix.testing.counters import CounterBox, LoadRecord, UnloadRecord
from lmstrix.testing.settings import EmulatorSettings
from lmstrix.testing.slots import SlotGate


class UnknownModel(Exception):
    def __init__(self, name: str, choices: Sequence[str]) -> None:
        super().__init__(name)
        self.name = name
        self.choices = list(choices)


class NoModelsLoaded(Exception):
    pass


class MultipleModelsLoaded(Exception):
    pass


class WrongModelType(Exception):
    def __init__(self, name: str, wanted: str) -> None:
        super().__init__(name)
        self.name = name
        self.wanted = wanted  # "llm" | "embedding"


class UnknownInstance(Exception):
    def __init__(self, instance_id: str) -> None:
        super().__init__(instance_id)
        self.instance_id = instance_id


class Stopped(Exception):
    """The emulator stopped while this request was blocked (hang): drop the connection."""


class _EmbeddingInstance:
    """Embedding models never reach the backend (a chat backend cannot load them)."""

    def __init__(self, context_length: int) -> None:
        self.applied_context = context_length

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        return 0

    def complete(self, messages: Sequence[Message], **_: Any) -> Completion:
        raise NotImplementedError("embedding models do not generate text")

    def close(self) -> None:
        pass


@dataclass(eq=False)
class Instance:
    """A loaded (or loading) model instance; ``id`` is ``key``, ``key:2``, ..."""

    id: str
    model: EmulatedModel
    requested_context: int
    jit: bool
    ttl: float | None
    last_used: float
    options: dict[str, Any] = field(default_factory=dict)
    status: str = "loading"  # "loading" | "loaded"
    context_length: int | None = None  # applied, known once loaded
    backend: BackendInstance | None = None
    load_seconds: float = 0.0
    failure: LoadFailure | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True, slots=True)
class Inference:
    completion: Completion
    prompt_seconds: float
    generation_seconds: float
    context_length: int

    @property
    def stop_reason(self) -> str:
        """The v0 ``stats.stop_reason`` (SDK enum)."""
        c = self.completion
        if c.finish_reason != "length":
            return "eosFound"
        if c.prompt_tokens + c.completion_tokens >= self.context_length:
            return "contextLengthReached"
        return "maxPredictedTokensReached"


@dataclass(frozen=True, slots=True)
class _LoadFault:
    reason: str
    model: str | None


class EmulatorState:
    def __init__(
        self,
        models: Iterable[EmulatedModel],
        backend: ModelBackend,
        settings: EmulatorSettings,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.models: dict[str, EmulatedModel] = {m.key: m for m in models}
        self.instances: dict[str, Instance] = {}
        self.lock = threading.RLock()
        self.clock = Clock(settings)
        self.counters = CounterBox()
        self.slots = SlotGate(settings, self.counters)
        self.conversations: dict[str, list[Message]] = {}
        self._load_faults: list[_LoadFault] = []
        self._unload_on_chat: set[str] = set()
        self._hang_cond = threading.Condition()
        self._release_generation = 0
        self.hanging = 0
        self.stopping = False

    # --- lookup ---------------------------------------------------------------------------

    def find_model(self, name: str) -> EmulatedModel | None:
        """A downloaded model by key, or by ``key@quant`` variant."""
        with self.lock:
            if name in self.models:
                return self.models[name]
            key, _, quant = name.partition("@")
            model = self.models.get(key)
            if model and quant and quant.lower() == (model.quantization or "").lower():
                return model
            return None

    def loaded(self) -> list[Instance]:
        with self.lock:
            return [i for i in self.instances.values() if i.status == "loaded"]

    def instances_of(self, key: str) -> list[Instance]:
        with self.lock:
            return [i for i in self.instances.values() if i.model.key == key]

    # --- hangs ----------------------------------------------------------------------------

    def hang(self) -> None:
        """Block until ``release_hangs()``; raise :class:`Stopped` if the emulator stops."""
        with self._hang_cond:
            generation = self._release_generation
            self.hanging += 1
            try:
                self._hang_cond.wait_for(
                    lambda: self.stopping or self._release_generation != generation
                )
            finally:
                self.hanging -= 1
            if self.stopping:
                raise Stopped()

    def release_hangs(self) -> None:
        with self._hang_cond:
            self._release_generation += 1
            self._hang_cond.notify_all()

    def stop(self) -> None:
        with self._hang_cond:
            self.stopping = True
            self._hang_cond.notify_all()
        with self.lock:
            gone = list(self.instances.values())
            self.instances.clear()
        for inst in gone:
            inst.ready.set()
            self._close(inst)
        self.backend.close()

    # --- loading --------------------------------------------------------------------------

    def fail_next_load(self, reason: str, model: str | None = None) -> None:
        with self.lock:
            self._load_faults.append(_LoadFault(reason, model))

    def _pop_load_fault(self, key: str) -> str | None:
        with self.lock:
            for fault in self._load_faults:
                if fault.model in (None, key):
                    self._load_faults.remove(fault)
                    return fault.reason
            return None

    def unload_on_next_chat(self, key: str) -> None:
        """Another client unloads ``key``'s instances just as the next chat request for it
        arrives: that request finds its model gone ("Model was unloaded.")."""
        with self.lock:
            self._unload_on_chat.add(key)

    def interfere(self, inst: Instance) -> None:
        """Carry out an armed :meth:`unload_on_next_chat` for this instance's model."""
        with self.lock:
            if inst.model.key not in self._unload_on_chat:
                return
            self._unload_on_chat.discard(inst.model.key)
            gone = [i for i in self.instances_of(inst.model.key) if i.status == "loaded"]
            for i in gone:
                self._detach(i, "direct")
        for i in gone:
            self._close(i)

    def default_context(self, model: EmulatedModel) -> int:
        return min(self.settings.default_context_length, model.max_context_length)

    def _new_id(self, key: str) -> str:
        if key not in self.instances:
            return key
        n = 2
        while f"{key}:{n}" in self.instances:
            n += 1
        return f"{key}:{n}"

    def reserve(
        self,
        model: EmulatedModel,
        context_length: int | None,
        *,
        jit: bool,
        ttl: float | None,
        options: dict[str, Any] | None = None,
    ) -> Instance:
        """Register a new instance in state "loading"; :meth:`complete_load` does the work."""
        with self.lock:
            inst = Instance(
                id=self._new_id(model.key),
                model=model,
                requested_context=context_length or self.default_context(model),
                jit=jit,
                ttl=ttl,
                last_used=self.clock.now(),
                options=dict(options or {}),
            )
            self.instances[inst.id] = inst
            return inst

    def _applied_context(self, inst: Instance) -> int:
        model, requested = inst.model, inst.requested_context
        context = requested
        if context > model.effective_loadable:
            if not self.settings.auto_fit:
                raise LoadFailure(bodies.insufficient_resources(model, requested))
            context = model.effective_loadable
        fault = self._pop_load_fault(model.key)
        if fault is not None:
            raise LoadFailure(fault)
        if self.settings.context_override is not None:
            context = self.settings.context_override
        if self.settings.max_applied_context is not None:
            context = min(context, self.settings.max_applied_context)
        return context

    def complete_load(self, inst: Instance) -> Instance:
        """Load a reserved instance (a model call). Raises ``LoadFailure`` or ``Stopped``."""
        s = self.settings
        try:
            with self.counters.model_call(), self.counters.load_call():
                if s.hang_loads_above is not None and inst.requested_context > s.hang_loads_above:
                    self.hang()
                context = self._applied_context(inst)
                seconds = s.load_seconds + s.load_seconds_per_1k_tokens * context / 1000
                self.clock.spend(seconds)
                if inst.model.type == "embedding":
                    backend: BackendInstance = _EmbeddingInstance(context)
                else:
                    backend = self.backend.load(inst.model, context)
        except Exception as exc:
            with self.lock:
                self.instances.pop(inst.id, None)
            if isinstance(exc, Stopped):
                inst.ready.set()
                raise
            # A crashing backend is reported the way LM Studio reports engine crashes.
            failure = exc if isinstance(exc, LoadFailure) else LoadFailure("Error loading model.")
            inst.failure = failure
            self.counters.load_failed()
            inst.ready.set()
            if failure is exc:
                raise
            raise failure from exc
        with self.lock:
            inst.backend = backend
            inst.context_length = backend.applied_context
            inst.load_seconds = round(seconds, 3)
            inst.status = "loaded"
            inst.last_used = self.clock.now()
            orphan = inst.id not in self.instances  # stopped (or unloaded) meanwhile
        inst.ready.set()
        if orphan:
            self._close(inst)
            raise Stopped()
        self.counters.loaded(
            LoadRecord(
                model=inst.model.key,
                instance_id=inst.id,
                requested_context=inst.requested_context,
                applied_context=inst.context_length,
                jit=inst.jit,
                seconds=inst.load_seconds,
            )
        )
        return inst

    def load(
        self,
        key: str,
        context_length: int | None = None,
        *,
        jit: bool = False,
        ttl: float | None = None,
        options: dict[str, Any] | None = None,
    ) -> Instance:
        model = self.find_model(key)
        if model is None:
            raise UnknownModel(key, list(self.models))
        return self.complete_load(
            self.reserve(model, context_length, jit=jit, ttl=ttl, options=options)
        )

    def wait_ready(self, inst: Instance) -> Instance:
        """Wait for a concurrent load of ``inst`` to finish; re-raise its failure."""
        inst.ready.wait()
        if inst.failure is not None:
            raise inst.failure
        if self.stopping:
            raise Stopped()
        return inst

    # --- unloading ------------------------------------------------------------------------

    def _detach(self, inst: Instance, reason: str) -> None:
        """Remove from the table (lock held by caller) and count; close with ``_close``."""
        self.instances.pop(inst.id, None)
        self.slots.unloading(inst)
        self.counters.unloaded(UnloadRecord(inst.model.key, inst.id, reason))

    def _close(self, inst: Instance) -> None:
        with inst.lock:  # waits for an inference in progress on this instance
            if inst.backend is not None:
                inst.backend.close()
                inst.backend = None

    def unload(self, instance_id: str, reason: str = "api") -> Instance:
        with self.lock:
            inst = self.instances.get(instance_id)
            if inst is None or inst.status != "loaded":
                raise UnknownInstance(instance_id)
            self._detach(inst, reason)
        self._close(inst)
        return inst

    def expire_idle(self) -> list[str]:
        """Unload JIT instances idle for longer than their TTL (evaluated lazily, per request)."""
        now = self.clock.now()
        with self.lock:
            expired = [
                i
                for i in self.instances.values()
                if i.jit
                and i.ttl is not None
                and i.status == "loaded"
                and now - i.last_used >= i.ttl
            ]
            for inst in expired:
                self._detach(inst, "ttl")
        for inst in expired:
            self._close(inst)
        return [i.id for i in expired]

    # --- inference ------------------------------------------------------------------------

    def acquire(
        self,
        name: str | None,
        *,
        kind: str,
        ttl: float | None = None,
        context_length: int | None = None,
    ) -> tuple[Instance, bool]:
        """The instance that serves a request naming ``name``; ``True`` if the caller must
        :meth:`complete_load` it (a JIT load was reserved). ``kind``: "llm" | "embedding"."""
        self.expire_idle()
        evicted: list[Instance] = []
        try:
            with self.lock:
                loaded = [i for i in self.instances.values() if i.status == "loaded"]
                if not name:
                    if len(loaded) == 1:
                        return self._checked(loaded[0], name or loaded[0].id, kind), False
                    if not loaded:
                        raise NoModelsLoaded()
                    raise MultipleModelsLoaded()
                if name in self.instances:
                    return self._checked(self.instances[name], name, kind), False
                model = self.find_model(name)
                if model is None:
                    if self.settings.single_model_fallback and len(loaded) == 1:
                        return self._checked(loaded[0], name, kind), False
                    if not self.settings.jit and not loaded:
                        raise NoModelsLoaded()
                    choices = list(self.models) if self.settings.jit else [i.id for i in loaded]
                    raise UnknownModel(name, choices)
                existing = self.instances_of(model.key)
                if existing:
                    return self._checked(existing[0], name, kind), False
                if not self.settings.jit:
                    if not loaded:
                        raise NoModelsLoaded()
                    raise UnknownModel(name, [i.id for i in loaded])
                self._check_kind(model, name, kind)
                if self.settings.auto_evict:
                    evicted = [i for i in loaded if i.jit]
                    for inst in evicted:
                        self._detach(inst, "evict")
                ttl = ttl if ttl is not None else self.settings.default_ttl
                return self.reserve(model, context_length, jit=True, ttl=ttl), True
        finally:
            for inst in evicted:
                self._close(inst)

    def _check_kind(self, model: EmulatedModel, name: str, kind: str) -> None:
        if (model.type == "embedding") != (kind == "embedding"):
            raise WrongModelType(name, kind)

    def _checked(self, inst: Instance, name: str, kind: str) -> Instance:
        self._check_kind(inst.model, name, kind)
        return inst

    def touch(self, inst: Instance) -> None:
        with self.lock:
            inst.last_used = self.clock.now()

    def infer(
        self,
        inst: Instance,
        messages: Sequence[Message],
        *,
        max_tokens: int | None,
        options: dict[str, Any] | None = None,
        pace: bool = True,
    ) -> Inference:
        """Run the backend (caller holds ``counters.model_call()``); may raise ContextOverflow.

        ``pace=False`` (streaming) accounts the time but leaves real-clock sleeping to the
        streamer, which spreads it over the frames.
        """
        opts = options or {}
        self.touch(inst)
        with inst.lock:
            backend = inst.backend
            if backend is None:
                raise LoadFailure("Model was unloaded.")
            completion = backend.complete(
                messages,
                max_tokens=max_tokens,
                temperature=opts.get("temperature"),
                top_p=opts.get("top_p"),
                top_k=opts.get("top_k"),
                stop=opts.get("stop"),
                seed=opts.get("seed"),
            )
            context = backend.applied_context
        s = self.settings
        measured = completion.prompt_seconds is not None
        prompt_s = (
            completion.prompt_seconds
            if completion.prompt_seconds is not None
            else completion.prompt_tokens / s.prompt_tokens_per_second
        )
        gen_s = (
            completion.generation_seconds
            if completion.generation_seconds is not None
            else completion.completion_tokens / self.slots.speed(inst)
        )
        self.clock.spend(prompt_s + gen_s, pace=pace and not measured)
        self.touch(inst)
        self.counters.inferred()
        return Inference(completion, prompt_s, gen_s, context)

    def embed(self, inst: Instance, texts: Sequence[str]) -> list[list[float]]:
        """Deterministic unit vectors (same text, same vector, in any process)."""
        self.touch(inst)
        vectors = [_vector(t, self.settings.embedding_dimensions) for t in texts]
        self.clock.spend(sum(len(t) for t in texts) / 4 / self.settings.prompt_tokens_per_second)
        self.counters.inferred()
        return vectors


def _vector(text: str, dimensions: int) -> list[float]:
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    raw = [rng.uniform(-1.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]
