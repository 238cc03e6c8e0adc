"""Throughput of one host's worker with PostgreSQL: jobs per second against a zero-latency emulator.

Two measurements of the same loop (claim by policy, ensure loaded, streamed chat, finish, notify):

- ``runner``: the worker's ``JobRunner.drain()`` in this process, draining N pre-queued jobs;
- ``dramatiq``: a real ``dramatiq lmstrix.workers`` process, one doorbell for N queued jobs.

Target: at least 200 jobs/s.

    python bench/worker_throughput.py [--n 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    drop_postgres,
    postgres_database,
    redis_available,
    start_worker,
    stop_worker,
)

from lmstrix.api.client import LMStudioClient
from lmstrix.db import JobStatus
from lmstrix.jobs.doorbell import RedisDoorbell
from lmstrix.jobs.notify import LocalNotifier, RedisNotifier
from lmstrix.jobs.runner import JobRunner
from lmstrix.jobs.store import JobStore
from lmstrix.testing import LMStudioEmulator

MODEL = "llama-3.2-1b-instruct"
REDIS_URL = os.environ.get("LMSTRIX_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


def queue(store: JobStore, host: str, url: str, n: int) -> None:
    for i in range(n):
        store.submit(
            host=host,
            model=MODEL,
            request={"prompt": f"say job {i}", "max_tokens": 8, "context_length": 4096},
            host_url=url,
        )


def runner_mode(emu: LMStudioEmulator, db: str, n: int) -> None:
    store = JobStore(db)
    host = f"tp{os.getpid()}"
    queue(store, host, emu.url, n)
    notifier = RedisNotifier(REDIS_URL) if redis_available(REDIS_URL) else LocalNotifier()
    client = LMStudioClient(emu.url)
    runner = JobRunner(store, host, client, notifier)
    runner.run_next()  # the first job loads the model; not part of the steady state
    t0 = time.perf_counter()
    ran = runner.drain()
    elapsed = time.perf_counter() - t0
    runner.close()
    client.close()
    rate = ran / elapsed
    ok = "met" if rate >= 200 else "MISSED"
    print(
        f"worker throughput runner    n={ran}  {rate:.0f} jobs/s"
        f"  ({elapsed * 1000 / ran:.2f} ms/job, PostgreSQL, emulator in the same process)"
        f"  (target >= 200: {ok})"
    )


def dramatiq_mode(emu: LMStudioEmulator, db: str, n: int, tmp: Path) -> None:
    if not redis_available(REDIS_URL):
        print(f"worker throughput dramatiq: skipped (no Redis at {REDIS_URL})")
        return
    store = JobStore(db)
    host = f"td{os.getpid()}"
    queue(store, host, emu.url, n)
    env = {
        "LMSTRIX_HOSTS": f"{host}={emu.url}",
        "LMSTRIX_DATABASE_URL": db,
        "LMSTRIX_REDIS_URL": REDIS_URL,
        "XDG_CONFIG_HOME": str(tmp / "config"),
    }
    proc = start_worker(host, env, tmp / "worker.log")
    try:
        bell = RedisDoorbell(REDIS_URL)
        t0 = time.perf_counter()
        bell.ring(host)
        deadline = time.monotonic() + 600
        while True:
            done = store.counts(host).get(JobStatus.SUCCEEDED.value, 0)
            if done >= n or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        elapsed = time.perf_counter() - t0
        bell.close()
    finally:
        stop_worker(proc)
    rate = done / elapsed
    ok = "met" if rate >= 200 else "MISSED"
    print(
        f"worker throughput dramatiq  n={done}  {rate:.0f} jobs/s  (incl. worker pickup and the"
        f" first load, PostgreSQL)  (target >= 200: {ok})"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()
    db = postgres_database()
    if db is None:
        print("worker throughput: skipped (no PostgreSQL)")
        return
    try:
        with tempfile.TemporaryDirectory() as d, LMStudioEmulator() as emu:
            runner_mode(emu, db, args.n)
            dramatiq_mode(emu, db, args.n, Path(d))
    finally:
        drop_postgres(db)


if __name__ == "__main__":
    main()
