"""Helpers shared by the queue benches: percentiles, a throwaway PostgreSQL database, a worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def postgres_database() -> str | None:
    """A fresh PostgreSQL database URL, or None when the server does not answer."""
    from lmstrix.db import testing as dbtesting

    server = dbtesting.test_postgres_url()
    if dbtesting.postgres_unavailable(server):
        return None
    return dbtesting.create_database(server, prefix="lmstrix_bench")


def drop_postgres(url: str) -> None:
    from lmstrix.db import dispose_engines
    from lmstrix.db import testing as dbtesting

    dispose_engines()
    dbtesting.drop_database(url, dbtesting.test_postgres_url())


def redis_available(url: str) -> bool:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError:
        return False
    return True


def start_worker(host: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "dramatiq", "lmstrix.workers", "--processes", "1"]
    cmd += ["--threads", "1", "--queues", f"lmstudio.{host}"]
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
