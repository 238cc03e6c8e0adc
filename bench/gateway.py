"""``lmstrix serve`` overhead: ``POST /v1/chat/completions`` through the server next to the same
request sent straight to the host.

1. Against a zero-latency emulator, each request through the server is paired with the same
   body posted to the emulator's own ``/v1/chat/completions`` just before it; the difference is
   what the server and the queue add (HTTP in, admission, the job row, the doorbell, the claim,
   the look at the loaded instance, the finish, the notification, the answer out). Plain
   requests give p50 and p99; streamed ones the added time to the first content chunk. The
   server's CPU time per request (its process, read from /proc) is printed beside them.

   Every party runs in its own process, as in use: the emulator (``lmstrix emulator``, as LM
   Studio is its own app), ``lmstrix serve``, the dramatiq workers, and the client (this
   script). Python threads in one process share one interpreter lock, so a server, an emulator
   and a client in one process would each wait for the others' turns.
2. 50 concurrent clients against a server with two hosts (emulators answering at 200 tokens per
   second, 4 slots per loaded model): every request must be answered, each host must have run
   at most its slot count at once on one instance, and loaded one model at a time. This part
   reads the emulators' counters, so they and the server run inside this process.

Both in embedded mode (the server's own worker threads, SQLite) and in distributed mode (a
dramatiq worker process per host, PostgreSQL, Redis). Targets: p50 overhead < 10 ms embedded,
< 15 ms distributed.

    python bench/gateway.py [--n 200] [--clients 50]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    drop_postgres,
    pct,
    postgres_database,
    redis_available,
    start_worker,
    stop_worker,
)

from lmstrix.core.config import Config
from lmstrix.core.jobs import JobManager
from lmstrix.jobs import embedded
from lmstrix.serve import create_app
from lmstrix.testing import LMStudioEmulator

MODEL = "llama-3.2-1b-instruct"
REDIS_URL = os.environ.get("LMSTRIX_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
TARGETS_MS = {"embedded": 10.0, "distributed": 15.0}
ROWS: list[tuple[str, ...]] = []


def body(prompt: str, stream: bool = False) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 8,
        "stream": stream,
    }


@contextmanager
def serving(config: Config) -> Iterator[str]:
    """``lmstrix serve``'s app on uvicorn in a thread, on a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def first_chunk(client: httpx.Client, url: str, prompt: str) -> float:
    """Seconds to the first content chunk of a streamed chat."""
    t0 = time.perf_counter()
    took = None
    with client.stream("POST", url, json=body(prompt, stream=True)) as r:
        r.raise_for_status()
        for line in r.iter_lines():  # read to the end, as a client does
            if (
                took is None
                and '"content":"' in line.replace(" ", "")
                and '"content":""' not in line
            ):
                took = time.perf_counter() - t0
    if took is not None:
        return took
    raise RuntimeError("no content chunk")


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def overhead(mode: str, server: str, host_url: str, n: int, server_pid: int) -> None:
    served = f"{server}/v1/chat/completions"
    direct = f"{host_url}/v1/chat/completions"
    with httpx.Client(timeout=60) as client:
        for i in range(20):  # warm up: the model loaded, pools and caches filled
            client.post(served, json=body(f"say warm {i}")).raise_for_status()
            client.post(direct, json=body(f"say warm {i}")).raise_for_status()
        plain, ttft = [], []
        cpu_before = cpu_seconds(server_pid)
        for i in range(n):
            t0 = time.perf_counter()
            client.post(direct, json=body(f"say item {i}")).raise_for_status()
            t1 = time.perf_counter()
            client.post(served, json=body(f"say item {i}")).raise_for_status()
            t2 = time.perf_counter()
            plain.append((t2 - t1) - (t1 - t0))
        cpu_per_request = (cpu_seconds(server_pid) - cpu_before) / n
        for i in range(n):
            ttft.append(
                first_chunk(client, served, f"say item {i}")
                - first_chunk(client, direct, f"say item {i}")
            )
    target = TARGETS_MS[mode]
    p50, p99 = pct(plain, 50) * 1000, pct(plain, 99) * 1000
    t50, t99 = pct(ttft, 50) * 1000, pct(ttft, 99) * 1000
    ok = "met" if p50 < target else "MISSED"
    ROWS.append(
        (
            mode,
            f"{n}",
            f"{p50:.2f}",
            f"{p99:.2f}",
            f"{t50:.2f}",
            f"{t99:.2f}",
            f"{cpu_per_request * 1000:.2f}",
            f"< {target:g}: {ok}",
        )
    )


