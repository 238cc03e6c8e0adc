"""lmstrix next to what a user would write instead: the same 500 short jobs, against the same
emulator, three ways.

- ``dramatiq``: plain dramatiq with its Redis results backend; an actor that sends the chat
  request (``peer_apps/dramatiq_app.py``), one worker process with 4 threads;
- ``celery``: Celery with Redis as broker and result backend (``peer_apps/celery_app.py``), one
  worker process with 4 threads;
- ``lmstrix``: distributed mode: ``InferenceManager.infer`` against PostgreSQL and Redis, one
  ``dramatiq lmstrix.workers`` process for the host, which fills the host's 4 slots.

8 callers each submit a job and wait for its answer, again and again, until 500 have been
answered; the table gives jobs per second, the round trip's p50 and p99, the most requests the
emulator saw at once, and lmstrix's ratios to the others. Then the slots' gain: lmstrix with
``max_parallel`` 1 and 4 on the same emulated 4-slot host.

    python bench/peers.py [--n 500] [--tokens-per-second 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import drop_postgres, pct, postgres_database, redis_available, stop_worker

HERE = Path(__file__).resolve().parent

MODEL = "llama-3.2-1b-instruct"
CALLERS = 8
REDIS_URL = os.environ.get("LMSTRIX_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


def closed_loop(n: int, call: Callable[[int], str]) -> dict[str, float]:
    """``CALLERS`` threads call until ``n`` calls were answered; jobs/s and latencies."""
    latencies: list[float] = []
    lock = threading.Lock()
    next_i = [0]
    errors: list[str] = []

    def caller() -> None:
        while True:
            with lock:
                i = next_i[0]
                if i >= n:
                    return
                next_i[0] += 1
            t0 = time.perf_counter()
            try:
                answer = call(i)
                if f"job {i}" not in answer:
                    errors.append(f"job {i}: {answer!r}")
            except Exception as exc:
                errors.append(f"job {i}: {type(exc).__name__}: {exc}")
            with lock:
                latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} calls failed, e.g. {errors[:3]}")
    return {
        "rate": n / elapsed,
        "p50": pct(latencies, 50) * 1000,
        "p99": pct(latencies, 99) * 1000,
    }


# -- each way runs as a subprocess of this script (each sets up its own global broker) -------


def client_dramatiq(url: str, n: int) -> dict[str, float]:
    from peer_apps.dramatiq_app import chat

    def call(i: int) -> str:
        msg = chat.send(url, MODEL, f"say job {i}", 8)
        return str(msg.get_result(block=True, timeout=60_000))

    return closed_loop(n, call)


def client_celery(url: str, n: int) -> dict[str, float]:
    from peer_apps.celery_app import chat

    def call(i: int) -> str:
        return str(chat.delay(url, MODEL, f"say job {i}", 8).get(timeout=60))

    return closed_loop(n, call)


def client_lmstrix(url: str, n: int) -> dict[str, float]:
    from lmstrix.core.inference_manager import InferenceManager

    manager = InferenceManager(timeout=60)  # configured by the environment
    host = os.environ["PEER_HOST"]
    try:
        manager.service.rescan(host)

        def call(i: int) -> str:
            return manager.infer(MODEL, f"say job {i}", max_tokens=8, host=host).response

        call(-1)  # the first call loads the model and starts the caller's machinery
        return closed_loop(n, call)
    finally:
        manager.close()


CLIENTS = {"dramatiq": client_dramatiq, "celery": client_celery, "lmstrix": client_lmstrix}


# -- the parent: the emulator, the workers, the table -----------------------------------------


def spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd,
            cwd=HERE,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def measure(way: str, url: str, n: int, env: dict[str, str], tmp: Path) -> dict[str, float]:
    py = sys.executable
    if way == "dramatiq":
        worker = [py, "-m", "dramatiq", "peer_apps.dramatiq_app", "--processes", "1"]
        worker += ["--threads", "4", "--queues", "peers"]
    elif way == "celery":
        worker = [py, "-m", "celery", "-A", "peer_apps.celery_app", "worker", "--pool", "threads"]
        worker += ["--concurrency", "4", "-Q", "peers", "--loglevel", "WARNING"]
    else:
        worker = [py, "-m", "dramatiq", "lmstrix.workers", "--processes", "1", "--threads", "1"]
        worker += ["--queues", f"lmstudio.{env['PEER_HOST']}"]
    proc = spawn(worker, env, tmp / f"{way}-worker.log")
    try:
        out = subprocess.run(
            [py, str(HERE / "peers.py"), "--client", way, "--url", url, "--n", str(n)],
            cwd=HERE,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    finally:
        stop_worker(proc)
    if out.returncode != 0:
        raise SystemExit(f"{way} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--tokens-per-second", type=float, default=200.0)
    ap.add_argument("--client", choices=sorted(CLIENTS))
    ap.add_argument("--url")
    args = ap.parse_args()
    if args.client:
        print(json.dumps(CLIENTS[args.client](args.url, args.n)))
        return
    if not redis_available(REDIS_URL):
        print(f"peers: skipped (no Redis at {REDIS_URL})")
        return
    db = postgres_database()
    if db is None:
        print("peers: skipped (no PostgreSQL)")
        return
    from lmstrix.testing import LMStudioEmulator

    emu = LMStudioEmulator(
        clock="real", tokens_per_second=args.tokens_per_second, load_seconds=0.0
    ).start()
    host = f"peer{uuid.uuid4().hex[:6]}"
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            root = str(HERE.parent)
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join([root, str(HERE), os.environ.get("PYTHONPATH", "")]),
                "PEER_REDIS_URL": REDIS_URL,
                "PEER_HOST": host,
                "LMSTRIX_HOSTS": f"{host}={emu.url}",
                "LMSTRIX_DATABASE_URL": db,
                "LMSTRIX_REDIS_URL": REDIS_URL,
                "XDG_CONFIG_HOME": str(tmp / "config"),
            }
            env.pop("LMSTRIX_CONFIG", None)
            print(
                f"peers: {args.n} short jobs (~3 tokens at {args.tokens_per_second:.0f} tokens/s"
                f" per request, emulated host with 4 slots), {CALLERS} callers, PostgreSQL+Redis"
            )
            print(f"{'way':<22} {'jobs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max at once':>11}")
            rows: dict[str, dict[str, float]] = {}
            ways = [
                ("dramatiq", "dramatiq + results", {}),
                ("celery", "celery + redis", {}),
                ("lmstrix", "lmstrix distributed", {}),
                ("lmstrix", "lmstrix max_parallel 1", {"LMSTRIX_QUEUE__MAX_PARALLEL": "1"}),
            ]
            for way, label, extra in ways:
                emu.reset_counters()
                row = measure(way, emu.url, args.n, {**env, **extra}, tmp)
                row["most"] = max(emu.counters.max_concurrency.values(), default=0)
                rows[label] = row
                print(
                    f"{label:<22} {row['rate']:>8.1f} {row['p50']:>8.1f} {row['p99']:>8.1f}"
                    f" {row['most']:>11.0f}"
                )
            ours = rows["lmstrix distributed"]
            for label in ("dramatiq + results", "celery + redis"):
                peer = rows[label]
                print(
                    f"lmstrix / {label}: jobs/s {ours['rate'] / peer['rate']:.2f}x, "
                    f"p50 {ours['p50'] / peer['p50']:.2f}x, p99 {ours['p99'] / peer['p99']:.2f}x"
                )
            serial = rows["lmstrix max_parallel 1"]
            print(f"slots' gain (lmstrix 4 slots / 1 slot): {ours['rate'] / serial['rate']:.2f}x")
    finally:
        emu.stop()
        drop_postgres(db)


if __name__ == "__main__":
    main()
