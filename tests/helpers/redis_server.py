"""A private ``redis-server`` for tests that stop and restart Redis: the shared server stays up
for every other test, while this one really goes away (its queues with it: no persistence)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path
from types import TracebackType

import pytest
import redis

from helpers.waiting import wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_redis_server() -> str:
    """The ``redis-server`` binary; skip without it, or fail under CI=true."""
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not installed (the Redis restart scenarios need their own)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true: they must run")
        pytest.skip(reason)
    return binary


class RedisServer:
    """``redis-server`` on a free port of 127.0.0.1; :meth:`stop` and :meth:`start` again keep
    the port, so clients configured with :attr:`url` see a restart."""

    def __init__(self, tmp: Path) -> None:
        self.binary = require_redis_server()
        self.port = _free_port()
        self.tmp = tmp
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        with (self.tmp / f"redis-{self.port}.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--dir", str(self.tmp)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self.answers, timeout=20, what=f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        """Kill it (SIGKILL: what it held is gone, like a crash) and wait until it is gone."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
        wait_for(lambda: not self.answers(), timeout=10, what="redis-server to go away")

    def answers(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
