"""Configuration: environment, then a TOML file in the user config dir, then defaults.

``Config`` keeps the raw nested data (what ``get``/``set``/``save`` work on) and validates it into
``Settings`` (pydantic) whenever it is read, so a bad value is reported with its dotted key and the
place it came from. Secrets (host tokens, database passwords) are ``SecretStr`` or masked, so they
never show up in ``repr``, logs or error messages.

Environment variables, exactly as named:

- ``LMSTRIX_BASE_URL``      the default host's URL (``lmstudio.base_url``)
- ``LMSTRIX_HOSTS``         ``name=url,name2=url2`` (replaces the host list)
- ``LMSTRIX_DATABASE_URL``  any SQLAlchemy URL (unset: SQLite in the user data dir)
- ``LMSTRIX_REDIS_URL``     Redis URL; unset means embedded mode (in-process workers)
- ``LMSTRIX_CONFIG``        path of the TOML config file
- ``LM_API_TOKEN``          bearer token for hosts that have none of their own

Any other key can be set as ``LMSTRIX_<SECTION>__<KEY>``, e.g. ``LMSTRIX_LMSTUDIO__TIMEOUT=60``
or ``LMSTRIX_QUEUE__LEASE_SECONDS=10`` (the ``[queue]`` section tunes the job queue; see
:class:`~lmstrix.domain.queue_settings.QueueSettings`).

This module is read at the edges only (the CLI, the facades, the dramatiq entry point): they
turn the configuration into plain values (a database URL, hosts, settings sections) and pass
those down, so nothing below them looks at files or the environment.
"""

from __future__ import annotations

import copy
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs
import tomli_w
from pydantic import Field, SecretStr, field_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from lmstrix.domain.config_section import ConfigSection, MaskedModel, masked, validate_url
from lmstrix.domain.errors import ConfigurationError
from lmstrix.domain.hosts import DEFAULT_BASE_URL, HostConfig, LMStudioSettings, find_host
from lmstrix.domain.nesting import loads_toml
from lmstrix.domain.queue_settings import QueueSettings
from lmstrix.domain.serve_settings import ServeSettings
from lmstrix.domain.urls import mask_url_password

APP_NAME = "lmstrix"


class SafetySettings(ConfigSection):
    max_context_threshold: int = Field(65536, ge=256)


class DatabaseSettings(ConfigSection):
    url: str | None = None


class RedisSettings(ConfigSection):
    url: str | None = None


class OutputSettings(ConfigSection):
    verbose_by_default: bool = False


class Settings(ConfigSection):
    """The validated configuration."""

    lmstudio: LMStudioSettings = Field(default_factory=LMStudioSettings)
    hosts: list[HostConfig] = Field(default_factory=list)
    safety: SafetySettings = Field(default_factory=SafetySettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)

    @field_validator("hosts")
    @classmethod
    def _unique(cls, v: list[HostConfig]) -> list[HostConfig]:
        names = [h.name for h in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"host names must be unique, repeated: {', '.join(dupes)}")
        return v


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME))


def parse_hosts(spec: str) -> list[dict[str, Any]]:
    """Parse ``name=url,name2=url2`` (LMSTRIX_HOSTS)."""
    hosts: list[dict[str, Any]] = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, url = item.partition("=")
        if not sep or not name.strip() or not url.strip():
            raise ConfigurationError(
                f"LMSTRIX_HOSTS entry {item!r} must look like name=http://host:1234 "
                "(several separated by commas)",
                key="hosts",
                source="LMSTRIX_HOSTS",
            )
        hosts.append({"name": name.strip(), "url": url.strip()})
    return hosts


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class _Environment(MaskedModel, BaseSettings):
    """Reads lmstrix's environment variables (pydantic-settings does the parsing, including
    ``LMSTRIX_<SECTION>__<KEY>`` nesting); ``_env_layer`` turns them into a config layer."""

    model_config = SettingsConfigDict(
        env_prefix="LMSTRIX_", env_nested_delimiter="__", extra="ignore", case_sensitive=False
    )

    base_url: str | None = None
    hosts: str | None = None
    database_url: str | None = None
    redis_url: str | None = None
    config: str | None = None
    lm_api_token: SecretStr | None = Field(None, validation_alias="LM_API_TOKEN")
    lmstudio: dict[str, Any] | None = None
    safety: dict[str, Any] | None = None
    database: dict[str, Any] | None = None
    redis: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    queue: dict[str, Any] | None = None
    serve: dict[str, Any] | None = None


