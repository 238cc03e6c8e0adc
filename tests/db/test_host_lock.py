"""The host lock: one holder at a time, released on release and when its holder goes away."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from lmstrix.db.host_lock import (
    AdvisoryHostLock,
    FileHostLock,
    HostLock,
    NoHostLock,
    host_lock_for,
    lock_key,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def make_lock(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], HostLock]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'lmstrix.db'}"
    else:
        url = request.getfixturevalue("shared_postgres_url")
    return lambda host: host_lock_for(url, host)


def test_one_holder_at_a_time_per_host(make_lock: Callable[[str], HostLock]) -> None:
    first, second, other_host = make_lock("h1"), make_lock("h1"), make_lock("h2")
    assert first.try_acquire() and first.held
    assert first.try_acquire()  # asking again while holding it is fine
    assert not second.try_acquire() and not second.held
    assert other_host.try_acquire()  # another host is another lock
    first.release()
    assert not first.held
    assert second.try_acquire()
    second.release()
    other_host.release()


def test_a_dead_holder_leaves_the_lock_free(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lmstrix.db'}"
    code = (
        "import sys, time\n"
        "from lmstrix.db.host_lock import host_lock_for\n"
        f"lock = host_lock_for({url!r}, 'h1')\n"
        "assert lock.try_acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
    mine = host_lock_for(url, "h1")
    assert not mine.try_acquire()
    holder.kill()
    holder.wait(10)
    assert mine.try_acquire()  # the kernel dropped the dead process's lock
    mine.release()


def test_a_closed_postgres_session_frees_its_lock(shared_postgres_url: str) -> None:
    holder = AdvisoryHostLock(shared_postgres_url, lock_key("dead-session"))
    assert holder.try_acquire()
    assert holder._conn is not None
    holder._conn.invalidate()  # the connection is gone, as when its process dies
    holder._conn = None
    other = AdvisoryHostLock(shared_postgres_url, lock_key("dead-session"))
    assert other.try_acquire()
    other.release()


def test_which_lock_for_which_database(tmp_path: Path) -> None:
    file_lock = host_lock_for(f"sqlite:///{tmp_path / 'q.db'}", "my host/1")
    assert isinstance(file_lock, FileHostLock)
    assert file_lock.path == f"{tmp_path / 'q.db'}.host-my_host_1.lock"
    assert isinstance(host_lock_for("sqlite://", "h"), NoHostLock)
    assert isinstance(host_lock_for("postgresql://u@127.0.0.1/x", "h"), AdvisoryHostLock)
    assert lock_key("h") == lock_key("h") != lock_key("h2")
    assert -(2**63) <= lock_key("h") < 2**63
