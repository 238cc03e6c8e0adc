"""Real `dramatiq lmstrix.workers` processes for the distributed tests: Redis check, environment,
start, kill and stop, shared by every test that runs them."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import pytest
import redis

from lmstrix.jobs.doorbell import worker_command

REDIS_URL = os.environ.get("LMSTRIX_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


def require_redis(url: str = REDIS_URL) -> str:
    """``url`` if Redis answers there; otherwise skip, or fail under CI=true."""
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        reason = f"Redis at {url} does not answer ({exc})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the Redis tests must run, not skip)")
        pytest.skip(reason)
    return url


def worker_env(
    hosts: str,
    db_url: str,
    redis_url: str,
    tmp: Path,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The workers' environment: ``hosts`` as ``name=url,...``, no user config file."""
    env = {
        **os.environ,
        "LMSTRIX_HOSTS": hosts,
        "LMSTRIX_DATABASE_URL": db_url,
        "LMSTRIX_REDIS_URL": redis_url,
        **(extra or {}),
        "XDG_CONFIG_HOME": str(tmp / "config"),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("LMSTRIX_CONFIG", None)
    return env


class DramatiqWorkers:
    """`dramatiq lmstrix.workers` processes, as `lmstrix worker` runs them (one process, one
    thread, one host's queue), each in its own process group; stopped on leaving the block."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, host: str, log_name: str | None = None) -> subprocess.Popen[bytes]:
        name = log_name or f"worker-{host}-{len(self.procs)}.log"
        with (self.tmp / name).open("ab") as log:
            proc = subprocess.Popen(
                worker_command(host),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the signal reaches the fork
            )
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.procs.clear()

    def __enter__(self) -> DramatiqWorkers:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
