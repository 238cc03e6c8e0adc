"""No secret in any repr or str of any settings object reachable from ``Config``.

The test plants a distinct secret in every URL and token field of every settings class it finds
by walking ``Settings`` through its fields (so a section added later is covered without touching
this file), loads the configuration from a file and the environment, and then looks at the
``repr`` and ``str`` of every object at every level, and at what is shown to people.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from pydantic import BaseModel, SecretStr

from lmstrix.api.exceptions import ConfigurationError
from lmstrix.core import config as config_module
from lmstrix.core.job_service import jobs_config
from lmstrix.utils.config import Config, Settings


def model_classes(cls: type[BaseModel]) -> Iterator[type[BaseModel]]:
    """``cls`` and every model class its fields hold, at any depth (through lists and unions)."""
    seen: set[type[BaseModel]] = set()
    todo = [cls]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        yield current
        for f in current.model_fields.values():
            todo.extend(models_in(f.annotation))


def models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in models_in(arg)]


def is_secret_field(name: str, annotation: Any) -> str | None:
    """ "url" or "token" for a field that can hold a secret, else None."""
    args = set(typing.get_args(annotation)) | {annotation}
    if SecretStr in args:
        return "token"
    if str in args and ("url" in name or "token" in name):
        return "url"
    return None


def plant(cls: type[BaseModel], path: str, secrets: list[str]) -> dict[str, Any]:
    """Data for ``cls`` with a secret in every URL and token field (and one list entry for
    lists of models)."""
    data: dict[str, Any] = {}
    for name, f in cls.model_fields.items():
        where = f"{path}.{name}".strip(".")
        kind = is_secret_field(name, f.annotation)
        if kind is not None:
            secret = f"s3cret-{where.replace('.', '-')}"
            secrets.append(secret)
            data[name] = secret if kind == "token" else f"http://user:{secret}@example.com:1234"
        nested = models_in(f.annotation)
        if nested:
            inner = plant(nested[0], where, secrets)
            origin = typing.get_origin(f.annotation)
            if origin is list:
                inner.setdefault("name", "h1")
                data[name] = [inner]
            elif inner:
                data[name] = inner
    return data


def objects(value: Any) -> Iterator[Any]:
    """``value`` and every model, list and dict inside it (not the plain values themselves: a
    URL's ``str`` is the URL)."""
    if isinstance(value, BaseModel | list | tuple | dict):
        yield value
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from objects(getattr(value, name))
    elif isinstance(value, list | tuple):
        for v in value:
            yield from objects(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from objects(v)


def test_the_walk_finds_every_section() -> None:
    names = {c.__name__ for c in model_classes(Settings)}
    assert {
        "Settings",
        "LMStudioSettings",
        "HostConfig",
        "DatabaseSettings",
        "RedisSettings",
        "QueueSettings",
        "SafetySettings",
        "OutputSettings",
    } <= names


def test_no_secret_in_any_repr_or_str(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets: list[str] = []
    data = plant(Settings, "", secrets)
    data["database"]["url"] = "postgresql://lmstrix:s3cret-db-pw@db.example.com/lmstrix"
    data["redis"]["url"] = "redis://:s3cret-redis-pw@redis.example.com:6379/0"
    secrets += ["s3cret-db-pw", "s3cret-redis-pw"]
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    env = {
        "LM_API_TOKEN": "s3cret-env-token",
        "LMSTRIX_DATABASE_URL": "postgresql://u:s3cret-env-db@db/x",
        "LMSTRIX_REDIS_URL": "redis://u:s3cret-env-redis@r:6379/1",
        "LMSTRIX_CONFIG": str(path),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    secrets += ["s3cret-env-token", "s3cret-env-db", "s3cret-env-redis"]

    # the file's secrets (those the environment does not replace) and the environment's are in
    # the values: the planting worked
    config = Config.load()
    settings = config.settings
    assert "s3cret-env-db" in config.database_url() and "s3cret-env-redis" in str(config.redis_url)
    assert "s3cret-lmstudio-base_url" in settings.lmstudio.base_url
    assert settings.hosts[0].token is not None
    assert settings.hosts[0].token.get_secret_value() == "s3cret-hosts-token"
    assert "s3cret-hosts-url" in settings.hosts[0].url
    planted_in_file = len(secrets) - 5
    assert planted_in_file >= 5  # database, redis, lmstudio.base_url, hosts.url, hosts.token

    shown: list[Any] = [
        config,
        config.hosts,
        config.host("h1"),
        config.host_for_url("http://other:pw-not-secret@h:1"),
        jobs_config(config),
        config.as_dict(),  # what is shown to people (``Config.get`` returns values to use)
        config_module._Environment(),
        *objects(settings),
        *objects(config.hosts),
    ]
    seen_types = {type(o).__name__ for o in shown}
    assert {"Settings", "HostConfig", "LMStudioSettings", "QueueSettings", "JobsConfig"} <= (
        seen_types
    )
    for obj in shown:
        for text in (repr(obj), str(obj)):
            leaked = [s for s in secrets if s in text]
            assert not leaked, f"{type(obj).__name__} shows {leaked}: {text[:300]}"
    # the masked forms are still informative
    assert "postgresql://u:***@db/x" in repr(jobs_config(config))
    assert "http://user:***@example.com:1234" in repr(settings.lmstudio)


def test_bad_url_errors_do_not_echo_the_password() -> None:
    with pytest.raises(ConfigurationError) as err:
        Config({"hosts": [{"name": "a", "url": "ftp://u:s3cret-bad@x:1"}]})
    assert "s3cret-bad" not in str(err.value) and "ftp://u:***@x:1" in str(err.value)
