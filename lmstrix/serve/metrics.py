"""``GET /metrics``: the queue in Prometheus text, read from the database at each scrape.

The rows are the truth and several processes write them (dramatiq workers anywhere), so the
figures are computed from the jobs table rather than counted in this process:

- ``lmstrix_jobs{status,host,kind}``: the rows the table holds;
- ``lmstrix_queue_depth{host,model}`` and ``lmstrix_queue_oldest_wait_seconds{host,model}``;
- over the jobs that ended within the last hour: the histograms
  ``lmstrix_job_latency_seconds{host,kind}`` (queued to ended),
  ``lmstrix_time_to_first_token_seconds{host}`` and ``lmstrix_model_load_seconds{host}``, and
  the gauges ``lmstrix_model_loads{host}``, ``lmstrix_model_swaps{host}`` and
  ``lmstrix_tokens_per_second{host,model}`` (mean);
- ``lmstrix_workers{host,mode}``: live workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lmstrix.core.gateway import Gateway
from lmstrix.core.jobs import QueueSnapshot
from lmstrix.domain.queue_stats import bucket_counts

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
LOAD_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300)


def _histogram(
    name: str,
    doc: str,
    labels: list[str],
    groups: dict[tuple[str, ...], list[float]],
    bounds: tuple[float, ...],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for key, values in sorted(groups.items()):
        counts, total = bucket_counts(values, bounds)
        buckets = [(str(float(b)), c) for b, c in zip(bounds, counts, strict=False)]
        buckets.append(("+Inf", counts[-1]))
        family.add_metric(list(key), buckets, total)
    return family


def families(snap: QueueSnapshot) -> Iterator[Metric]:
    jobs = GaugeMetricFamily(
        "lmstrix_jobs", "Jobs the table holds", labels=["status", "host", "kind"]
    )
    for status, host, kind, n in snap.counts:
        jobs.add_metric([status, host, kind], n)
    yield jobs
    depth = GaugeMetricFamily(
        "lmstrix_queue_depth", "Queued jobs by host and model", labels=["host", "model"]
    )
    oldest = GaugeMetricFamily(
        "lmstrix_queue_oldest_wait_seconds",
        "How long the oldest queued job has waited",
        labels=["host", "model"],
    )
    for line in snap.queue:
        depth.add_metric([line.host, line.model or ""], line.depth)
        oldest.add_metric(
            [line.host, line.model or ""], (snap.taken_at - line.oldest).total_seconds()
        )
    yield depth
    yield oldest
    latency: dict[tuple[str, ...], list[float]] = {}
    ttft: dict[tuple[str, ...], list[float]] = {}
    loads: dict[tuple[str, ...], list[float]] = {}
    rates: dict[tuple[str, ...], list[float]] = {}
    for s in snap.finished:
        if s.latency is not None and s.status == "succeeded":
            latency.setdefault((s.host, s.kind), []).append(s.latency)
        if s.time_to_first_token is not None:
            ttft.setdefault((s.host,), []).append(s.time_to_first_token)
        if s.load_seconds is not None:
            loads.setdefault((s.host,), []).append(s.load_seconds)
        if s.tokens_per_second:
            rates.setdefault((s.host, s.model or ""), []).append(s.tokens_per_second)
    yield _histogram(
        "lmstrix_job_latency_seconds",
        "Queued-to-ended seconds of the jobs that succeeded in the last hour",
        ["host", "kind"],
        latency,
        LATENCY_BUCKETS,
    )
    yield _histogram(
        "lmstrix_time_to_first_token_seconds",
        "Time to first token of the jobs that ended in the last hour",
        ["host"],
        ttft,
        TTFT_BUCKETS,
    )
    yield _histogram(
        "lmstrix_model_load_seconds",
        "Model load seconds in the last hour",
        ["host"],
        loads,
        LOAD_BUCKETS,
    )
    per_host = GaugeMetricFamily(
        "lmstrix_model_loads", "Model loads in the last hour", labels=["host"]
    )
    swaps = GaugeMetricFamily(
        "lmstrix_model_swaps",
        "Loads in the last hour that replaced another model",
        labels=["host"],
    )
    for f in snap.hosts:
        per_host.add_metric([f.host], f.loads)
        swaps.add_metric([f.host], f.swaps)
    yield per_host
    yield swaps
    tps = GaugeMetricFamily(
        "lmstrix_tokens_per_second",
        "Mean generation speed of the jobs that ended in the last hour",
        labels=["host", "model"],
    )
    for key, values in sorted(rates.items()):
        tps.add_metric(list(key), sum(values) / len(values))
    yield tps
    workers = GaugeMetricFamily("lmstrix_workers", "Live workers", labels=["host", "mode"])
    by: dict[tuple[str, str], int] = {}
    for w in snap.workers:
        key = (str(w["host"]), str(w["mode"]))
        by[key] = by.get(key, 0) + 1
    for key, n in sorted(by.items()):
        workers.add_metric(list(key), n)
    yield workers


class _SnapshotCollector(Collector):
    def __init__(self, take: Callable[[], QueueSnapshot]) -> None:
        self.take = take

    def collect(self) -> Iterable[Metric]:
        return list(families(self.take()))


def render(gateway: Gateway) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(gateway.snapshot))
    return generate_latest(registry)


async def metrics(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    body = await asyncio.to_thread(render, gateway)
    return Response(body, media_type=CONTENT_TYPE)


ROUTES: list[Any] = [Route("/metrics", metrics, methods=["GET"])]
