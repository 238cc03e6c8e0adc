"""Parallel slots: 200 jobs on one model with 1, 2 and 4 slots, against the emulator.

The emulator runs on the real clock with a per-token latency and capacity that scales linearly
with the requests running at once (``parallel_efficiency`` 1), 4 slots per instance. One host's
worker (``JobRunner.drain`` in this process) drains 200 queued jobs with ``max_parallel`` 1, 2
and 4; the table gives jobs per second, the speed-up over one slot and the most requests the
emulator saw at once on the instance.

Target: at least 3.5 times at 4 slots.

    python bench/parallel_slots.py [--n 200] [--tokens-per-second 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import drop_postgres, postgres_database

from lmstrix.api.client import LMStudioClient
from lmstrix.domain.queue_settings import QueueSettings
from lmstrix.jobs.notify import LocalNotifier
from lmstrix.jobs.runner import JobRunner
from lmstrix.jobs.store import JobStore
from lmstrix.testing import LMStudioEmulator

MODEL = "llama-3.2-1b-instruct"
PROMPT = "say " + " ".join(f"w{i}" for i in range(8))  # about 9 tokens answered


def run(emu: LMStudioEmulator, db: str, n: int, slots: int) -> tuple[float, int]:
    store = JobStore(db)
    host = f"ps{os.getpid()}x{slots}"
    for _ in range(n):
        store.submit(
            host=host,
            model=MODEL,
            request={"prompt": PROMPT, "max_tokens": 32, "context_length": 4096},
            host_url=emu.url,
        )
    client = LMStudioClient(emu.url)
    runner = JobRunner(
        store, host, client, LocalNotifier(), settings=QueueSettings(max_parallel=slots)
    )
    emu.unload_all()
    emu.reset_counters()
    t0 = time.perf_counter()
    ran = runner.drain()
    elapsed = time.perf_counter() - t0
    runner.close()
    client.close()
    assert ran == n, (ran, n)
    most = max(emu.counters.max_concurrency.values(), default=0)
    return n / elapsed, most


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--tokens-per-second", type=float, default=100.0)
    args = ap.parse_args()
    pg = postgres_database()
    with tempfile.TemporaryDirectory() as d:
        db = pg or f"sqlite:///{Path(d) / 'slots.db'}"
        emu = LMStudioEmulator(
            clock="real",
            tokens_per_second=args.tokens_per_second,
            load_seconds=0.0,
            parallel_efficiency=1.0,
            default_parallel=4,
        ).start()
        try:
            print(
                f"parallel slots: {args.n} jobs of ~9 tokens at {args.tokens_per_second:.0f} "
                f"tokens/s per request, linear capacity, {'PostgreSQL' if pg else 'SQLite'}"
            )
            print(f"{'slots':>5}  {'jobs/s':>8}  {'speed-up':>8}  {'max at once':>11}")
            base = None
            for slots in (1, 2, 4):
                rate, most = run(emu, db, args.n, slots)
                base = base or rate
                print(f"{slots:>5}  {rate:>8.1f}  {rate / base:>7.2f}x  {most:>11}")
            speedup = rate / base
            ok = "met" if speedup >= 3.5 else "MISSED"
            print(f"speed-up at 4 slots: {speedup:.2f}x (target >= 3.5: {ok})")
        finally:
            emu.stop()
            if pg:
                drop_postgres(pg)


if __name__ == "__main__":
    main()
