"""``lmstrix demo``: the quick start's main job, end to end in one process."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from lmstrix.cli import cli
from lmstrix.testing.emulator import LMStudioEmulator


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "LMSTRIX_DATABASE_URL": f"sqlite:///{tmp_path / 'main.db'}",
        "LMSTRIX_BASE_URL": "http://127.0.0.1:9",  # nothing listens there
        "LMSTRIX_HOSTS": "",
        "LMSTRIX_REDIS_URL": "",
    }


def test_demo_starts_the_emulator_when_no_lm_studio_answers(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = CliRunner().invoke(cli, ["demo"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "No LM Studio answers at http://127.0.0.1:9" in result.output
    assert "Started the LM Studio emulator" in result.output
    assert "A: " in result.output and "job " in result.output
    # the emulator's models went to a registry of their own, not the configured one
    assert (tmp_path / "data" / "lmstrix" / "emulator-demo.db").exists()
    assert not (tmp_path / "main.db").exists()


def test_demo_uses_lm_studio_when_it_answers(
    env: dict[str, str], lmstudio_emulator: LMStudioEmulator
) -> None:
    env["LMSTRIX_BASE_URL"] = lmstudio_emulator.url
    result = CliRunner().invoke(
        cli, ["demo", "--prompt", "What is 2+3?"], env=env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert f"LM Studio answers at {lmstudio_emulator.url}" in result.output
    assert "Started the LM Studio emulator" not in result.output
    assert "A: 5" in result.output
    assert lmstudio_emulator.counters.inferences == 1
