"""``Scanner``: read every configured LM Studio host's model list into the registry.

A host that does not answer is reported and left alone: its models are *not* marked missing,
because "unreachable" says nothing about what is downloaded there. Only a host that answered
can make a model vanish (and even then it is marked missing, never deleted with its history).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from lmstrix.api.client import LMStudioClient
from lmstrix.api.factory import client_for
from lmstrix.core.config import Config, HostConfig, LMStudioSettings
from lmstrix.core.models import Model, ModelRegistry, ScanSummary
from lmstrix.domain.errors import LMStrixError, LMStudioAuthError
from lmstrix.domain.host_types import ModelRecord


@dataclass(frozen=True, slots=True)
class HostScan:
    """What scanning one host did."""

    host: str
    url: str
    summary: ScanSummary | None = None
    api_generation: str | None = None
    seconds: float = 0.0
    error: str | None = None
    #: the host answered but wants a (valid) API token
    auth_required: bool = False
    capabilities: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``counts`` (added/updated/missing/unchanged numbers) and the model keys
        of each kind. A host that did not answer has ``ok`` false, its ``error``, zero counts
        and empty lists."""
        s = self.summary or ScanSummary(host=self.host)
        return {
            "host": self.host,
            "url": self.url,
            "ok": self.ok,
            "api_generation": self.api_generation,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "auth_required": self.auth_required,
            "capabilities": self.capabilities,
            "counts": s.counts(),
            "added": list(s.added),
            "updated": list(s.updated),
            "missing": list(s.missing),
            "unchanged": list(s.unchanged),
        }


def lmstudio_answers(host: HostConfig, lmstudio: LMStudioSettings) -> bool:
    """Whether an LM Studio server greets at ``host``'s URL, within about a second and without
    retries: a quick "is it running?" before deciding what to use."""
    probe = lmstudio.for_probe(3, max_retries=0, connect_timeout=1)
    try:
        with client_for(host, probe) as client:
            return client.greeting()
    except LMStrixError:
        return False


@dataclass
class Scanner:
    """Scans LM Studio hosts into the registry.

    ``base_url`` scans just that URL (as a host named after the configured one with that URL, or
    after its address); without it every configured host is scanned.
    """

    base_url: str | None = None
    timeout: float = 30.0
    config: Config | None = None
    database_url: str | None = None
    last_scan: list[HostScan] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.config = self.config or Config.load()
        self.registry = ModelRegistry(self.database_url or self.config.database_url())

    @property
    def hosts(self) -> list[HostConfig]:
        assert self.config is not None
        if self.base_url:
            return [self.config.host_for_url(self.base_url)]
        return self.config.hosts

    def client(self, host: HostConfig) -> LMStudioClient:
        assert self.config is not None
        # One retry at most: a scan should report a down host quickly.
        lmstudio = self.config.settings.lmstudio.for_probe(self.timeout, max_retries=1)
        return client_for(host, lmstudio)

    def scan_hosts(self, on_host: Callable[[HostScan], None] | None = None) -> list[HostScan]:
        """Scan every host (in parallel: hosts are independent), calling ``on_host`` (in the
        calling thread) as each finishes; returns one ``HostScan`` per host, in configuration
        order.

        A host that does not answer (or answers with an error) is reported in its ``HostScan``;
        a failure of the registry itself is not a host's fault and is raised.
        """
        hosts = self.hosts
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(hosts)))) as pool:
            futures = [pool.submit(self._scan_one, h) for h in hosts]
            if on_host is not None:
                for fut in as_completed(futures):
                    on_host(fut.result())
            results = [fut.result() for fut in futures]
        self.last_scan = results
        return results

    def _scan_one(self, host: HostConfig) -> HostScan:
        started = time.perf_counter()
        try:
            with self.client(host) as client:
                records: list[ModelRecord] = client.list_models()
                generation = str(client.api_generation)
                capabilities = client.capabilities.to_dict()
        except LMStrixError as exc:
            return HostScan(
                host.name,
                host.url,
                seconds=time.perf_counter() - started,
                error=str(exc),
                auth_required=isinstance(exc, LMStudioAuthError),
            )
        # Outside the try: a registry failure must not pass for an unreachable host.
        summary = self.registry.upsert_from_scan(
            host.name, host.url, records, api_generation=generation, capabilities=capabilities
        )
        return HostScan(
            host.name,
            host.url,
            summary=summary,
            api_generation=generation,
            seconds=time.perf_counter() - started,
            capabilities=capabilities,
        )

    def scan_models(self, refresh: bool = True) -> list[Model]:
        """Rescan the hosts (``refresh=True``) and return the registry's models.

        With ``refresh=False`` the registry is returned as it is, without contacting any host.
        """
        if refresh:
            self.scan_hosts()
        return self.registry.list_models()

    def check_health(self) -> dict[str, dict[str, Any]]:
        """Per host (in configuration order): url, reachable, is_lmstudio, api_generation,
        models, loaded_instances, latency_ms, error. Hosts are probed in parallel, so one down
        host does not delay the others; a down host is reported, never raised."""
        hosts = self.hosts
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(hosts)))) as pool:
            futures: list[Future[dict[str, Any]]] = [pool.submit(self._health, h) for h in hosts]
            return {h.name: fut.result() for h, fut in zip(hosts, futures, strict=True)}

    def _health(self, host: HostConfig) -> dict[str, Any]:
        with self.client(host) as client:
            return client.health().to_dict()