def _env_layer(e: _Environment) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for section in (
        "lmstudio",
        "safety",
        "database",
        "redis",
        "output",
        "queue",
        "serve",
    ):
        value = getattr(e, section)
        if value:
            layer[section] = dict(value)
    if e.base_url:
        layer.setdefault("lmstudio", {})["base_url"] = e.base_url
    if e.hosts:
        layer["hosts"] = parse_hosts(e.hosts)
    # An empty LMSTRIX_DATABASE_URL / LMSTRIX_REDIS_URL means "unset" (embedded defaults).
    if e.database_url is not None:
        layer.setdefault("database", {})["url"] = e.database_url or None
    if e.redis_url is not None:
        layer.setdefault("redis", {})["url"] = e.redis_url or None
    return layer


class Config:
    """lmstrix configuration with dotted access.

    ``Config({...})`` builds one from a dict (no environment, no file: what you pass is what you
    get, on top of the defaults). ``Config.load()`` layers the environment over the TOML file.
    """

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        *,
        path: str | Path | None = None,
        use_env: bool = False,
    ) -> None:
        environment = _Environment() if use_env else None
        self._file_data: dict[str, Any] = copy.deepcopy(dict(data or {}))
        self._env_data: dict[str, Any] = _env_layer(environment) if environment else {}
        token = environment.lm_api_token if environment else None
        self._env_token: str | None = token.get_secret_value() if token else None
        self.path: Path | None = Path(path) if path else None
        self._settings: Settings | None = None
        self.settings  # noqa: B018 - validate now so bad input fails at load time

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path | None = None) -> Config:
        """Read the TOML file (``path``, else ``LMSTRIX_CONFIG``, else the user config dir)
        and layer the environment over it."""
        env = os.environ
        named = path or env.get("LMSTRIX_CONFIG")
        chosen = Path(named or default_config_path()).expanduser()
        data: dict[str, Any] = {}
        if chosen.exists():
            try:
                data = loads_toml(chosen.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigurationError(
                    f"cannot read config file {chosen}: {exc}", source=str(chosen)
                ) from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigurationError(
                    f"config file {chosen} is not valid TOML: {exc}; fix or remove it",
                    source=str(chosen),
                ) from None
        elif named:
            raise ConfigurationError(
                f"config file {chosen} does not exist; create it or unset LMSTRIX_CONFIG",
                source=str(chosen),
            )
        return cls(data, path=chosen, use_env=True)

    # -- validated view -------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            merged = _deep_merge(self._file_data, self._env_data)
            try:
                self._settings = Settings.model_validate(merged)
            except PydanticValidationError as exc:
                raise ConfigurationError(
                    _explain(exc, self.path, bool(self._env_data)), source=str(self.path or "")
                ) from None
        return self._settings

    def as_dict(self, *, reveal_secrets: bool = False) -> dict[str, Any]:
        """The validated settings as plain data, to show; tokens and the passwords of every URL
        masked unless ``reveal_secrets``."""
        data = self.settings.model_dump(mode="json")
        for host, cfg in zip(data["hosts"], self.settings.hosts, strict=True):
            if cfg.token is not None:
                host["token"] = cfg.token.get_secret_value() if reveal_secrets else "**********"
        return data if reveal_secrets else dict(masked(data))

    # -- dotted access ----------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """Dotted lookup (``"lmstudio.base_url"``). Host tokens come back masked: use
        ``config.host(name).token`` for the secret itself."""
        node: Any = self.as_dict(reveal_secrets=True)
        for host in node["hosts"]:
            if host.get("token"):
                host["token"] = "**********"
        for part in key.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                return default
        return default if node is None else node

    def set(self, key: str, value: Any) -> None:
        """Set a dotted key in the file layer; validated at once (a bad value changes nothing)."""
        before = copy.deepcopy(self._file_data)
        node = self._file_data
        *parents, last = key.split(".")
        for p in parents:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigurationError(f"cannot set {key}: {p} is not a section", key=key)
            node = child
        node[last] = value
        self._settings = None
        try:
            self.settings  # noqa: B018
        except ConfigurationError:
            self._file_data = before
            self._settings = None
            raise

    def save(self, path: str | Path | None = None) -> Path:
        """Write the file layer (never the environment's values) as TOML, atomically."""
        target = Path(path or self.path or default_config_path()).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(tomli_w.dumps(_drop_none(self._file_data)), encoding="utf-8")
        if os.name == "posix":
            tmp.chmod(0o600)  # may hold tokens
        tmp.replace(target)
        self.path = target
        return target

    # -- resolved values ---------------------------------------------------------------------

    @property
    def hosts(self) -> list[HostConfig]:
        """The configured hosts; one host ``local`` at ``lmstudio.base_url`` when none are.

        Hosts without a token of their own get ``LM_API_TOKEN``.
        """
        s = self.settings
        hosts = list(s.hosts) or [HostConfig(name="local", url=s.lmstudio.base_url)]
        if self._env_token:
            token = SecretStr(self._env_token)
            hosts = [h if h.token else h.model_copy(update={"token": token}) for h in hosts]
        return hosts

    def host(self, name: str) -> HostConfig:
        return find_host(self.hosts, name)

    def configured_host_names(self) -> frozenset[str] | None:
        """The names of the hosts the configuration names (``local`` when only
        ``lmstudio.base_url`` is set), or None when it names none at all: then the registry's
        hosts are not judged against the implicit default."""
        s = self.settings
        if not s.hosts and "base_url" not in s.lmstudio.model_fields_set:
            return None
        return frozenset(h.name for h in self.hosts)

    def host_for_url(self, url: str) -> HostConfig:
        """The configured host with this URL, or an ad-hoc one named after it."""
        url = validate_url(url, key="base_url")
        for h in self.hosts:
            if h.url == url:
                return h
        parts = urlsplit(url)
        name = f"{parts.hostname}_{parts.port or 80}".replace(":", "_")
        token = SecretStr(self._env_token) if self._env_token else None
        return HostConfig(name=name, url=url, token=token)

    def database_url(self) -> str:
        """``database.url``, or a SQLite file in the user data dir."""
        url = self.settings.database.url
        if url:
            return url
        return f"sqlite:///{default_data_dir() / 'lmstrix.db'}"

    @property
    def redis_url(self) -> str | None:
        return self.settings.redis.url

    @property
    def distributed(self) -> bool:
        """True when Redis is configured (workers are separate dramatiq processes)."""
        return bool(self.settings.redis.url)

    def __repr__(self) -> str:
        return f"Config(path={str(self.path) if self.path else None!r}, hosts={self.hosts!r})"


def _drop_none(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    if isinstance(d, list):
        return [_drop_none(v) for v in d]
    return d


def _explain(exc: PydanticValidationError, path: Path | None, has_env: bool) -> str:
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        key = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        problems.append(f"{key}: {msg}")
    where = []
    if path:
        where.append(f"the config file {path}")
    if has_env:
        where.append("LMSTRIX_* environment variables")
    source = " or ".join(where) or "the configuration"
    return "invalid configuration: " + "; ".join(problems) + f" (fix it in {source})"


def load_config(path: str | Path | None = None) -> Config:
    """Shorthand for ``Config.load``."""
    return Config.load(path)


__all__ = [
    "APP_NAME",
    "DEFAULT_BASE_URL",
    "Config",
    "DatabaseSettings",
    "HostConfig",
    "LMStudioSettings",
    "OutputSettings",
    "QueueSettings",
    "RedisSettings",
    "SafetySettings",
    "Settings",
    "default_config_path",
    "default_data_dir",
    "load_config",
    "mask_url_password",
    "parse_hosts",
    "validate_url",
]
