"""Shared test fixtures, in sections owned by different parts of the code: append, don't clobber."""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# Databases (lmstrix.db, the registry): every storage test runs on SQLite and on a real
# PostgreSQL. PostgreSQL tests skip when the server does not answer, except under CI=true,
# where they fail: CI must prove both backends.
# ---------------------------------------------------------------------------------------------
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lmstrix.db import dispose_engines, ensure_schema
from lmstrix.db import testing as dbtesting
from lmstrix.jobs import embedded

# ---------------------------------------------------------------------------------------------
# Isolation: every test runs with its own home and XDG directories and without the caller's
# lmstrix settings, so no test can read a user's config or write to a user's registry, and no
# developer's environment can change a test's outcome. LMSTRIX_TEST_* (where the test servers
# are) and LMSTRIX_NO_REAL_MODEL (whether the real model was installed) are kept.
# ---------------------------------------------------------------------------------------------
KEPT_ENV_PREFIXES = ("LMSTRIX_TEST_", "LMSTRIX_NO_REAL_MODEL")


@pytest.fixture(autouse=True)
def isolated_user_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh HOME with XDG config, data, cache and state dirs under it; no LMSTRIX_* settings,
    no LM_API_TOKEN. Subprocesses started by the test inherit the same isolation."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    for var, sub in (
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_STATE_HOME", ".local/state"),
    ):
        (home / sub).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(home / sub))
    for name in list(os.environ):
        if name == "LM_API_TOKEN" or (
            name.startswith("LMSTRIX_") and not name.startswith(KEPT_ENV_PREFIXES)
        ):
            monkeypatch.delenv(name)
    return home


@pytest.fixture(autouse=True)
def stop_embedded_workers() -> Iterator[None]:
    """In-process workers started by a test (embedded mode) end with it, so no worker thread
    of one test claims the jobs of the next."""
    yield
    embedded.stop_all()


DB_BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The PostgreSQL server for tests (``LMSTRIX_TEST_POSTGRES_URL``, default
    ``postgresql://postgres@127.0.0.1:5432/test``)."""
    url = dbtesting.test_postgres_url()
    reason = dbtesting.postgres_unavailable(url)
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the PostgreSQL tests must run, not skip)")
        pytest.skip(reason)
    return url


@pytest.fixture(scope="session")
def postgres_database_factory(postgres_server_url: str) -> Iterator[Callable[[], str]]:
    """Creates empty databases ``lmstrix_test_<random>``; all are dropped after the session."""
    created: list[str] = []

    def make() -> str:
        url = dbtesting.create_database(postgres_server_url)
        created.append(url)
        return url

    yield make
    for url in created:
        dbtesting.drop_database(url, postgres_server_url)


@pytest.fixture(scope="session")
def shared_postgres_url(postgres_database_factory: Callable[[], str]) -> str:
    return postgres_database_factory()


@pytest.fixture(params=DB_BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: a new SQLite file, or the session's PostgreSQL database
    with every table truncated."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'lmstrix.db'}"
    else:
        url = request.getfixturevalue("shared_postgres_url")
    ensure_schema(url)
    dbtesting.truncate_all(url)
    yield url
    dispose_engines()


@pytest.fixture(params=DB_BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A brand-new database with no tables at all (migration and first-use tests)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        url = request.getfixturevalue("postgres_database_factory")()
    yield url
    dispose_engines()


# ---------------------------------------------------------------------------------------------
# The LM Studio emulator (lmstrix.testing): fixtures ``lmstudio_emulator`` and ``make_emulator``.
# ---------------------------------------------------------------------------------------------
pytest_plugins = ["lmstrix.testing.pytest_plugin"]


# ---------------------------------------------------------------------------------------------
# The real model (lmstrix.testing.real_model): SmolLM2-135M on llama.cpp, when installed by
# scripts/install-real-model.sh. ``real_model_path`` skips the test with the install hint when
# the wheels are missing; ``real_backend`` is a fresh ``RealModelBackend`` per test (creating one
# only reads the GGUF header), unloaded after the test, for ``make_emulator(backend=...)``.
# ---------------------------------------------------------------------------------------------
from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from lmstrix.testing.real_model import RealModelBackend


@pytest.fixture(scope="session")
def real_model_path() -> Path:
    """The SmolLM2 GGUF; skips (with how to install it) when the real model is not installed."""
    from lmstrix.testing.real_model import find_smollm2_gguf, real_model_unavailable_reason

    reason = real_model_unavailable_reason()
    path = find_smollm2_gguf()
    if reason is not None or path is None:
        pytest.skip(f"real model not installed: {reason}")
    return path


@pytest.fixture
def real_backend(real_model_path: Path) -> Iterator[RealModelBackend]:
    """A ``RealModelBackend`` whose instances are all unloaded after the test."""
    from lmstrix.testing.real_model import RealModelBackend

    backend = RealModelBackend(gguf_path=real_model_path)
    yield backend
    backend.close()
