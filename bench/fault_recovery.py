"""Recovery in seconds: how long a killed worker's job, and its host's queue, wait.

Three scenarios, each timed from the rows (the database's own clock, read every 20 ms):

1. **Distributed, worker killed mid-job.** One dramatiq worker on a real-time emulated host runs a
   long job with two short ones queued behind it; it is killed (SIGKILL) and started again at
   once. Printed: seconds from the kill until the killed job was queued again, until it ran again,
   and from the restart until the host's next job started.
2. **Embedded, the process holding the host killed.** A process that holds the host (embedded
   mode, SQLite) runs a job another process queued and is killed; the other process takes over.
   Printed: seconds from the kill until the job ran again.
3. **PostgreSQL away from the worker for 2.6 s as jobs are queued** (a proxy between the worker
   and the database is cut): the doorbells arrive while the worker cannot read its queue.
   Printed: seconds from the database's return until the first of those jobs started.

Leases are 300 s, so none of these can be the lease running out; before worker heartbeats, (1)
and (2) took the lease plus a reaper interval (32 to 48 s with the defaults) and (3) up to a
reaper interval (15 s).

    python bench/fault_recovery.py [--rounds 3]

Needs Redis (``LMSTRIX_TEST_REDIS_URL``, default ``redis://127.0.0.1:6379/11``) and PostgreSQL for
(1) and (3); what is missing is skipped with a note.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _common import drop_postgres, postgres_database, redis_available, start_worker
from helpers.tcp_proxy import TcpProxy
from sqlalchemy.engine import make_url

from lmstrix.core.inference_manager import InferenceManager
from lmstrix.db.migrate import ensure_schema
from lmstrix.jobs.embedded import stop_all
from lmstrix.jobs.store import JobStore
from lmstrix.jobs.workers import WorkerRegistry
from lmstrix.testing import LMStudioEmulator
from lmstrix.utils.config import Config

MODEL = "llama-3.2-1b-instruct"
REDIS_URL = os.environ.get("LMSTRIX_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
LEASE = 300.0


def until(
    condition: Callable[[], bool], timeout: float = 120.0, store: JobStore | None = None
) -> float:
    """Poll ``condition`` every 20 ms; the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            if store is not None:  # what the rows say, to tell why
                for job in store.list_jobs():
                    print(f"  job {job.id} {job.status} attempt {job.attempts} {job.worker_id}")
                for w in WorkerRegistry(store.url).rows():
                    print(f"  worker {w.worker_id} seen {w.seen_at} running {w.current_job}")
            raise TimeoutError("the scenario did not recover")
        time.sleep(0.02)
    return time.monotonic()


def running_attempt(store: JobStore, job_id: str, attempt: int) -> Callable[[], bool]:
    def check() -> bool:
        view = store.get(job_id)
        return view.attempts >= attempt and view.status in ("running", "succeeded")

    return check


def kill(worker: subprocess.Popen[bytes]) -> None:
    """SIGKILL the dramatiq worker's whole process group (its forked child runs the jobs)."""
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(10)


@contextmanager
def emulator() -> Iterator[LMStudioEmulator]:
    emu = LMStudioEmulator(clock="real", tokens_per_second=40.0, load_seconds=0.0).start()
    try:
        yield emu
    finally:
        emu.stop()


def distributed_kill(db_url: str, tmp: Path) -> tuple[float, float, float]:
    host = f"kill{uuid.uuid4().hex[:6]}"
    with emulator() as emu:
        env = {
            "LMSTRIX_HOSTS": f"{host}={emu.url}",
            "LMSTRIX_DATABASE_URL": db_url,
            "LMSTRIX_REDIS_URL": REDIS_URL,
            "LMSTRIX_QUEUE__LEASE_SECONDS": str(LEASE),
            "XDG_CONFIG_HOME": str(tmp / "config"),
        }
        config = Config(
            {
                "hosts": [{"name": host, "url": emu.url}],
                "database": {"url": db_url},
                "redis": {"url": REDIS_URL},
            }
        )
        manager = InferenceManager(timeout=120, config=config)
        store = manager.service.store
        manager.service.rescan(host)
        worker = start_worker(host, env, tmp / f"{host}.log")
        long = manager.submit(MODEL, "count to 400", max_tokens=400).id
        short = [manager.submit(MODEL, f"say next {i}", max_tokens=4).id for i in range(2)]
        until(lambda: store.get(long).status == "running" and emu.counters.in_flight == 1)
        first_worker = store.get(long).worker_id
        kill(worker)
        killed = time.monotonic()
        worker = start_worker(host, env, tmp / f"{host}.log")
        restarted = time.monotonic()
        next_started = until(lambda: store.get(short[0]).status != "queued")
        requeued = until(lambda: store.get(long).worker_id != first_worker, store=store)
        rerun = until(running_attempt(store, long, 2), store=store)
        store.cancel(long)
        kill(worker)
        manager.close()
        return requeued - killed, rerun - killed, next_started - restarted


