"""Which process may run a host's jobs, when no broker says so (embedded mode).

One worker per host must hold across processes too: two scripts using lmstrix on the same
database would otherwise both load models on the same LM Studio. The lock lives where the
queue does, and dies with the process that holds it, so a crashed holder never blocks anyone:

- SQLite: an exclusive ``flock`` on a file next to the database
  (``<database>.host-<name>.lock``), released by the kernel when the process ends;
- PostgreSQL: a session-level advisory lock on a connection kept open for it, released by the
  server when that connection closes.

Other databases get no lock (one process per host is then the user's care).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import threading
from typing import Protocol

from sqlalchemy import Connection, text

from lmstrix.db.engine import get_engine, normalize_url, sqlite_path

log = logging.getLogger(__name__)


class HostLock(Protocol):
    @property
    def held(self) -> bool: ...

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; True when this process holds it now."""
        ...

    def release(self) -> None: ...


class FileHostLock:
    """An exclusive, non-blocking ``flock`` on a file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._mutex = threading.Lock()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        with self._mutex:
            if self._fd is not None:
                return True
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            self._fd = fd
            return True

    def release(self) -> None:
        with self._mutex:
            if self._fd is not None:
                os.close(self._fd)  # closing the descriptor drops the lock
                self._fd = None


class AdvisoryHostLock:
    """A PostgreSQL session advisory lock on a dedicated connection."""

    def __init__(self, url: str, key: int) -> None:
        self.url = url
        self.key = key
        self._conn: Connection | None = None
        self._mutex = threading.Lock()

    @property
    def held(self) -> bool:
        return self._conn is not None

    def try_acquire(self) -> bool:
        with self._mutex:
            if self._conn is not None:
                return True
            conn = get_engine(self.url).connect()
            try:
                got = bool(
                    conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar()
                )
                conn.commit()
            except Exception:
                conn.close()
                raise
            if not got:
                conn.close()
                return False
            self._conn = conn
            return True

    def release(self) -> None:
        with self._mutex:
            conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            conn.commit()
        except Exception:  # the server drops it with the connection anyway
            log.debug("advisory unlock failed", exc_info=True)
        finally:
            conn.close()


class NoHostLock:
    """Databases without a lock lmstrix can use: every process may run the host."""

    held = True

    def try_acquire(self) -> bool:
        return True

    def release(self) -> None:
        pass


def lock_key(host: str) -> int:
    """A stable signed 64-bit key for ``host`` (PostgreSQL advisory locks take a bigint)."""
    digest = hashlib.blake2b(f"lmstrix-host:{host}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def host_lock_for(url: str, host: str) -> HostLock:
    """The lock that lets one process at a time run ``host``'s jobs from the database ``url``."""
    backend = normalize_url(url).get_backend_name()
    if backend == "sqlite":
        path = sqlite_path(url)
        if path is None:  # an in-memory database belongs to one process anyway
            return NoHostLock()
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", host)
        return FileHostLock(f"{path}.host-{safe}.lock")
    if backend == "postgresql":
        return AdvisoryHostLock(url, lock_key(host))
    return NoHostLock()


__all__ = [
    "AdvisoryHostLock",
    "FileHostLock",
    "HostLock",
    "NoHostLock",
    "host_lock_for",
    "lock_key",
]
