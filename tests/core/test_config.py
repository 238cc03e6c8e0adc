"""Config: layering (env over file over defaults), dotted access, validation, secrets."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lmstrix.api.exceptions import ConfigurationError
from lmstrix.domain.urls import mask_url_password
from lmstrix.utils.config import Config
from lmstrix.utils.logging import redact


def test_defaults_without_file_or_env() -> None:
    c = Config.load()
    assert c.get("lmstudio.base_url") == "http://localhost:1234"
    assert c.get("safety.max_context_threshold") == 65536
    assert c.get("redis.url") is None
    assert not c.distributed
    assert [h.name for h in c.hosts] == ["local"]
    assert c.hosts[0].url == "http://localhost:1234"
    assert c.database_url().startswith("sqlite:///")
    assert c.database_url().endswith("lmstrix.db")
    assert c.get("no.such.key", "fallback") == "fallback"


def test_dict_config_as_in_the_api_doc() -> None:
    c = Config(
        {
            "lmstudio": {"base_url": "http://remote:1234/"},
            "safety": {"max_context_threshold": 32768},
        }
    )
    assert c.get("lmstudio.base_url") == "http://remote:1234"
    assert c.get("safety.max_context_threshold") == 32768
    assert c.hosts[0].url == "http://remote:1234"


def test_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "lmstrix.toml"
    cfg.write_text(
        '[lmstudio]\nbase_url = "http://file-host:1234"\ntimeout = 30\n'
        '[database]\nurl = "sqlite:///from-file.db"\n'
    )
    monkeypatch.setenv("LMSTRIX_CONFIG", str(cfg))
    c = Config.load()
    assert c.get("lmstudio.base_url") == "http://file-host:1234"
    assert c.get("lmstudio.timeout") == 30
    monkeypatch.setenv("LMSTRIX_BASE_URL", "http://env-host:9999")
    monkeypatch.setenv("LMSTRIX_DATABASE_URL", "postgresql://u@db/lmstrix")
    monkeypatch.setenv("LMSTRIX_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("LMSTRIX_LMSTUDIO__TIMEOUT", "12.5")
    c = Config.load()
    assert c.get("lmstudio.base_url") == "http://env-host:9999"
    assert c.get("lmstudio.timeout") == 12.5
    assert c.database_url() == "postgresql://u@db/lmstrix"
    assert c.redis_url == "redis://127.0.0.1:6379/0"
    assert c.distributed


def test_hosts_env_and_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMSTRIX_HOSTS", "studio=http://10.0.0.5:1234, mac=http://mac.local:1234")
    monkeypatch.setenv("LM_API_TOKEN", "sk-lm-abcdefgh:secretsecretsecret12")
    c = Config.load()
    assert [(h.name, h.url) for h in c.hosts] == [
        ("studio", "http://10.0.0.5:1234"),
        ("mac", "http://mac.local:1234"),
    ]
    token = c.host("mac").token
    assert token is not None and token.get_secret_value().startswith("sk-lm-")
    # the secret never shows in repr, get() or as_dict()
    for text in (repr(c), repr(c.hosts), str(c.get("hosts")), str(c.as_dict())):
        assert "secretsecret" not in text
    with pytest.raises(ConfigurationError, match="no host named 'nope'"):
        c.host("nope")


@pytest.mark.parametrize(
    ("spec", "needle"),
    [("justaname", "name=http"), ("a=http://x:1,a=http://y:2", "unique"), ("a b=http://x", "a b")],
)
def test_bad_hosts_are_named(monkeypatch: pytest.MonkeyPatch, spec: str, needle: str) -> None:
    monkeypatch.setenv("LMSTRIX_HOSTS", spec)
    with pytest.raises(ConfigurationError, match=needle):
        Config.load()


def test_bad_values_name_the_key_and_the_source(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[lmstudio]\nbase_url = "localhost:1234"\n')
    with pytest.raises(ConfigurationError) as e:
        Config.load(cfg)
    assert "lmstudio.base_url" in str(e.value) and str(cfg) in str(e.value)
    cfg.write_text("[lmstudio\n")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        Config.load(cfg)
    with pytest.raises(ConfigurationError, match="does not exist"):
        Config.load(tmp_path / "missing.toml")
    with pytest.raises(ConfigurationError, match=r"unknown_key"):
        Config({"lmstudio": {"unknown_key": 1}})


def test_set_validates_and_save_roundtrips(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "config.toml"
    c = Config({"hosts": [{"name": "a", "url": "http://a:1", "token": "sk-lm-tok"}]}, path=path)
    c.set("output.verbose_by_default", True)
    with pytest.raises(ConfigurationError, match="max_context_threshold"):
        c.set("safety.max_context_threshold", 3)
    assert c.get("safety.max_context_threshold") == 65536  # the bad set changed nothing
    c.save()
    saved = tomllib.loads(path.read_text())
    assert saved["output"]["verbose_by_default"] is True
    assert saved["hosts"][0]["token"] == "sk-lm-tok"
    assert path.stat().st_mode & 0o077 == 0  # tokens inside: not world-readable
    again = Config.load(path)
    assert again.get("output.verbose_by_default") is True
    assert again.host("a").token is not None


def test_save_never_writes_environment_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.toml"
    path.write_text("")
    monkeypatch.setenv("LMSTRIX_DATABASE_URL", "postgresql://u:pw@db/x")
    c = Config.load(path)
    assert "pw" not in str(c.as_dict())
    c.set("lmstudio.timeout", 99)
    c.save()
    text = path.read_text()
    assert "postgresql" not in text and "99" in text


def test_tests_never_see_the_users_directories(isolated_user_dirs: Path) -> None:
    c = Config.load()
    assert Path(c.database_url().removeprefix("sqlite:///")).is_relative_to(isolated_user_dirs)
    assert c.path is None or c.path.is_relative_to(isolated_user_dirs)
    from lmstrix.utils.config import default_config_path

    assert default_config_path().is_relative_to(isolated_user_dirs)


def test_queue_section_defaults_file_env_and_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = Config()
    q = c.settings.queue
    assert (q.lease_seconds, q.reap_every, q.linger_seconds, q.max_attempts) == (30, 15, 5, 3)
    assert q.retry_delays == (1, 2, 4, 8, 16)
    assert (q.policy.max_wait, q.policy.max_run) == (300, 100)
    assert c.get("queue.lease_seconds") == 30

    cfg = tmp_path / "config.toml"
    cfg.write_text("[queue]\nlease_seconds = 8\nretry_delays = [0.5, 1]\n")
    monkeypatch.setenv("LMSTRIX_QUEUE__MAX_WAIT", "60")
    monkeypatch.setenv("LMSTRIX_QUEUE__RETRY_DELAYS", "0.01, 0.02")
    q = Config.load(cfg).settings.queue
    assert (q.lease_seconds, q.reap_every, q.max_wait) == (8, 4, 60)
    assert q.retry_delays == (0.01, 0.02)  # the environment wins over the file

    c.set("queue.reaper_interval", 2)
    assert c.settings.queue.reap_every == 2
    for key, bad in [
        ("queue.lease_seconds", 0),
        ("queue.max_attempts", "many"),
        ("queue.retry_delays", [1, -1]),
        ("queue.max_run", 0),
        ("queue.no_such_key", 1),
    ]:
        with pytest.raises(ConfigurationError, match=key.split(".")[1]):
            c.set(key, bad)
    assert c.get("queue.lease_seconds") == 30 and c.get("queue.max_run") == 100


def test_a_bad_queue_value_in_the_environment_names_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LMSTRIX_QUEUE__LEASE_SECONDS", "soon")
    with pytest.raises(ConfigurationError, match=r"queue\.lease_seconds") as e:
        Config.load()
    assert "LMSTRIX_" in str(e.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@db/x", "postgresql://u:***@db/x"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgresql://u:p@ss@db/x?a=b@c", "postgresql://u:***@db/x?a=b@c"),
        ("postgresql://u:pa/ss@db/x", "postgresql://u:***@db/x"),
        ("sqlite:////tmp/lmstrix.db", "sqlite:////tmp/lmstrix.db"),
        ("no such thing://", "no such thing://"),
        (
            "at postgresql://u:pw@db/x and redis://:pw@r/0",
            "at postgresql://u:***@db/x and redis://:***@r/0",
        ),
    ],
)
def test_one_url_masking_helper(url: str, shown: str) -> None:
    assert mask_url_password(url) == shown
    assert mask_url_password(url) == redact(url)


def test_the_lower_layers_never_read_the_configuration() -> None:
    """lmstrix.db, lmstrix.jobs, lmstrix.api and lmstrix.domain get every setting as an
    argument: importing all of them loads neither the configuration nor any facade."""
    code = (
        "import sys, pkgutil, importlib, lmstrix\n"
        "for pkg in ('db', 'jobs', 'api', 'domain'):\n"
        "    root = importlib.import_module('lmstrix.' + pkg)\n"
        "    for m in pkgutil.walk_packages(root.__path__, root.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('lmstrix.utils', 'lmstrix.core'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
