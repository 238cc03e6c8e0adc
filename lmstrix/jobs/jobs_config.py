"""What the job queue needs to know of the configuration, as one value.

The edges (facades, CLI, the dramatiq entry point) read the configuration once and build this;
the jobs layer takes it as an argument and never looks at files or the environment, so a caller
that forgot to say which database it means gets a type error, not the user's real registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmstrix.domain.hosts import HostConfig, LMStudioSettings, find_host
from lmstrix.domain.queue_settings import QueueSettings
from lmstrix.domain.urls import mask_url_password


@dataclass(frozen=True, slots=True, repr=False)
class JobsConfig:
    """``database_url``: where the jobs and the registry live. ``hosts``: every configured host.
    ``redis_url``: the broker of distributed mode (None: embedded workers in this process).
    ``queue``: the queue's timing. ``lmstudio``: how clients talk to the hosts."""

    database_url: str
    hosts: tuple[HostConfig, ...]
    redis_url: str | None = None
    queue: QueueSettings = field(default_factory=QueueSettings)
    lmstudio: LMStudioSettings = field(default_factory=LMStudioSettings)

    @property
    def distributed(self) -> bool:
        """True with Redis: workers are separate dramatiq processes."""
        return bool(self.redis_url)

    def host(self, name: str) -> HostConfig:
        return find_host(self.hosts, name)

    def __repr__(self) -> str:
        redis = mask_url_password(self.redis_url) if self.redis_url else None
        return (
            f"JobsConfig(database_url={mask_url_password(self.database_url)!r}, "
            f"hosts={list(self.hosts)!r}, redis_url={redis!r})"
        )
