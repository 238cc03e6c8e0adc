"""Config: layering (env over file over defaults), dotted access, validation, secrets."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from lmstrix.api.exceptions import ConfigurationError
from lmstrix.utils.config import Config


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
