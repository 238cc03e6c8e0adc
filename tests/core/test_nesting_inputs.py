"""TOML nested thousands deep in a config or prompts file: a typed error naming file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmstrix.api.exceptions import ConfigurationError
from lmstrix.loaders.prompt_loader import PromptLoader
from lmstrix.utils.config import Config

DEEP = 5000
ARRAY = "[" * DEEP + "]" * DEEP
DOTTED = ".".join(["k"] * DEEP)


def test_config_file_nested_too_deep(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[lmstudio]\ntimeout = 5\n\n[safety]\nx = {ARRAY}\n", encoding="utf-8")
    with pytest.raises(ConfigurationError) as err:
        Config.load(path)
    message = str(err.value)
    # the bracket that opens level 65, after "x = "
    assert str(path) in message and "(at line 5, column 69)" in message
    assert "nested more than 64 levels deep" in message
    path.write_text(f"{DOTTED} = 1\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"key k\.k\.k.* nested more than 64"):
        Config.load(path)


def test_prompts_file_nested_too_deep(tmp_path: Path) -> None:
    path = tmp_path / "prompts.toml"
    path.write_text(f'ok = "fine"\n# [[[[ a comment\nbad = {ARRAY}\n', encoding="utf-8")
    with pytest.raises(ConfigurationError) as err:
        PromptLoader().load_prompts(path)
    assert f"{path}, line 3, column 71:" in str(err.value)
    path.write_text(f'[{DOTTED}]\nprompt = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigurationError, match="nested more than 64 levels deep") as err:
        PromptLoader().load_prompts(path)
    assert str(path) in str(err.value)
