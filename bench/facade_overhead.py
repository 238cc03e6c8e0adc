"""Facade overhead: p50/p99 of ``manager.infer()`` minus the same direct client call.

Against a zero-latency emulator, so what is left is the queue: validation, the job row, the
doorbell, the worker's claim and finish, the notification and the final read. Each infer() is
paired with a direct ``LMStudioClient.chat_completion`` (streamed, as the worker calls it) made
just before it, and the difference is what the queue costs. Targets: p50 < 3 ms embedded,
< 10 ms distributed.

    python bench/facade_overhead.py [--n 300]
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
    pct,
    postgres_database,
    redis_available,
    start_worker,
    stop_worker,
)

from lmstrix.api.client import LMStudioClient
from lmstrix.core.config import Config
from lmstrix.core.inference_manager import InferenceManager
from lmstrix.jobs import embedded
from lmstrix.testing import LMStudioEmulator

MODEL = "llama-3.2-1b-instruct"
REDIS_URL = os.environ.get("LMSTRIX_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


def measure(manager: InferenceManager, client: LMStudioClient, n: int) -> list[float]:
    for _ in range(20):  # warm up: load the model, fill pools and caches
        manager.infer(MODEL, "say warm", max_tokens=8)
        client.chat_completion(MODEL, "say warm", max_tokens=8, stream=True)
    overheads = []
    for i in range(n):
        t0 = time.perf_counter()
        client.chat_completion(MODEL, f"say item {i}", max_tokens=8, stream=True)
        t1 = time.perf_counter()
        result = manager.infer(MODEL, f"say item {i}", max_tokens=8)
        t2 = time.perf_counter()
        assert result.succeeded, result.error
        overheads.append((t2 - t1) - (t1 - t0))
    return overheads


def report(mode: str, overheads: list[float], target_ms: float) -> None:
    p50, p99 = pct(overheads, 50) * 1000, pct(overheads, 99) * 1000
    ok = "met" if p50 < target_ms else "MISSED"
    print(
        f"facade overhead {mode:<12} n={len(overheads)}  p50={p50:.2f} ms  p99={p99:.2f} ms"
        f"  (target p50 < {target_ms:g} ms: {ok})"
    )


def embedded_mode(emu: LMStudioEmulator, n: int, tmp: Path) -> None:
    config = Config({"hosts": [{"name": "bench", "url": emu.url}]})
    manager = InferenceManager(config=config, database_url=f"sqlite:///{tmp / 'embedded.db'}")
    client = LMStudioClient(emu.url)
    try:
        report("embedded", measure(manager, client, n), 3.0)
    finally:
        embedded.stop_all()
        client.close()


def distributed_mode(emu: LMStudioEmulator, n: int, tmp: Path) -> None:
    if not redis_available(REDIS_URL):
        print(f"facade overhead distributed: skipped (no Redis at {REDIS_URL})")
        return
    db = postgres_database()
    if db is None:
        print("facade overhead distributed: skipped (no PostgreSQL)")
        return
    host = f"bench{os.getpid()}"
    env = {
        "LMSTRIX_HOSTS": f"{host}={emu.url}",
        "LMSTRIX_DATABASE_URL": db,
        "LMSTRIX_REDIS_URL": REDIS_URL,
        "XDG_CONFIG_HOME": str(tmp / "config"),
        "LMSTRIX_QUEUE__LINGER_SECONDS": "30",
    }
    config = Config(
        {
            "hosts": [{"name": host, "url": emu.url}],
            "database": {"url": db},
            "redis": {"url": REDIS_URL},
        }
    )
    proc = start_worker(host, env, tmp / "worker.log")
    manager = InferenceManager(config=config, timeout=60)
    client = LMStudioClient(emu.url)
    try:
        report("distributed", measure(manager, client, n), 10.0)
    finally:
        manager.close()
        client.close()
        stop_worker(proc)
        drop_postgres(db)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, LMStudioEmulator() as emu:
        embedded_mode(emu, args.n, Path(d))
        distributed_mode(emu, args.n, Path(d))


if __name__ == "__main__":
    main()
