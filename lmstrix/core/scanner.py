"""``Scanner``: read every configured LM Studio host's model list into the registry.

A host that does not answer is reported and left alone: its models are *not* marked missing,
because "unreachable" says nothing about what is downloaded there. Only a host that answered
can make a model vanish (and even then it is marked missing, never deleted with its history).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from lmstrix.api.client import LMStudioClient
from lmstrix.api.exceptions import LMStrixError
from lmstrix.core.models import Model, ModelRegistry, ScanSummary
from lmstrix.utils.config import Config, HostConfig


@dataclass(frozen=True, slots=True)
class HostScan:
    """What scanning one host did."""

    host: str
    url: str
    summary: ScanSummary | None = None
    api_generation: str | None = None
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "url": self.url,
            "ok": self.ok,
            "api_generation": self.api_generation,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            **(self.summary.counts() if self.summary else {}),
            "added": list(self.summary.added) if self.summary else [],
            "updated": list(self.summary.updated) if self.summary else [],
            "missing": list(self.summary.missing) if self.summary else [],
        }


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
        s = self.config.settings.lmstudio
        return LMStudioClient(
            host.url,
            token=host.token,
            timeout=self.timeout,
            connect_timeout=min(s.connect_timeout, self.timeout),
            max_retries=min(s.max_retries, 1),  # a scan should report a down host quickly
        )

    def scan_hosts(self, on_host: Callable[[HostScan], None] | None = None) -> list[HostScan]:
        """Scan every host (in parallel: hosts are independent), calling ``on_host`` as each
        finishes; returns one ``HostScan`` per host, in configuration order."""
        hosts = self.hosts
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(hosts)))) as pool:
            futures = [pool.submit(self._scan_one, h) for h in hosts]
            results = []
            for fut in futures:
                result = fut.result()
                if on_host is not None:
                    on_host(result)
                results.append(result)
        self.last_scan = results
        return results

    def _scan_one(self, host: HostConfig) -> HostScan:
        started = time.perf_counter()
        try:
            with self.client(host) as client:
                records = client.list_models()
                generation = str(client.api_generation)
            summary = self.registry.upsert_from_scan(
                host.name, host.url, records, api_generation=generation
            )
        except LMStrixError as exc:
            return HostScan(
                host.name, host.url, seconds=time.perf_counter() - started, error=str(exc)
            )
        return HostScan(
            host.name,
            host.url,
            summary=summary,
            api_generation=generation,
            seconds=time.perf_counter() - started,
        )

    def scan_models(self, refresh: bool = True) -> list[Model]:
        """Rescan the hosts (``refresh=True``) and return the registry's models.

        With ``refresh=False`` the registry is returned as it is, without contacting any host.
        """
        if refresh:
            self.scan_hosts()
        return self.registry.list_models()

    def check_health(self) -> dict[str, dict[str, Any]]:
        """Per host: reachable, API generation, models, loaded instances, latency, error."""
        out: dict[str, dict[str, Any]] = {}
        for host in self.hosts:
            with self.client(host) as client:
                out[host.name] = client.health().to_dict()
        return out
