"""The one way lmstrix builds a client for a configured host."""

from __future__ import annotations

from lmstrix.api.client import LMStudioClient
from lmstrix.domain.hosts import HostConfig, LMStudioSettings


def client_for(host: HostConfig, lmstudio: LMStudioSettings) -> LMStudioClient:
    """A client for ``host`` with the timeouts and retries of ``lmstudio``.

    Callers that only take a short look at a host pass ``lmstudio.for_probe(...)``, so a host
    that is down is reported promptly.
    """
    return LMStudioClient(
        host.url,
        token=host.token,
        timeout=lmstudio.timeout,
        load_timeout=lmstudio.load_timeout,
        connect_timeout=lmstudio.connect_timeout,
        max_retries=lmstudio.max_retries,
    )
