"""Soak: mixed work on two hosts for a while, in distributed mode, watching throughput and the
workers' memory.

Four caller threads send a mix through one queue (PostgreSQL, Redis, one dramatiq worker per
emulated host, three models per host so the workers swap): plain ``infer()`` calls, streamed
answers read to the end, streams left early (their jobs cancelled), and ``submit()`` jobs
collected at the end. Every minute it prints the jobs finished, jobs per second and each
worker's resident memory; at the end, the memory growth from the first minute to the last
(target: under 10 %), and whether every job ended in a final state with no answer made twice.

    python bench/soak.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import drop_postgres, postgres_database, redis_available, start_worker, stop_worker

from lmstrix.core.config import Config
from lmstrix.core.inference_manager import InferenceManager
from lmstrix.testing import LMStudioEmulator

MODELS = ("qwen/qwen3-4b", "google/gemma-3-4b", "llama-3.2-1b-instruct")
REDIS_URL = os.environ.get("LMSTRIX_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
CALLERS = 4


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children (dramatiq forks its worker), in MB."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        status = Path(f"/proc/{p}/status")
        if status.exists():
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: Counter[str] = Counter()
        self.submitted: list[str] = []
        self.job_ids: list[str] = []
        self.errors: Counter[str] = Counter()

    def add(self, kind: str, job_id: str | None = None) -> None:
        with self.lock:
            self.done[kind] += 1
            if job_id:
                self.job_ids.append(job_id)


def caller(
    manager: InferenceManager, hosts: list[str], stop: threading.Event, tally: Tally, seed: int
) -> None:
    rng = random.Random(seed)
    i = 0
    while not stop.is_set():
        i += 1
        host = rng.choice(hosts)
        model = MODELS[rng.randrange(3)] if rng.random() < 0.3 else MODELS[seed % 3]
        prompt = f"say caller {seed} item {i}"
        roll = rng.random()
        try:
            if roll < 0.55:
                job = manager.submit(model, prompt, max_tokens=16, host=host)
                r = manager.wait(job.id)
                tally.add("infer" if r.succeeded else "infer-failed", job.id)
            elif roll < 0.8:
                stream = manager.stream(model, prompt, max_tokens=16, host=host)
                text = "".join(stream)
                ok = stream.result is not None and stream.result.response == text
                tally.add("stream" if ok else "stream-mismatch", stream.job_id)
            elif roll < 0.9:
                stream = manager.stream(model, "count to 400", max_tokens=420, host=host)
                next(stream)
                stream.close()
                tally.add("stream-left", stream.job_id)
            else:
                job = manager.submit(model, prompt, max_tokens=16, host=host, priority=10)
                with tally.lock:
                    tally.submitted.append(job.id)
                tally.add("submit", job.id)
        except Exception as exc:  # counted, so a fault shows in the figures instead of a stop
            with tally.lock:
                tally.errors[type(exc).__name__] += 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    args = ap.parse_args()
    if not redis_available(REDIS_URL):
        print(f"soak: skipped (no Redis at {REDIS_URL})")
        return
    db = postgres_database()
    if db is None:
        print("soak: skipped (no PostgreSQL)")
        return
    tag = os.getpid()
    # one host answers at once, the other on a real clock (loads take time, streams left early
    # are cancelled mid-answer)
    emulators = {
        f"soak{tag}a": LMStudioEmulator().start(),
        f"soak{tag}b": LMStudioEmulator(
            clock="real", tokens_per_second=1000.0, load_seconds=0.2
        ).start(),
    }
    hosts = list(emulators)
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "LMSTRIX_HOSTS": ",".join(f"{h}={e.url}" for h, e in emulators.items()),
            "LMSTRIX_DATABASE_URL": db,
            "LMSTRIX_REDIS_URL": REDIS_URL,
            "XDG_CONFIG_HOME": str(Path(tmp) / "config"),
            "LMSTRIX_QUEUE__LINGER_SECONDS": "30",
        }
        config = Config(
            {
                "hosts": [{"name": h, "url": e.url} for h, e in emulators.items()],
                "database": {"url": db},
                "redis": {"url": REDIS_URL},
            }
        )
        workers = {h: start_worker(h, env, Path(tmp) / f"{h}.log") for h in hosts}
        manager = InferenceManager(config=config, timeout=120)
        tally = Tally()
        stop = threading.Event()
        threads = [
            threading.Thread(target=caller, args=(manager, hosts, stop, tally, n), daemon=True)
            for n in range(CALLERS)
        ]
        memory: list[float] = []
        try:
            for t in threads:
                t.start()
            started = time.monotonic()
            last = 0
            minute = 0
            while time.monotonic() - started < args.minutes * 60:
                minute += 1
                end = started + min(minute * 60, args.minutes * 60)
                time.sleep(max(end - time.monotonic(), 0))
                with tally.lock:
                    total = sum(tally.done.values())
                mem = sum(rss_mb(w.pid) for w in workers.values())
                memory.append(mem)
                span = end - (started + (minute - 1) * 60)
                print(
                    f"minute {minute:>2}: {total - last:>6} jobs ({(total - last) / span:6.1f}/s)"
                    f"  workers' memory {mem:7.1f} MB  errors {dict(tally.errors) or 0}",
                    flush=True,
                )
                last = total
            stop.set()
            for t in threads:
                t.join(180)
            for job_id in tally.submitted:
                manager.wait(job_id, timeout=300)
            store = manager.service.store
            states = Counter(store.get(j).status for j in tally.job_ids)
            growth = (memory[-1] - memory[0]) / memory[0] * 100 if len(memory) > 1 else 0.0
            made = sum(e.counters.inferences for e in emulators.values())
            succeeded = states.get("succeeded", 0)
            print(f"by kind: {dict(tally.done)}")
            open_jobs = states.get("queued", 0) + states.get("running", 0)
            print(f"final states: {dict(states)} (not final: {open_jobs})")
            cancelled = states.get("cancelled", 0)
            print(f"answers made: {made}; jobs succeeded: {succeeded}; cancelled: {cancelled}")
            ok = "met" if growth < 10 else "MISSED"
            print(
                f"workers' memory: {memory[0]:.1f} MB -> {memory[-1]:.1f} MB "
                f"({growth:+.1f} %, target < 10 %: {ok})"
            )
        finally:
            stop.set()
            manager.close()
            for proc in workers.values():
                stop_worker(proc)
            for e in emulators.values():
                e.stop()
            drop_postgres(db)


if __name__ == "__main__":
    main()
