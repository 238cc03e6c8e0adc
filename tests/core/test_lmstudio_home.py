"""Finding LM Studio's home: the setting, the pointer file, the usual places, or a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmstrix.core.lmstudio_home import find_lmstudio_home
from lmstrix.domain.errors import ConfigurationError


def test_the_setting_wins_and_must_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / ".lmstudio").mkdir()
    chosen = tmp_path / "elsewhere"
    chosen.mkdir()
    assert find_lmstudio_home(chosen, user_home=tmp_path) == chosen
    with pytest.raises(ConfigurationError) as err:
        find_lmstudio_home(tmp_path / "missing", user_home=tmp_path)
    assert err.value.key == "lmstudio.home" and "LMSTRIX_LMSTUDIO__HOME" in str(err.value)


def test_the_pointer_file_comes_before_the_usual_places(tmp_path: Path) -> None:
    (tmp_path / ".lmstudio").mkdir()
    moved = tmp_path / "big-disk" / "lmstudio"
    moved.mkdir(parents=True)
    (tmp_path / ".lmstudio-home-pointer").write_text(f"{moved}\n", encoding="utf-8")
    assert find_lmstudio_home(user_home=tmp_path) == moved
    # a pointer to nothing is ignored
    (tmp_path / ".lmstudio-home-pointer").write_text(f"{tmp_path / 'gone'}\n", encoding="utf-8")
    assert find_lmstudio_home(user_home=tmp_path) == tmp_path / ".lmstudio"


def test_the_usual_places_in_order(tmp_path: Path) -> None:
    (tmp_path / ".cache" / "lm-studio").mkdir(parents=True)
    assert find_lmstudio_home(user_home=tmp_path) == tmp_path / ".cache" / "lm-studio"
    (tmp_path / ".lmstudio").mkdir()
    assert find_lmstudio_home(user_home=tmp_path) == tmp_path / ".lmstudio"
    assert find_lmstudio_home("", user_home=tmp_path) == tmp_path / ".lmstudio"  # unset


def test_no_home_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as err:
        find_lmstudio_home(user_home=tmp_path)
    message = str(err.value)
    assert str(tmp_path / ".lmstudio") in message and "LMSTRIX_LMSTUDIO__HOME" in message
    assert "\n" not in message
