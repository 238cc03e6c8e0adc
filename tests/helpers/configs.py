"""A ``Config`` for tests: the given hosts, quick retries, nothing read from the environment."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lmstrix.testing import LMStudioEmulator
from lmstrix.utils.config import Config

Host = LMStudioEmulator | str | tuple[str, str]

# ``cli_env(host_url, database_url, **more)``: the CLI tests' environment (tests/cli/conftest.py).
CliEnv = Callable[..., dict[str, str]]


def config_for(
    *hosts: Host, retry_delays: Sequence[float] = (0.01, 0.01), **sections: dict[str, Any]
) -> Config:
    """Hosts are emulators or URLs (named ``h1``, ``h2``, ... in order) or ``(name, url)``
    pairs. Retries of connection failures wait ``retry_delays``, so a test of a host that went
    away takes milliseconds; ``sections`` add or override whole config sections."""
    entries = []
    for i, host in enumerate(hosts, 1):
        if isinstance(host, tuple):
            name, url = host
        else:
            name, url = f"h{i}", host.url if isinstance(host, LMStudioEmulator) else host
        entries.append({"name": name, "url": url})
    data: dict[str, Any] = {"hosts": entries, "queue": {"retry_delays": list(retry_delays)}}
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return Config(data)
