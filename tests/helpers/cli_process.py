"""A real ``lmstrix`` command in its own process, for what only a process shows: signals, exit
codes and what it prints to stderr while it runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO

from helpers.waiting import wait_for


class CliProcess:
    """``python -m lmstrix.cli ARGS`` with the test's environment (plus ``env``); its output is
    collected line by line as it comes, so a test can wait for a line with a deadline."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lmstrix.cli", *args],
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._collect, args=(self.proc.stdout, self.stdout)),
            threading.Thread(target=self._collect, args=(self.proc.stderr, self.stderr)),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _collect(stream: IO[str], lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def stderr_with(self, text: str) -> list[str]:
        return [line for line in self.stderr if text in line]

    def wait_for_stderr(self, text: str, timeout: float = 30.0) -> list[str]:
        """The stderr lines containing ``text``, once there is one."""
        wait_for(lambda: self.stderr_with(text), timeout, f"{text!r} on stderr: {self.stderr}")
        return self.stderr_with(text)

    def send(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    def finish(self, timeout: float = 60.0) -> int:
        """Wait for the process to end; its exit code (a signal's is negative)."""
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def __enter__(self) -> CliProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish()
