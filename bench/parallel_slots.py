"""Parallel slots: 200 jobs on one model with 1, 2 and 4 slots, against the emulator.

The emulator runs on the real clock with a per-token latency and capacity that scales linearly
with the requests running at once (``parallel_efficiency`` 1), 4 slots per instance. One host's
worker (``JobRunner.drain`` in this process) drains 200 queued jobs with ``max_parallel`` 1, 2
and 4; the table gives jobs per second, the speed-up over one slot and the most requests the
emulator saw at once on the instance.

Target: at least 3.5 times at 4 slots.

``--real`` adds the real model: SmolLM2-135M under llama.cpp (xllamacpp) with 4 slots. The same
16 prompts (64-token answers) go through lmstrix (one host worker, ``max_parallel`` 1 and 4) and
straight to llama.cpp's ``/v1/chat/completions`` (1 and 4 at once); the table gives generated
tokens per second. Target: lmstrix at 4 slots reaches at least 0.95 of direct at 4.

    python bench/parallel_slots.py [--n 200] [--tokens-per-second 100] [--real] [--only-real]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import drop_postgres, postgres_database

from lmstrix.api.client import LMStudioClient
from lmstrix.domain.queue_settings import QueueSettings
from lmstrix.jobs.notify import LocalNotifier
from lmstrix.jobs.runner import JobRunner
from lmstrix.jobs.store import JobStore
from lmstrix.testing import LMStudioEmulator
from lmstrix.testing.llama_server import LlamaServer
from lmstrix.testing.real_model import real_model_unavailable_reason

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


REAL_PROMPTS = [f"Write a long story about dragon number {i}." for i in range(16)]
REAL_TOKENS = 64


def real_direct(url: str, alias: str, at_once: int) -> float:
    """Generated tokens per second, the prompts sent straight to llama.cpp ``at_once``."""

    def one(prompt: str) -> int:
        body = {
            "model": alias,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": REAL_TOKENS,
            "temperature": 0.0,
        }
        resp = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600)
        resp.raise_for_status()
        return int(resp.json()["usage"]["completion_tokens"])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(at_once) as pool:
        tokens = sum(pool.map(one, REAL_PROMPTS))
    return tokens / (time.perf_counter() - t0)


def real_lmstrix(url: str, alias: str, db: str, slots: int) -> float:
    """Generated tokens per second, the prompts run as jobs by one host worker."""
    store = JobStore(db)
    host = f"real{os.getpid()}x{slots}"
    ids = [
        store.submit(
            host=host,
            model=alias,
            request={"prompt": p, "max_tokens": REAL_TOKENS, "temperature": 0.0},
            host_url=url,
        )
        for p in REAL_PROMPTS
    ]
    client = LMStudioClient(url, timeout=600)
    runner = JobRunner(
        store, host, client, LocalNotifier(), settings=QueueSettings(max_parallel=slots)
    )
    t0 = time.perf_counter()
    runner.drain()
    elapsed = time.perf_counter() - t0
    runner.close()
    client.close()
    views = [store.get(i) for i in ids]
    failed = [v.error_message for v in views if v.status != "succeeded"]
    assert not failed, failed
    return sum(int((v.result or {}).get("response_tokens") or 0) for v in views) / elapsed


def real_model(db: str, threads: int) -> None:
    reason = real_model_unavailable_reason()
    if reason is not None:
        print(f"real model: skipped ({reason})")
        return
    with LlamaServer(4 * 1024, threads=threads, parallel=4) as server:
        print(
            f"real model: SmolLM2-135M, llama.cpp with 4 slots of {server.n_ctx // 4} tokens, "
            f"{threads} threads; {len(REAL_PROMPTS)} prompts, {REAL_TOKENS}-token answers"
        )
        real_direct(server.url, server.alias, 4)  # warm up
        print(f"{'':<22}{'1 at once':>12}{'4 at once':>12}")
        direct = [real_direct(server.url, server.alias, n) for n in (1, 4)]
        through = [real_lmstrix(server.url, server.alias, db, n) for n in (1, 4)]
        print(f"{'llama.cpp directly':<22}{direct[0]:>9.1f} t/s{direct[1]:>9.1f} t/s")
        print(f"{'through lmstrix':<22}{through[0]:>9.1f} t/s{through[1]:>9.1f} t/s")
        ratio = through[1] / direct[1]
        ok = "met" if ratio >= 0.95 else "MISSED"
        print(f"lmstrix at 4 slots / direct at 4: {ratio:.3f} (target >= 0.95: {ok})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--tokens-per-second", type=float, default=100.0)
    ap.add_argument("--real", action="store_true", help="also the real SmolLM2 with 4 slots")
    ap.add_argument("--only-real", action="store_true", help="only the real SmolLM2")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads (--real)")
    args = ap.parse_args()
    if args.only_real:
        with tempfile.TemporaryDirectory() as d:
            real_model(f"sqlite:///{Path(d) / 'real.db'}", args.threads)
        return
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
            if args.real:
                real_model(db, args.threads)
        finally:
            emu.stop()
            if pg:
                drop_postgres(pg)


if __name__ == "__main__":
    main()
