"""Four real processes write to the registry at once, on SQLite and on PostgreSQL: nothing lost."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from lmstrix.core.models import ModelRegistry

WRITERS = 4
ROUNDS = 20

# Each writer says "ready", waits for "go" on stdin (a real start barrier, no sleeps), then mixes
# plain updates of its own model, read-modify-writes of one shared model, and inserts.
_WRITER = textwrap.dedent(
    """
    import sys
    from lmstrix.core.models import ModelRegistry

    url, me, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    registry = ModelRegistry(url)
    print("ready", flush=True)
    assert sys.stdin.readline().strip() == "go"
    for i in range(rounds):
        registry.update_model(f"own-{me}", {"tested_context": 1000 + i, "tokens_per_second": i})
        registry.add_tags("shared", f"p{me}-{i}")
        registry.add_model({"id": f"new-{me}-{i}", "host": "local", "host_url": "http://x"})
    print("done", flush=True)
    """
)


@pytest.mark.slow
def test_four_processes_updating_at_once_lose_nothing(database_url: str) -> None:
    registry = ModelRegistry(database_url)
    registry.add_model({"id": "shared", "host": "local", "host_url": "http://x"})
    for p in range(WRITERS):
        registry.add_model({"id": f"own-{p}", "host": "local"})

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, database_url, str(p), str(ROUNDS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(WRITERS)
    ]
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == "ready", proc.stderr.read() if proc.stderr else line
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outputs = [proc.communicate(timeout=240) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0 and "done" in out, err

    shared = registry.get_model("shared")
    expected_tags = {f"p{p}-{i}" for p in range(WRITERS) for i in range(ROUNDS)}
    assert set(shared.tags) == expected_tags and len(shared.tags) == WRITERS * ROUNDS
    for p in range(WRITERS):
        own = registry.get_model(f"own-{p}")
        assert own.tested_context == 1000 + ROUNDS - 1
        assert own.tokens_per_second == ROUNDS - 1
    new = [m for m in registry.list_models() if m.id.startswith("new-")]
    assert len(new) == WRITERS * ROUNDS
