"""What the emulator counts, so tests can assert on effects (loads, unloads, concurrency)."""

from __future__ import annotations

import copy
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# The body fields of a completion request that ``Counters.sampling`` records.
SAMPLING_FIELDS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repeat_penalty",
        "stop",
        "seed",
        "max_tokens",
        "max_output_tokens",
    }
)


@dataclass(frozen=True, slots=True)
class LoadRecord:
    model: str
    instance_id: str
    requested_context: int
    applied_context: int
    jit: bool
    seconds: float


@dataclass(frozen=True, slots=True)
class UnloadRecord:
    model: str
    instance_id: str
    reason: str  # "api" | "ttl" | "evict" | "direct" | "stop"


@dataclass
class Counters:
    """A snapshot (``LMStudioEmulator.counters``) or the live tally (inside the state)."""

    loads: list[LoadRecord] = field(default_factory=list)
    load_failures: int = 0
    unloads: list[UnloadRecord] = field(default_factory=list)
    # "POST /v1/chat/completions", "GET /api/v0/models/{id}", ..., "unknown"
    requests_by_endpoint: Counter[str] = field(default_factory=Counter)
    # inference and embedding requests, by model key
    requests_by_model: Counter[str] = field(default_factory=Counter)
    inferences: int = 0
    # the chat messages of every completion request, in arrival order (what the model was sent)
    received: list[list[dict[str, Any]]] = field(default_factory=list)
    # answers delivered in full (a stream read to its end), by the text of the last message
    # sent: a prompt answered twice was generated twice for nothing
    answered: Counter[str] = field(default_factory=Counter)
    # the sampling fields of every completion request as its body had them (``SAMPLING_FIELDS``
    # that were present), in arrival order: what the host was asked to apply
    sampling: list[dict[str, Any]] = field(default_factory=list)
    # model calls = loads + inferences (+ embeddings) being executed right now / at most at once
    in_flight: int = 0
    max_in_flight: int = 0
    # parallel slots: the most inferences run at once on each instance (by instance id), the
    # most loads at once, and unloads of an instance while inferences still ran on it
    max_concurrency: dict[str, int] = field(default_factory=dict)
    loads_in_flight: int = 0
    max_loads_in_flight: int = 0
    unloads_while_busy: int = 0

    @property
    def load_count(self) -> int:
        return len(self.loads)

    @property
    def unload_count(self) -> int:
        return len(self.unloads)

    def loads_by_model(self) -> dict[str, list[int]]:
        """Applied contexts of every load, by model key, in load order."""
        out: dict[str, list[int]] = {}
        for record in self.loads:
            out.setdefault(record.model, []).append(record.applied_context)
        return out


class CounterBox:
    """Thread-safe owner of the live :class:`Counters`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._c = Counters()

    def snapshot(self) -> Counters:
        with self._lock:
            return copy.deepcopy(self._c)

    def reset(self) -> None:
        with self._lock:
            in_flight, loading = self._c.in_flight, self._c.loads_in_flight
            self._c = Counters(
                in_flight=in_flight,
                max_in_flight=in_flight,
                loads_in_flight=loading,
                max_loads_in_flight=loading,
            )

    def request(self, endpoint: str) -> None:
        with self._lock:
            self._c.requests_by_endpoint[endpoint] += 1

    def model_request(self, key: str) -> None:
        with self._lock:
            self._c.requests_by_model[key] += 1

    def loaded(self, record: LoadRecord) -> None:
        with self._lock:
            self._c.loads.append(record)

    def load_failed(self) -> None:
        with self._lock:
            self._c.load_failures += 1

    def unloaded(self, record: UnloadRecord) -> None:
        with self._lock:
            self._c.unloads.append(record)

    def receive(
        self, messages: Sequence[Mapping[str, Any]], body: Mapping[str, Any] | None = None
    ) -> None:
        with self._lock:
            self._c.received.append([dict(m) for m in messages])
            fields = {k: copy.deepcopy(v) for k, v in (body or {}).items() if k in SAMPLING_FIELDS}
            self._c.sampling.append(fields)

    def answered(self, messages: Sequence[Mapping[str, Any]]) -> None:
        key = str(messages[-1].get("content", "")) if messages else ""
        with self._lock:
            self._c.answered[key] += 1

    def inferred(self) -> None:
        with self._lock:
            self._c.inferences += 1

    @contextmanager
    def model_call(self) -> Iterator[None]:
        with self._lock:
            self._c.in_flight += 1
            self._c.max_in_flight = max(self._c.max_in_flight, self._c.in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._c.in_flight -= 1

    def concurrency(self, instance_id: str, running: int) -> None:
        """``running`` inferences run on ``instance_id`` now."""
        with self._lock:
            most = self._c.max_concurrency
            most[instance_id] = max(most.get(instance_id, 0), running)

    def unloaded_busy(self) -> None:
        with self._lock:
            self._c.unloads_while_busy += 1

    @contextmanager
    def load_call(self) -> Iterator[None]:
        with self._lock:
            self._c.loads_in_flight += 1
            self._c.max_loads_in_flight = max(self._c.max_loads_in_flight, self._c.loads_in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._c.loads_in_flight -= 1
