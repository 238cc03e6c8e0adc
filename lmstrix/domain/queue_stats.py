"""What the queue's rows say about each host, computed from plain samples: the figures of
``/metrics``, ``lmstrix stats`` and the dashboard. Pure: the jobs layer reads the rows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class FinishedSample:
    """One job that ended, as the statistics need it."""

    host: str
    model: str | None
    kind: str
    status: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    time_to_first_token: float | None = None
    tokens_per_second: float | None = None
    response_tokens: int = 0
    load_seconds: float | None = None
    swapped: bool = False
    context_length: int | None = None  # of the loaded instance that ran it

    @property
    def latency(self) -> float | None:
        """Seconds from queueing to the end (what a caller waited)."""
        if self.finished_at is None:
            return None
        return max((self.finished_at - self.created_at).total_seconds(), 0.0)


@dataclass(frozen=True, slots=True)
class QueueLine:
    """The queued jobs of one model on one host."""

    host: str
    model: str | None
    depth: int
    oldest: datetime


@dataclass(slots=True)
class HostFigures:
    """One host's figures over a window (``lmstrix stats``)."""

    host: str
    queue_depth: int = 0
    oldest_wait: float | None = None
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    loads: int = 0
    swaps: int = 0
    mean_load_seconds: float | None = None
    tokens_per_second: float | None = None
    workers: list[dict[str, Any]] = field(default_factory=list)
    loaded_model: str | None = None
    loaded_context: int | None = None
    current_job: str | None = None

    def add_worker(self, worker: dict[str, Any], finished: Sequence[FinishedSample]) -> None:
        """Count a worker in; a live one tells the loaded model (whose context is that of the
        newest job in ``finished``, newest first, that ran on it) and its current job."""
        self.workers.append(worker)
        if not worker.get("live", True):
            return
        if worker.get("loaded_model") and self.loaded_model is None:
            self.loaded_model = worker["loaded_model"]
            self.loaded_context = next(
                (
                    s.context_length
                    for s in finished
                    if s.host == self.host and s.model == self.loaded_model and s.context_length
                ),
                None,
            )
        if worker.get("current_job") and self.current_job is None:
            self.current_job = worker["current_job"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "queue_depth": self.queue_depth,
            "oldest_wait": self.oldest_wait,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "loads": self.loads,
            "swaps": self.swaps,
            "mean_load_seconds": self.mean_load_seconds,
            "tokens_per_second": self.tokens_per_second,
            "workers": self.workers,
            "loaded_model": self.loaded_model,
            "loaded_context": self.loaded_context,
            "current_job": self.current_job,
        }


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def host_figures(
    hosts: Iterable[str],
    finished: Sequence[FinishedSample],
    queue: Sequence[QueueLine],
    now: datetime,
) -> dict[str, HostFigures]:
    """Per host: queue depth and oldest wait, then what ``finished`` (one window of ended
    jobs) says: outcomes, loads, swaps, mean load time and mean tokens per second."""
    out = {h: HostFigures(h) for h in hosts}
    for line in queue:
        f = out.setdefault(line.host, HostFigures(line.host))
        f.queue_depth += line.depth
        wait = (now - line.oldest).total_seconds()
        f.oldest_wait = max(f.oldest_wait or 0.0, wait)
    loads: dict[str, list[float]] = {}
    rates: dict[str, list[float]] = {}
    for s in finished:
        f = out.setdefault(s.host, HostFigures(s.host))
        if s.status == "succeeded":
            f.succeeded += 1
        elif s.status == "cancelled":
            f.cancelled += 1
        elif s.status in ("failed", "expired"):
            f.failed += 1
        if s.load_seconds is not None:
            f.loads += 1
            f.swaps += int(s.swapped)
            loads.setdefault(s.host, []).append(s.load_seconds)
        if s.tokens_per_second:
            rates.setdefault(s.host, []).append(s.tokens_per_second)
    for host, f in out.items():
        f.mean_load_seconds = _mean(loads.get(host, []))
        f.tokens_per_second = _mean(rates.get(host, []))
    return out


def bucket_counts(values: Iterable[float], bounds: Sequence[float]) -> tuple[list[int], float]:
    """Cumulative counts of ``values`` at or below each bound (then +Inf), and their sum: a
    Prometheus histogram's buckets."""
    counts = [0] * (len(bounds) + 1)
    total = 0.0
    for v in values:
        total += v
        for i, b in enumerate(bounds):
            if v <= b:
                counts[i] += 1
        counts[-1] += 1
    return counts, total
