"""A hung host: how long its queued jobs take to end, and how often their prompts were sent.

The emulator takes every request and answers none (``hang_requests``) after one warm-up job has
loaded the model; ``lmstudio.timeout`` is 2 s and 5 jobs are queued. One host worker
(``JobRunner.drain()`` in this process, SQLite) then drains them, once with
``queue.host_down_grace = 0`` (the queue fails as soon as the probe gets no answer) and once with
the default grace (the queue waits for the host, probed every second, then fails). Printed: the
seconds from the start of the drain until the first and the last job ended (from the rows'
``finished_at``), how each job ended, and the chat requests and probes the host received.

    python bench/fault_timeouts.py [--timeout 2] [--jobs 5]
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from lmstrix.api.client import LMStudioClient
from lmstrix.domain.queue_settings import QueueSettings
from lmstrix.jobs.notify import LocalNotifier
from lmstrix.jobs.runner import JobRunner
from lmstrix.jobs.store import JobStore
from lmstrix.testing import LMStudioEmulator

MODEL = "llama-3.2-1b-instruct"
CHAT = "POST /api/v0/chat/completions"
PROBE = "GET /lmstudio-greeting"


def submit(store: JobStore, url: str, prompt: str) -> str:
    return store.submit(
        host="hung",
        model=MODEL,
        request={"prompt": prompt, "max_tokens": 8, "context_length": 4096},
        host_url=url,
    )


def run(timeout: float, jobs: int, grace: float | None, tmp: Path) -> None:
    settings = QueueSettings() if grace is None else QueueSettings(host_down_grace=grace)
    emu = LMStudioEmulator().start()
    store = JobStore(f"sqlite:///{tmp / f'grace-{grace}.db'}")
    client = LMStudioClient(emu.url, timeout=timeout)
    runner = JobRunner(store, "hung", client, LocalNotifier(), settings=settings)
    try:
        submit(store, emu.url, "say warm")
        runner.drain()  # the model is loaded; what follows goes straight to the chat
        emu.reset_counters()
        emu.configure(hang_requests=True)
        ids = [submit(store, emu.url, f"say {i}") for i in range(jobs)]
        started = datetime.now(UTC)
        runner.drain()
        views = [store.get(j) for j in ids]
        counters = emu.counters.requests_by_endpoint
    finally:
        emu.configure(hang_requests=False)
        emu.release_hangs()
        runner.close()
        client.close()
        emu.stop()
    ended = sorted((v.finished_at - started).total_seconds() for v in views if v.finished_at)
    how = Counter(f"{v.status} {v.error_type}" for v in views)
    grace_s = settings.host_down_grace
    print(
        f"hung host, timeout {timeout:g}s, {jobs} jobs, host_down_grace {grace_s:g}s:"
        f" first job ended after {ended[0]:.2f}s, last after {ended[-1]:.2f}s;"
        f" chat requests received {counters[CHAT]}, probes {counters[PROBE]}"
    )
    print("    " + ", ".join(f"{n} {what}" for what, n in sorted(how.items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=2.0, help="lmstudio.timeout (s)")
    parser.add_argument("--jobs", type=int, default=5, help="jobs queued on the hung host")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for grace in (0.0, None):
            run(args.timeout, args.jobs, grace, Path(tmp))


if __name__ == "__main__":
    main()
