"""Every table at an 80-column terminal (list, hosts, jobs list, workers with a live worker,
batch list and batch status): no line longer than 80, no cell wrapped (each row one line, each
shown id a whole id or its start and an ellipsis); --wide shows whole ids; every --json output
parses, with timestamps in the one ISO-8601 UTC format."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers.configs import CliEnv
from helpers.formats import ISO_UTC
from helpers.waiting import wait_for

from lmstrix.cli import cli
from lmstrix.cli.batch import HEADERS as BATCH_HEADERS
from lmstrix.cli.cells import ELLIPSIS
from lmstrix.cli.workers import HEADERS as WORKER_HEADERS
from lmstrix.core.config import Config
from lmstrix.core.inference_manager import InferenceManager
from lmstrix.core.jobs import JobManager
from lmstrix.testing import LMStudioEmulator
from lmstrix.testing.backend import EmulatedModel

LONG = EmulatedModel(
    key="acme/an-extraordinarily-long-model-name-that-no-terminal-column-holds-7b",
    max_context_length=8192,
    vision=True,
)
SHORT = EmulatedModel(key="acme/tiny", max_context_length=4096)
STAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d")


@pytest.fixture
def emulators(make_emulator: Callable[..., LMStudioEmulator]) -> list[LMStudioEmulator]:
    return [make_emulator([LONG, SHORT]), make_emulator([LONG])]


@pytest.fixture(autouse=True)
def env(
    emulators: list[LMStudioEmulator],
    tmp_path: Path,
    cli_env: CliEnv,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    cli_env(emulators[0].url, f"sqlite:///{tmp_path / 'cli.db'}")
    hosts = f"h1={emulators[0].url},a-host-with-a-rather-long-name={emulators[1].url}"
    monkeypatch.setenv("LMSTRIX_HOSTS", hosts)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def assert_fits(out: str, *, whole: tuple[str, ...] = ()) -> None:
    """Lines of at most 80; each of ``whole`` appears whole or as its start and an ellipsis,
    never broken over two lines."""
    lines = out.splitlines()
    assert lines, out
    assert all(len(line) <= 80 for line in lines), out
    for text in whole:
        shown = [w for line in lines for w in line.split() if text.startswith(w.rstrip(ELLIPSIS))]
        shown = [w for w in shown if len(w.rstrip(ELLIPSIS)) >= 4]
        assert shown, (text, out)
        for word in shown:
            assert word == text or word.endswith(ELLIPSIS), (word, out)


def timestamps(data: Any) -> list[str]:
    if isinstance(data, dict):
        return [t for v in data.values() for t in timestamps(v)]
    if isinstance(data, list):
        return [t for v in data for t in timestamps(v)]
    return [data] if isinstance(data, str) and STAMP.match(data) else []


def parsed(*args: str) -> Any:
    code, out, err = run(*args, "--json")
    assert code == 0, err
    data = json.loads(out)
    for stamp in timestamps(data):
        assert ISO_UTC.match(stamp), stamp
    return data


def test_every_table_fits_80_columns_and_wide_shows_whole_ids() -> None:
    assert run("scan")[0] == 0
    code, out, err = run("submit", "infer", "say hi", "-m", LONG.key, "--host", "h1")
    assert code == 0, err
    job_id = out.strip()
    assert run("worker", "--host", "h1", "--once")[0] == 0
    for args, whole in (
        (["list"], (LONG.key,)),
        (["hosts"], ()),
        (["jobs", "list"], (job_id, LONG.key)),
    ):
        code, out, err = run(*args)
        assert code == 0, err
        assert_fits(out, whole=whole)
    code, out, _ = run("list", "--wide")
    assert LONG.key in out
    code, out, _ = run("jobs", "list", "--wide")
    assert job_id in out and LONG.key in out
    header = out.splitlines()[0].split()
    assert header == ["ID", "Kind", "Model", "Host", "Status", "Age", "Took"]
    code, out, _ = run("jobs", "show", job_id[:8])
    assert code == 0
    assert f"id: {job_id}" in out and "kind: inference" in out and "status: succeeded" in out
    assert "request:" in out and "  prompt: say hi" in out and "Job" not in out


def test_a_failing_host_is_one_line_under_the_hosts_table(
    monkeypatch: pytest.MonkeyPatch, emulators: list[LMStudioEmulator]
) -> None:
    monkeypatch.setenv("LMSTRIX_HOSTS", f"h1={emulators[0].url},down=http://127.0.0.1:9")
    code, out, err = run("hosts")
    assert code == 0, err
    assert_fits(out)
    errors = [line for line in err.splitlines() if line.startswith("error: down:")]
    assert len(errors) == 1


def test_every_json_output_parses_with_one_timestamp_format() -> None:
    parsed("scan")
    models = parsed("list")
    assert models and all(m["last_seen"] for m in models)
    parsed("hosts")
    job_id = parsed("submit", "infer", "say hi", "-m", SHORT.key)["job_id"]
    run("worker", "--host", "h1", "--once")
    jobs = parsed("jobs", "list")
    assert jobs[0]["id"] == job_id and ISO_UTC.match(jobs[0]["created_at"])
    parsed("jobs", "show", job_id)
    parsed("jobs", "wait", job_id)
    parsed("workers")
    result = parsed("infer", "say hi", "-m", SHORT.key)
    assert result["succeeded"] is True
    parsed("registry", "export")
    parsed("db", "current")


def test_workers_and_batches_fit_80_columns(tmp_path: Path) -> None:
    long_host = "a-host-with-a-rather-long-name"
    assert run("scan")[0] == 0
    with InferenceManager(config=Config.load()) as manager:
        # submit starts this process's worker of the host, which stays in the workers table
        job = manager.submit(LONG.key, "say hi", max_tokens=8, host=long_host)
        assert manager.wait(job.id).response == "hi"
        with JobManager() as jobs:
            wait_for(lambda: jobs.workers(long_host), what="the worker to register")
        code, out, err = run("workers")
        assert code == 0, err
        assert_fits(out, whole=(long_host,))
        assert out.splitlines()[0].split() == list(WORKER_HEADERS)
        rows = out.splitlines()[2:]
        assert len(rows) == 1 and "embedded" in rows[0] and str(os.getpid()) in rows[0]
        code, out, _ = run("workers", "--wide")
        assert long_host in out and LONG.key in out

    path = tmp_path / "requests.jsonl"
    body = {"model": LONG.key, "messages": [{"role": "user", "content": "say batched"}]}
    request = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}
    path.write_text(json.dumps(request) + "\n", encoding="utf-8")
    code, out, err = run("batch", str(path), "--wait")
    assert code == 0, err
    batch_id = out.strip()
    for args in (["batch", "list"], ["batch", "status", batch_id]):
        code, out, err = run(*args)
        assert code == 0, err
        assert_fits(out, whole=(batch_id, LONG.key))
        assert out.splitlines()[0].split() == list(BATCH_HEADERS)
        assert "completed" in out.splitlines()[2]
    code, out, _ = run("batch", "list", "--wide")
    assert batch_id in out and LONG.key in out
    (listed,) = parsed("batch", "list")
    assert listed["id"] == batch_id and listed["request_counts"]["completed"] == 1
    assert parsed("batch", "status", batch_id)["status"] == "completed"
