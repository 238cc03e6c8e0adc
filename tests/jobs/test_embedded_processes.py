"""Embedded mode with several processes on one database: still one worker per host. The host
lock lets one process run a host's jobs, including those the others queue, and another takes
over when it dies. Real processes, a real SQLite file, the emulator as the host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.configs import config_for
from helpers.slots import assert_host_discipline

from lmstrix.core.inference_manager import InferenceManager
from lmstrix.testing import LMStudioEmulator

pytestmark = pytest.mark.slow

MODELS = ("qwen/qwen3-4b", "google/gemma-3-4b")

SCRIPT = """
import json, sys, time
from lmstrix.core.config import Config
from lmstrix.core.inference_manager import InferenceManager
url, db, tag, n, linger = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
MODELS = sys.argv[6:]
config = Config({"hosts": [{"name": "h1", "url": url}], "queue": {"retry_delays": [0.01]}})
manager = InferenceManager(timeout=120, config=config, database_url=db)
out = []
for i in range(n):
    r = manager.infer(MODELS[i % 2], f"say {tag} {i}", max_tokens=8)
    out.append({"ok": r.succeeded, "response": r.response, "error": r.error, "job": r.job_id})
print(json.dumps(out), flush=True)
if linger == "linger":
    time.sleep(600)
"""


@pytest.fixture
def host() -> Iterator[LMStudioEmulator]:
    # real time, so that two processes' calls would overlap at the host if both ran them
    emu = LMStudioEmulator(clock="real", tokens_per_second=400.0, load_seconds=0.05).start()
    yield emu
    emu.stop()


def _run(
    host: LMStudioEmulator, db: str, tag: str, n: int, linger: bool = False
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            SCRIPT,
            host.url,
            db,
            tag,
            str(n),
            "linger" if linger else "exit",
            *list(MODELS),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_share_one_host_one_call_at_a_time(
    host: LMStudioEmulator, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'lmstrix.db'}"
    InferenceManager(config=config_for(host), database_url=db).service.rescan()  # one scan
    procs = {tag: _run(host, db, tag, 12) for tag in ("a", "b")}
    errs = []
    for tag, proc in procs.items():
        out, err = proc.communicate(timeout=240)
        errs.append(err)
        assert proc.returncode == 0, err
        results = json.loads(out)
        assert [r["response"] for r in results] == [f"{tag} {i}" for i in range(12)], results
    counters = host.counters
    assert counters.inferences == 24, errs  # none failed and ran again
    assert_host_discipline(counters)  # never two loads at once, nor more than its slots


def test_jobs_of_a_process_without_the_host_run_in_the_holder_until_it_dies(
    host: LMStudioEmulator, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'lmstrix.db'}"
    holder = _run(host, db, "holder", 1, linger=True)
    assert holder.stdout is not None
    first = json.loads(holder.stdout.readline())
    assert first[0]["ok"]  # the holder's own worker runs, and now holds the host
    manager = InferenceManager(timeout=60, config=config_for(host), database_url=db)
    store = manager.service.store
    result = manager.infer(MODELS[0], "say queued here, run there", max_tokens=8)
    assert result.succeeded
    assert f":{holder.pid}:" in (store.get(result.job_id).worker_id or "")
    holder.kill()
    holder.wait(10)
    result = manager.infer(MODELS[0], "say now here", max_tokens=8)
    assert result.succeeded and result.response == "now here"
    assert f":{os.getpid()}:" in (store.get(result.job_id).worker_id or "")
    manager.close()
