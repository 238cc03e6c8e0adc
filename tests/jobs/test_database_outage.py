"""A PostgreSQL that goes away for a moment: callers whose jobs succeed get their results, a
worker holding an answer keeps it, and an outage that outlasts the call is a typed error. The
database is real; a proxy in front of it is what gets cut, so other tests keep their server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.configs import config_for
from helpers.tcp_proxy import TcpProxy
from helpers.waiting import wait_for
from sqlalchemy.engine import make_url

from lmstrix.cli import cli
from lmstrix.core.inference_manager import InferenceManager, InferenceResult
from lmstrix.db.migrate import ensure_schema
from lmstrix.domain.errors import DatabaseUnavailableError
from lmstrix.jobs.store import JobStore
from lmstrix.testing import LMStudioEmulator

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MODEL = "llama-3.2-1b-instruct"
SECRET = "s3cret-pw"


@pytest.fixture
def proxied(postgres_database_factory: Callable[[], str]) -> Iterator[tuple[str, str, TcpProxy]]:
    """(the database's own URL, the same database through a proxy, the proxy)."""
    direct = postgres_database_factory()
    ensure_schema(direct)
    url = make_url(direct)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        # trust auth ignores the password: it is there to prove it never shows
        through = url.set(host="127.0.0.1", port=proxy.port, password=SECRET)
        yield direct, through.render_as_string(hide_password=False), proxy


@pytest.fixture
def slow_host() -> Iterator[LMStudioEmulator]:
    emu = LMStudioEmulator(clock="real", tokens_per_second=50.0, load_seconds=0.0).start()
    yield emu
    emu.stop()


def test_the_store_names_an_unreachable_database_without_its_password(
    proxied: tuple[str, str, TcpProxy],
) -> None:
    _, url, proxy = proxied
    store = JobStore(url)
    assert store.list_jobs() == []
    proxy.cut()
    with pytest.raises(DatabaseUnavailableError) as caught:
        store.list_jobs()
    assert SECRET not in str(caught.value) and "***" in str(caught.value)
    proxy.restore()
    assert store.list_jobs() == []  # the pool reconnects by itself


def test_a_call_rides_out_a_database_blip_and_its_answer_is_kept(
    proxied: tuple[str, str, TcpProxy],
    slow_host: LMStudioEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    direct, url, proxy = proxied
    manager = InferenceManager(timeout=120, config=config_for(slow_host), database_url=url)
    manager.service.rescan()
    results: list[InferenceResult | BaseException] = []

    def call() -> None:
        try:
            results.append(manager.infer(MODEL, "count to 100", max_tokens=120))
        except BaseException as exc:
            results.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    watcher = JobStore(direct)  # the test's own view, not through the proxy
    wait_for(lambda: [j.status for j in watcher.list_jobs()] == ["running"], what="job running")
    proxy.cut()
    # the answer is finished while the database is away: the worker cannot store it yet ...
    wait_for(
        lambda: any("storing its end failed" in r.getMessage() for r in caplog.records),
        what="the worker holding a finished answer it cannot store yet",
    )
    wait_for(lambda: proxy.refused >= 3, what="the waiter and the worker meeting the outage")
    assert watcher.list_jobs()[0].status == "running"
    proxy.restore()  # ... and stores it once the database is back
    caller.join(120)
    (result,) = results
    assert isinstance(result, InferenceResult), result
    assert result.succeeded and result.response.split()[-1] == "100"
    (job,) = watcher.list_jobs()
    assert job.status == "succeeded" and job.attempts == 1  # stored once, never run again
    manager.close()


def test_an_outage_past_the_callers_timeout_is_a_typed_error(
    proxied: tuple[str, str, TcpProxy], slow_host: LMStudioEmulator
) -> None:
    _, url, proxy = proxied
    manager = InferenceManager(timeout=60, config=config_for(slow_host), database_url=url)
    job = manager.submit(MODEL, "count to 500", max_tokens=520)
    proxy.cut()
    try:
        with pytest.raises(DatabaseUnavailableError) as caught:
            manager.wait(job.id, timeout=1.0)
        assert SECRET not in str(caught.value)
    finally:
        proxy.restore()
    manager.close()


def test_the_cli_says_so_in_one_line_with_its_own_exit_code(
    proxied: tuple[str, str, TcpProxy], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, url, proxy = proxied
    monkeypatch.setenv("LMSTRIX_DATABASE_URL", url)
    monkeypatch.setenv("LMSTRIX_HOSTS", "h1=http://127.0.0.1:1")
    ensure_schema(url)
    proxy.cut()
    result = CliRunner().invoke(cli, ["jobs", "list"], catch_exceptions=False)
    proxy.restore()
    assert result.exit_code == 13, result.output
    assert result.stderr.count("\n") == 1 and "does not answer" in result.stderr
    assert SECRET not in result.stderr and "Traceback" not in result.output