def concurrency(mode: str, server: str, hosts: list[LMStudioEmulator], clients: int) -> None:
    for emu in hosts:
        emu.reset_counters()
    served = f"{server}/v1/chat/completions"

    def one(i: int) -> int:
        with httpx.Client(timeout=300) as client:
            return client.post(served, json=body(f"count to {5 + i % 5}")).status_code

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        codes = list(pool.map(one, range(clients)))
    took = time.perf_counter() - t0
    ok = sum(c == 200 for c in codes)
    runs = [emu.counters.inferences for emu in hosts]
    # a host runs up to its slots at once on one loaded model, and loads one model at a time
    most = [max(emu.counters.max_concurrency.values(), default=0) for emu in hosts]
    slots = [emu.settings.default_parallel for emu in hosts]
    loads = [emu.counters.max_loads_in_flight for emu in hosts]
    kept = all(m <= s for m, s in zip(most, slots, strict=True)) and max(loads) <= 1
    verdict = "met" if ok == clients and kept and min(runs) > 0 else "MISSED"
    print(
        f"{mode:<12} {clients} concurrent clients, 2 hosts: {ok}/{clients} answered 200 in "
        f"{took:.1f} s; requests per host {runs}; most at once per host {most} of {slots} "
        f"slots, loads at once {loads} (every request served, within the slots: {verdict})"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def child(cmd: list[str], env: dict[str, str], log: Path, ready: str) -> Iterator[int]:
    """A child process (its own session), up once GET ``ready`` answers; yields its pid."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, *cmd],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(ready, timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{' '.join(cmd)} did not start; see {log}") from None
                time.sleep(0.1)
        yield proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def emulator_process(tmp: Path) -> Iterator[str]:
    """A zero-latency emulator in its own process (``lmstrix emulator``); yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = ["-m", "lmstrix.cli", "emulator", "--port", str(port)]
    with child(cmd, {}, tmp / "emulator.log", f"{url}/v1/models"):
        yield url


@contextmanager
def serve_process(hosts: dict[str, str], tmp: Path, **env: str) -> Iterator[tuple[str, int]]:
    """``lmstrix serve`` in its own process for ``hosts``; yields its URL and pid."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "LMSTRIX_HOSTS": ",".join(f"{k}={v}" for k, v in hosts.items()),
        "XDG_CONFIG_HOME": str(tmp / "config"),
        **env,
    }
    cmd = ["-m", "lmstrix.cli", "serve", "--port", str(port), "--log-level", "warning"]
    with child(cmd, env, tmp / "serve.log", f"{url}/v1/models") as pid:
        yield url, pid


def host_config(hosts: dict[str, str], **more: Any) -> Config:
    return Config({"hosts": [{"name": k, "url": v} for k, v in hosts.items()], **more})


def embedded_mode(pair: list[LMStudioEmulator], tmp: Path, n: int, clients: int) -> None:
    try:
        with emulator_process(tmp) as host_url:
            db = f"sqlite:///{tmp / 'embedded.db'}"
            with serve_process({"bench": host_url}, tmp, LMSTRIX_DATABASE_URL=db) as (url, pid):
                overhead("embedded", url, host_url, n, pid)
        db_config = {"database": {"url": f"sqlite:///{tmp / 'embedded2.db'}"}}
        with serving(host_config({"a": pair[0].url, "b": pair[1].url}, **db_config)) as server:
            concurrency("embedded", server, pair, clients)
    finally:
        embedded.stop_all()


@contextmanager
def dramatiq_workers(hosts: dict[str, str], db: str, tmp: Path) -> Iterator[None]:
    env = {
        "LMSTRIX_HOSTS": ",".join(f"{k}={v}" for k, v in hosts.items()),
        "LMSTRIX_DATABASE_URL": db,
        "LMSTRIX_REDIS_URL": REDIS_URL,
        "XDG_CONFIG_HOME": str(tmp / "config"),
        "LMSTRIX_QUEUE__LINGER_SECONDS": "30",
    }
    procs = [start_worker(h, env, tmp / f"worker-{h}.log") for h in hosts]
    try:
        config = host_config(hosts, database={"url": db}, redis={"url": REDIS_URL})
        with JobManager(config) as jobs:
            deadline = time.monotonic() + 60
            while not all(jobs.workers(h) for h in hosts):
                if time.monotonic() > deadline:
                    raise RuntimeError("the dramatiq workers did not register")
                time.sleep(0.1)
        yield
    finally:
        for p in procs:
            stop_worker(p)


def distributed_mode(pair: list[LMStudioEmulator], tmp: Path, n: int, clients: int) -> None:
    if not redis_available(REDIS_URL):
        print(f"distributed: skipped (no Redis at {REDIS_URL})")
        return
    db = postgres_database()
    if db is None:
        print("distributed: skipped (no PostgreSQL)")
        return
    tag = f"g{os.getpid()}"
    extra = {"database": {"url": db}, "redis": {"url": REDIS_URL}}
    env = {"LMSTRIX_DATABASE_URL": db, "LMSTRIX_REDIS_URL": REDIS_URL}
    try:
        with emulator_process(tmp) as host_url:
            one = {f"{tag}x": host_url}
            with dramatiq_workers(one, db, tmp), serve_process(one, tmp, **env) as (url, pid):
                overhead("distributed", url, host_url, n, pid)
        two = {f"{tag}a": pair[0].url, f"{tag}b": pair[1].url}
        with dramatiq_workers(two, db, tmp), serving(host_config(two, **extra)) as server:
            concurrency("distributed", server, pair, clients)
    finally:
        drop_postgres(db)


def print_table() -> None:
    headers = (
        "mode",
        "n",
        "p50 ms",
        "p99 ms",
        "1st chunk p50",
        "1st chunk p99",
        "server CPU ms/req",
        "target p50",
    )
    widths = [max(len(h), *(len(r[i]) for r in ROWS)) for i, h in enumerate(headers)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(
        "\nPOST /v1/chat/completions through lmstrix serve, minus the same request sent "
        "straight to the host (ms)"
    )
    print(line(headers))
    for row in ROWS:
        print(line(row))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--clients", type=int, default=50)
    args = ap.parse_args()
    modes: dict[str, Callable[..., None]] = {
        "embedded": embedded_mode,
        "distributed": distributed_mode,
    }
    with tempfile.TemporaryDirectory() as d, ExitStack() as stack:
        pair = [
            stack.enter_context(
                LMStudioEmulator(clock="real", tokens_per_second=200.0, load_seconds=0.0)
            )
            for _ in range(2)
        ]
        for name, run in modes.items():
            (Path(d) / name).mkdir()
            run(pair, Path(d) / name, args.n, args.clients)
    print_table()


if __name__ == "__main__":
    main()
