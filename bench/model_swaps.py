"""Model loads for 300 jobs over 3 models submitted interleaved A B C A B C ...

FIFO would load 300 times (every job wants a different model than the one before). The worker's
policy serves the loaded model first, bounded by ``max_wait`` and ``max_run``; target: 3 loads,
with the longest wait of any job within ``max_wait``.

Two runs against a zero-latency emulator, each on a fresh SQLite file:

- ``queued``: all 300 jobs are queued first (``lmstrix submit`` ...), then the worker starts;
- ``live``: the embedded worker runs while the jobs are being submitted (``infer`` from a loop
  of callers), so it only ever sees what has arrived so far.

    python bench/model_swaps.py [--n 300] [--max-wait 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from lmstrix.api.client import LMStudioClient
from lmstrix.domain.queue_settings import QueueSettings
from lmstrix.domain.scheduler import PRIORITY_BATCH
from lmstrix.jobs.embedded import EmbeddedWorker
from lmstrix.jobs.notify import LocalNotifier
from lmstrix.jobs.store import JobStore
from lmstrix.testing import LMStudioEmulator

MODELS = ("qwen/qwen3-4b", "google/gemma-3-4b", "llama-3.2-1b-instruct")


def run(mode: str, n: int, max_wait: float, tmp: Path) -> None:
    with LMStudioEmulator() as emu:
        store = JobStore(f"sqlite:///{tmp / f'{mode}.db'}")
        settings = QueueSettings(max_wait=max_wait, max_run=10_000, retry_delays=(0.1,))
        worker = EmbeddedWorker(
            store,
            "bench",
            lambda: LMStudioClient(emu.url),
            notifier=LocalNotifier(),
            settings=settings,
        )
        ids = []
        if mode == "live":
            worker.start()
        t0 = time.perf_counter()
        for i in range(n):
            ids.append(
                store.submit(
                    host="bench",
                    model=MODELS[i % 3],
                    request={"prompt": f"say {i}", "max_tokens": 8, "context_length": 4096},
                    host_url=emu.url,
                    priority=PRIORITY_BATCH,
                )
            )
            if mode == "live":
                worker.wake()
        if mode == "queued":
            worker.start()
        while store.counts("bench").get("succeeded", 0) < n:
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        worker.stop()
        jobs = [store.get(j) for j in ids]
        waits = [(j.started_at - j.created_at).total_seconds() for j in jobs if j.started_at]
        loads = emu.counters.load_count
        ok = "met" if loads <= 3 and max(waits) <= max_wait else "MISSED"
        print(
            f"model loads {mode:<7} jobs={n} models=3  loads={loads} (FIFO: {n})  "
            f"longest wait={max(waits):.2f}s (max_wait={max_wait:g}s)  {elapsed:.2f}s total  "
            f"(target 3 loads: {ok})"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--max-wait", type=float, default=60.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        for mode in ("queued", "live"):
            run(mode, args.n, args.max_wait, Path(d))


if __name__ == "__main__":
    main()
