"""The dramatiq entry point: ``dramatiq lmstrix.workers --processes 1 --threads 1 --queues
lmstudio.<host>``.

What this module sets up at import, and why:

- the lmstrix configuration, read once here and passed down as a :class:`JobsConfig` (nothing
  below this entry point reads files or the environment);
- a ``RedisBroker`` from it (``LMSTRIX_REDIS_URL``), made the global broker;
- one queue ``lmstudio.<host>`` per configured host, declared here, because a dramatiq worker only
  consumes queues declared in its own process (``--queues`` merely filters them);
- the ``doorbell`` actor, with no retries (a failed job is handled by the jobs layer, not by
  re-delivering its doorbell) and without the TimeLimit middleware (its 10-minute default would
  kill long generations; our own timeouts and leases govern);
- prefetch 1 (a killed worker then strands one doorbell, not two) and a 100 ms idle poll for
  quick pickup, unless ``dramatiq_queue_prefetch`` / ``dramatiq_worker_timeout`` are set;
- a reaper thread per worker process that re-queues jobs whose worker went silent or whose lease
  expired;
- the log's verbosity: alembic's and httpx's INFO lines (a schema check's eight, a request's
  one) are held back unless ``output.verbose_by_default`` is set (``lmstrix -v worker`` sets it)
  or dramatiq runs with ``-v``;
- the runner of each host this process consumes, made at boot, so the worker is in the workers
  table (and callers know the host is served) before its first doorbell; and a ring of each of
  those hosts at boot, so what was queued while no worker ran starts at once.
"""

from __future__ import annotations

import logging
import os
import threading
from multiprocessing.util import Finalize
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware, TimeLimit, default_middleware

from lmstrix.core.config import Config
from lmstrix.domain.errors import ConfigurationError
from lmstrix.utils.logging import set_verbosity

CONFIG = Config.load()
# Before the imports below load alembic, which logs seven lines as it loads. dramatiq set up the
# log before importing this module: with its -v the root logs DEBUG.
set_verbosity(
    CONFIG.settings.output.verbose_by_default or logging.getLogger().isEnabledFor(logging.DEBUG)
)

from lmstrix.core.job_service import jobs_config  # noqa: E402 - see set_verbosity above
from lmstrix.jobs.distributed import HostServer  # noqa: E402
from lmstrix.jobs.doorbell import ACTOR_NAME, RedisDoorbell, queue_name  # noqa: E402
from lmstrix.jobs.reaper import ReaperThread  # noqa: E402
from lmstrix.jobs.store import JobStore  # noqa: E402

log = logging.getLogger(__name__)

JOBS = jobs_config(CONFIG)
if not JOBS.redis_url:
    raise ConfigurationError(
        "`dramatiq lmstrix.workers` needs Redis: set LMSTRIX_REDIS_URL (without Redis, "
        "`lmstrix worker --host NAME` drains the queue in embedded mode)",
        key="redis.url",
    )
REDIS_URL: str = JOBS.redis_url


class LmstrixWorkerMiddleware(Middleware):
    """Tunes the dramatiq worker for per-host serial work and runs the reaper beside it."""

    def __init__(self) -> None:
        self.reaper: ReaperThread | None = None

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        # dramatiq reads these at import, before this module is loaded: set them on the worker.
        if not os.environ.get("dramatiq_queue_prefetch"):  # noqa: SIM112 - dramatiq's name
            worker.queue_prefetch = 1
        if not os.environ.get("dramatiq_worker_timeout"):  # noqa: SIM112
            worker.worker_timeout = 100

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        consumed = worker.consumer_whitelist or set(HOST_QUEUES)
        doorbell = RedisDoorbell(REDIS_URL)
        for queue, host in HOST_QUEUES.items():
            if queue in consumed:
                try:
                    server_for(host)
                    # Jobs queued while no worker ran (or whose doorbell a killed worker took
                    # with it) start now, not at the reaper's next ring.
                    doorbell.ring(host)
                except Exception:  # its first doorbell tries again, and says why
                    log.exception("could not set up the worker of %s", host)
        store = JobStore(JOBS.database_url)
        self.reaper = ReaperThread(store, doorbell, JOBS.queue.reap_every, JOBS.queue.waiter_grace)
        self.reaper.start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        if self.reaper is not None:
            self.reaper.stop()

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        # A clean stop: the runners leave the workers table (a killed worker just goes quiet).
        with _servers_lock:
            servers = list(_servers.values())
            _servers.clear()
        for server in servers:
            server.close()


broker = RedisBroker(  # type: ignore[no-untyped-call]
    url=REDIS_URL,
    middleware=[m() for m in default_middleware if m is not TimeLimit],
)
broker.add_middleware(LmstrixWorkerMiddleware())
dramatiq.set_broker(broker)

HOST_QUEUES = {queue_name(h.name): h.name for h in JOBS.hosts}
for _queue in HOST_QUEUES:
    broker.declare_queue(_queue)

_servers: dict[str, HostServer] = {}
_servers_lock = threading.Lock()


def _leave_workers_table() -> None:
    """A second SIGTERM (dramatiq's forced stop, or a signal sent to the whole process group)
    exits without the worker shutdown hooks; the workers table still learns this worker left."""
    with _servers_lock:
        servers = list(_servers.values())
    for server in servers:
        server.runner.presence.stop()


# Not atexit: dramatiq's worker processes are multiprocessing children, which end through
# os._exit after multiprocessing's own exit finalizers (this is one), never through atexit.
Finalize(None, _leave_workers_table, exitpriority=0)


def server_for(host: str) -> HostServer:
    with _servers_lock:
        server = _servers.get(host)
        if server is None:
            server = _servers[host] = HostServer(JOBS, host)
        return server


@dramatiq.actor(
    actor_name=ACTOR_NAME,
    queue_name=next(iter(HOST_QUEUES), "lmstudio.default"),
    max_retries=0,
)
def doorbell(host: str) -> None:
    """Run the host's queued jobs (the message names only the host; SQL has the work)."""
    server_for(host).serve()
