"""Streaming through the queue: time to first piece and pieces per second of ``manager.stream()``
next to the same stream read straight from the host with ``LMStudioClient``.

1. A zero-latency emulator: what the queue adds before the first piece (submit, doorbell,
   claim, the request, the channel), paired call by call; and how many pieces per second the
   channel carries when the host produces them as fast as it can.
2. The real SmolLM2 behind the emulator: pieces per second as a user sees them, through
   ``stream()`` and directly.

Both in embedded mode (in-process channel) and distributed mode (a dramatiq worker publishing to
a Redis stream). Targets: added time to first piece p50 < 5 ms embedded, < 10 ms distributed;
real-model pieces per second >= 0.97 of direct.

    python bench/streaming.py [--n 200] [--real-runs 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
from lmstrix.testing.real_model import (
    SMOLLM2_KEY,
    RealModelBackend,
    real_model_unavailable_reason,
    smollm2_model,
)

MODEL = "llama-3.2-1b-instruct"
REDIS_URL = os.environ.get("LMSTRIX_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


# -- one streamed answer, two ways ----------------------------------------------------------


def via_queue(
    manager: InferenceManager, model: str, prompt: str, **kw: object
) -> tuple[float, float, int]:
    """(time to first piece, pieces per second after it, pieces) through ``stream()``."""
    started = time.perf_counter()
    first = last = 0.0
    count = 0
    for _ in manager.stream(model, prompt, **kw):  # type: ignore[arg-type]
        last = time.perf_counter()
        if count == 0:
            first = last
        count += 1
    return first - started, _rate(count, first, last), count


def direct(
    client: LMStudioClient, model: str, prompt: str, **kw: object
) -> tuple[float, float, int]:
    """The same, read straight from the host as the worker reads it."""
    stamps: list[float] = []
    started = time.perf_counter()
    client.chat_completion(
        model,
        prompt,
        stream=True,
        on_token=lambda _: stamps.append(time.perf_counter()),
        **kw,  # type: ignore[arg-type]
    )
    if not stamps:
        return float("nan"), float("nan"), 0
    return stamps[0] - started, _rate(len(stamps), stamps[0], stamps[-1]), len(stamps)


def _rate(count: int, first: float, last: float) -> float:
    return (count - 1) / (last - first) if count > 1 and last > first else float("nan")


# -- modes ----------------------------------------------------------------------------------


@contextmanager
def embedded_manager(url: str, tmp: Path, timeout: float = 120) -> Iterator[InferenceManager]:
    config = Config({"hosts": [{"name": "bench", "url": url}]})
    manager = InferenceManager(
        config=config, database_url=f"sqlite:///{tmp / 'embedded.db'}", timeout=timeout
    )
    try:
        yield manager
    finally:
        manager.close()
        embedded.stop_all()


@contextmanager
def distributed_manager(
    url: str, tmp: Path, timeout: float = 120
) -> Iterator[InferenceManager | None]:
    db = postgres_database() if redis_available(REDIS_URL) else None
    if db is None:
        yield None
        return
    host = f"bench{os.getpid()}"
    env = {
        "LMSTRIX_HOSTS": f"{host}={url}",
        "LMSTRIX_DATABASE_URL": db,
        "LMSTRIX_REDIS_URL": REDIS_URL,
        "XDG_CONFIG_HOME": str(tmp / "config"),
        "LMSTRIX_QUEUE__LINGER_SECONDS": "30",
    }
    config = Config(
        {
            "hosts": [{"name": host, "url": url}],
            "database": {"url": db},
            "redis": {"url": REDIS_URL},
        }
    )
    proc = start_worker(host, env, tmp / f"worker-{host}.log")
    manager = InferenceManager(config=config, timeout=timeout)
    try:
        yield manager
    finally:
        manager.close()
        stop_worker(proc)
        drop_postgres(db)


MODES: list[tuple[str, Callable[..., object], float]] = [
    ("embedded", embedded_manager, 5.0),
    ("distributed", distributed_manager, 10.0),
]


# -- 1. zero-latency emulator ---------------------------------------------------------------


def zero_latency(n: int, tmp: Path) -> None:
    with LMStudioEmulator() as emu, LMStudioClient(emu.url) as client:
        for mode, make, target in MODES:
            with make(emu.url, tmp) as manager:  # type: ignore[attr-defined]
                if manager is None:
                    print(f"zero-latency {mode:<11}: skipped (no Redis or PostgreSQL)")
                    continue
                for _ in range(20):  # warm up: the load, pools, caches
                    via_queue(manager, MODEL, "say warm", max_tokens=8)
                    direct(client, MODEL, "say warm", max_tokens=8)
                added = []
                for i in range(n):
                    d_first, _, _ = direct(client, MODEL, f"say item {i}", max_tokens=8)
                    q_first, _, _ = via_queue(manager, MODEL, f"say item {i}", max_tokens=8)
                    added.append(q_first - d_first)
                p50, p99 = pct(added, 50) * 1000, pct(added, 99) * 1000
                ok = "met" if p50 < target else "MISSED"
                print(
                    f"zero-latency {mode:<11}: added time to first piece n={n} p50={p50:.2f} ms "
                    f"p99={p99:.2f} ms (target p50 < {target:g} ms: {ok})"
                )
                long_prompt = "count to 2000"
                q = max(
                    via_queue(manager, MODEL, long_prompt, max_tokens=2100)[1] for _ in range(3)
                )
                d = max(direct(client, MODEL, long_prompt, max_tokens=2100)[1] for _ in range(3))
                print(
                    f"zero-latency {mode:<11}: channel carries {q:,.0f} pieces/s "
                    f"(host direct {d:,.0f} pieces/s)"
                )


# -- 2. the real model -----------------------------------------------------------------------


def real_model(runs: int, tmp: Path) -> None:
    reason = real_model_unavailable_reason()
    if reason:
        print(f"real model: skipped ({reason})")
        return
    # One thread for the model leaves a core for the rest, as a GPU host would: on two cores a
    # two-thread model would race the queue's own processes for the CPU it generates on.
    backend = RealModelBackend(threads=1)
    emu = LMStudioEmulator([smollm2_model()], backend=backend).start()
    prompt = "Write a long story about a dragon who learns to fly."
    kw = {"max_tokens": 96, "temperature": 0.0}
    try:
        with LMStudioClient(emu.url) as client:
            for mode, make, _ in MODES:
                with make(emu.url, tmp) as manager:  # type: ignore[attr-defined]
                    if manager is None:
                        print(f"real model  {mode:<11}: skipped (no Redis or PostgreSQL)")
                        continue
                    via_queue(manager, SMOLLM2_KEY, prompt, **kw)  # load at the queue's size
                    # direct calls go to the very instance the queue's worker loaded
                    instance = client.loaded_instances(SMOLLM2_KEY)[0].id
                    direct(client, instance, prompt, **kw)
                    q_rates, d_rates, q_first, d_first = [], [], [], []
                    for run in range(runs):  # alternate, so drift hits both alike
                        text = f"{prompt} Version {run}."
                        f, r, _ = direct(client, instance, text, **kw)
                        d_first.append(f)
                        d_rates.append(r)
                        f, r, _ = via_queue(manager, SMOLLM2_KEY, text + " ", **kw)
                        q_first.append(f)
                        q_rates.append(r)
                    q, d = pct(q_rates, 50), pct(d_rates, 50)
                    ok = "met" if q >= 0.97 * d else "MISSED"
                    print(
                        f"real model  {mode:<11}: stream() {q:.1f} pieces/s vs direct {d:.1f} "
                        f"(ratio {q / d:.3f}, target >= 0.97: {ok}); first piece p50 "
                        f"{pct(q_first, 50) * 1000:.0f} ms vs {pct(d_first, 50) * 1000:.0f} ms"
                    )
    finally:
        emu.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--real-runs", type=int, default=5)
    ap.add_argument("--only-real", action="store_true", help="skip the zero-latency part")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        if not args.only_real:
            zero_latency(args.n, Path(d))
        real_model(args.real_runs, Path(d))


if __name__ == "__main__":
    main()