HOLDER = """
import sys, time
from lmstrix.core.inference_manager import InferenceManager
from lmstrix.utils.config import Config
url, db = sys.argv[1], sys.argv[2]
config = Config({"hosts": [{"name": "h1", "url": url}], "queue": {"lease_seconds": 300}})
manager = InferenceManager(timeout=60, config=config, database_url=db)
assert manager.infer("llama-3.2-1b-instruct", "say holding", max_tokens=4).succeeded
print("holding", flush=True)
time.sleep(600)
"""


def embedded_kill(tmp: Path) -> float:
    db = f"sqlite:///{tmp / f'embedded-{uuid.uuid4().hex[:6]}.db'}"
    with emulator() as emu:
        config = Config(
            {"hosts": [{"name": "h1", "url": emu.url}], "queue": {"lease_seconds": LEASE}}
        )
        manager = InferenceManager(timeout=120, config=config, database_url=db)
        manager.service.rescan()
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, emu.url, db], stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
            store = manager.service.store
            job = manager.submit(MODEL, "count to 400", max_tokens=400).id
            until(lambda: store.get(job).status == "running" and emu.counters.in_flight == 1)
            holder.kill()
            killed = time.monotonic()
            rerun = until(running_attempt(store, job, 2))
            store.cancel(job)
            return rerun - killed
        finally:
            holder.kill()
            holder.wait(10)
            manager.close()


def database_restart(direct_url: str, tmp: Path) -> float:
    url = make_url(direct_url)
    host = f"pg{uuid.uuid4().hex[:6]}"
    with emulator() as emu, TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        db_url = url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
        env = {
            "LMSTRIX_HOSTS": f"{host}={emu.url}",
            "LMSTRIX_DATABASE_URL": db_url,
            "LMSTRIX_REDIS_URL": REDIS_URL,
            "LMSTRIX_QUEUE__LEASE_SECONDS": str(LEASE),
            "LMSTRIX_QUEUE__LINGER_SECONDS": "0",
            "XDG_CONFIG_HOME": str(tmp / "config"),
        }
        # the callers reach the database straight: only the worker loses it
        config = Config(
            {
                "hosts": [{"name": host, "url": emu.url}],
                "database": {"url": direct_url},
                "redis": {"url": REDIS_URL},
            }
        )
        manager = InferenceManager(timeout=120, config=config)
        watcher = manager.service.store
        manager.service.rescan(host)
        worker = start_worker(host, env, tmp / f"{host}.log")
        warm = manager.submit(MODEL, "say warm", max_tokens=4).id
        until(lambda: watcher.get(warm).status == "succeeded")
        time.sleep(0.5)  # the worker has stopped lingering: the next job needs its doorbell
        proxy.cut()
        # their doorbells ring while the worker cannot read its queue
        jobs = [manager.submit(MODEL, f"say after {i}", max_tokens=4).id for i in range(3)]
        time.sleep(2.6)  # the length of a PostgreSQL restart
        proxy.restore()
        back = time.monotonic()
        started = until(lambda: watcher.get(jobs[0]).status != "queued")
        until(lambda: all(watcher.get(j).status == "succeeded" for j in jobs))
        kill(worker)
        manager.close()
        return started - back


def summary(name: str, values: list[float]) -> None:
    print(
        f"  {name:<52} median {statistics.median(values):5.2f} s   "
        f"max {max(values):5.2f} s   ({', '.join(f'{v:.2f}' for v in values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        db_url = postgres_database()
        have_redis = redis_available(REDIS_URL)
        print(f"lease {LEASE:.0f} s in every scenario; {args.rounds} rounds each")
        try:
            if db_url is not None and have_redis:
                ensure_schema(db_url)
                print("1. distributed: worker killed mid-job, started again at once")
                rows = [distributed_kill(db_url, tmp) for _ in range(args.rounds)]
                summary("kill -> killed job queued again", [r[0] for r in rows])
                summary("kill -> killed job running again (target 10 s)", [r[1] for r in rows])
                summary("restart -> the host's next job started (target 5 s)", [r[2] for r in rows])
            else:
                print("1. skipped: needs Redis and PostgreSQL")
            print("2. embedded: the process holding the host killed mid-job")
            summary(
                "kill -> the job running again in the other process",
                [embedded_kill(tmp) for _ in range(args.rounds)],
            )
            if db_url is not None and have_redis:
                print("3. PostgreSQL away for 2.6 s as three jobs were queued")
                summary(
                    "database back -> first of them started",
                    [database_restart(db_url, tmp) for _ in range(args.rounds)],
                )
            else:
                print("3. skipped: needs Redis and PostgreSQL")
        finally:
            stop_all()  # the embedded workers, before their SQLite files go
            if db_url is not None:
                drop_postgres(db_url)


if __name__ == "__main__":
    main()
