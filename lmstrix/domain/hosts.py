"""The LM Studio hosts lmstrix talks to, and how it talks to them (timeouts, retries).

Both are sections of the configuration, validated where they are read; below the edges that
read the configuration they travel as these values.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import Field, SecretStr, field_validator

from lmstrix.domain.config_section import ConfigSection, masked, validate_url
from lmstrix.domain.errors import ConfigurationError

DEFAULT_BASE_URL = "http://localhost:1234"
_HOST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class HostConfig(ConfigSection):
    """One LM Studio host. ``name`` names its worker queue (``lmstudio.<name>``)."""

    name: str
    url: str
    token: SecretStr | None = None
    #: jobs of one loaded model run at once here, at most (the host's parallel slots; 1:
    #: strict serial; unset: the queue's ``max_parallel``, else what the host reports)
    max_parallel: int | None = Field(None, ge=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _HOST_NAME_RE.match(v):
            raise ValueError(
                f"host name {v!r} must start with a letter or digit and contain only letters, "
                "digits, '.', '_' or '-'"
            )
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return validate_url(v, key="hosts.url")

    def __repr__(self) -> str:
        token = "'**********'" if self.token else "None"
        return f"HostConfig(name={self.name!r}, url={masked(self.url)!r}, token={token})"


class LMStudioSettings(ConfigSection):
    """``[lmstudio]``: the default host's URL and how long and how often a client tries; ``home``
    is where this machine's LM Studio keeps its files (found when unset; ``lmstrix apply``)."""

    base_url: str = DEFAULT_BASE_URL
    timeout: float = Field(300.0, gt=0, description="seconds for one inference request")
    load_timeout: float = Field(600.0, gt=0, description="seconds for one model load")
    connect_timeout: float = Field(5.0, gt=0)
    max_retries: int = Field(3, ge=0, le=20)
    home: str | None = Field(None, description="LM Studio's home directory on this machine")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        return validate_url(v, key="lmstudio.base_url")

    def for_probe(
        self, timeout: float, *, max_retries: int, connect_timeout: float | None = None
    ) -> LMStudioSettings:
        """These settings for a short look at a host (a scan, a health check, "is anyone
        there?"): requests get ``timeout`` seconds, connecting no longer than that (or
        ``connect_timeout``), and at most ``max_retries`` retries, so a host that is down is
        reported promptly instead of after the patience an inference deserves."""
        connect = min(self.connect_timeout, timeout) if connect_timeout is None else connect_timeout
        return self.model_copy(
            update={
                "timeout": timeout,
                "connect_timeout": connect,
                "max_retries": min(self.max_retries, max_retries),
            }
        )


def find_host(hosts: Sequence[HostConfig], name: str) -> HostConfig:
    """The host called ``name``; ``ConfigurationError`` listing the known ones otherwise."""
    for h in hosts:
        if h.name == name:
            return h
    known = ", ".join(h.name for h in hosts)
    raise ConfigurationError(
        f"no host named {name!r} is configured (known: {known}); add it to LMSTRIX_HOSTS "
        "or the [[hosts]] list of the config file",
        key="hosts",
    )
