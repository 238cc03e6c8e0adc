"""Fixtures for the CLI tests."""

from __future__ import annotations

import pytest
from helpers.configs import CliEnv


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> CliEnv:
    """``cli_env(host_url, database_url, **more)`` points the lmstrix CLI at one host ``h1``
    and a database, with quick retries, and returns the variables it set. The user's own
    settings are already out of reach (``isolated_user_dirs`` in tests/conftest.py)."""

    def use(host_url: str, database_url: str, **more: str) -> dict[str, str]:
        values = {
            "LMSTRIX_HOSTS": f"h1={host_url}",
            "LMSTRIX_DATABASE_URL": database_url,
            "LMSTRIX_QUEUE__RETRY_DELAYS": "0.01",
            **more,
        }
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        return values

    return use
