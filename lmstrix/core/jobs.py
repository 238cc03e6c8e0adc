"""``JobManager``: look at and manage the queue's jobs, and run a host's worker.

The facade of the queue's housekeeping (what ``lmstrix jobs``, ``lmstrix workers`` and
``lmstrix worker`` do): list, show, wait for, cancel, retry and prune jobs, re-queue the jobs of
dead workers, list the running workers, and drain a host's queue in this process. It reads the
configuration when none is given and leaves the submitting of work to the facades that know what
the work is (``InferenceManager``, ``ContextTester``, ``BatchProcessor``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from lmstrix.api.factory import client_for
from lmstrix.core.config import Config, HostConfig
from lmstrix.core.inference_stream import InferenceStream
from lmstrix.core.job_service import open_job_service
from lmstrix.domain.clock import utcnow
from lmstrix.domain.enums import WorkerMode
from lmstrix.domain.errors import JobNotFound, LMStrixError, LMStudioAuthError, ValidationError
from lmstrix.domain.heartbeats import WORKER_LIVE_WITHIN, worker_live
from lmstrix.domain.queue_stats import FinishedSample, HostFigures, QueueLine, host_figures
from lmstrix.jobs import stats
from lmstrix.jobs.doorbell import worker_command
from lmstrix.jobs.embedded import EmbeddedWorker
from lmstrix.jobs.reaper import reap
from lmstrix.jobs.runner import JobRunner
from lmstrix.jobs.service import JobService
from lmstrix.jobs.store import FINISHED, JobView, ReapedJob, parse_job_id

# How often a long-running embedded worker looks at its queue: other processes cannot ring an
# in-process doorbell, so work they queue is found by looking.
WORKER_POLL_SECONDS = 1.0
# A worker's look at its host's token before it starts: seconds per request.
TOKEN_CHECK_SECONDS = 5.0
# Jobs a prefix matching several lists in its error.
MAX_PREFIX_MATCHES = 5
# The window of ended jobs the statistics cover.
STATS_WINDOW = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """What :meth:`JobManager.snapshot` returns."""

    taken_at: datetime
    counts: list[tuple[str, str, str, int]]
    queue: list[QueueLine]
    finished: list[FinishedSample]
    hosts: list[HostFigures]
    workers: list[dict[str, Any]]


class JobManager:
    """The queue's jobs, whatever submitted them, and the workers that run them."""

    def __init__(self, config: Config | None = None, *, database_url: str | None = None) -> None:
        self.config = config or Config.load()
        self._database_url = database_url
        self._built: JobService | None = None

    @property
    def _service(self) -> JobService:
        # Built on first use: naming a dramatiq worker's command line needs no database or broker.
        if self._built is None:
            self._built = open_job_service(self.config, database_url=self._database_url)
        return self._built

    def close(self) -> None:
        if self._built is not None:
            self._built.close()

    def __enter__(self) -> JobManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def distributed(self) -> bool:
        """Whether dramatiq workers run the jobs (a Redis URL is configured)."""
        return self.config.distributed

    def host(self, name: str) -> HostConfig:
        """The configured host ``name`` (a ``ConfigurationError`` names the known ones)."""
        return self.config.host(name)

    # -- jobs -----------------------------------------------------------------------------

    def list_jobs(
        self,
        *,
        status: Sequence[str] | None = None,
        host: str | None = None,
        model: str | None = None,
        limit: int = 50,
    ) -> list[JobView]:
        """Newest first, optionally only those with one of ``status``, on ``host``, of ``model``."""
        return self._service.store.list_jobs(status=status, host=host, model=model, limit=limit)

    def job_id(self, id_or_prefix: str) -> str:
        """The full id of the one job whose id starts with ``id_or_prefix`` (a whole id is
        returned as it is). ``JobNotFound`` when no job's does; a ``ValidationError`` listing
        the matches when several do."""
        text = str(id_or_prefix).strip()
        try:
            return str(parse_job_id(text))
        except JobNotFound:
            pass
        found = self._service.store.ids_starting_with(text, limit=MAX_PREFIX_MATCHES + 1)
        if not found:
            raise JobNotFound(text)
        if len(found) > 1:
            shown = ", ".join(found[:MAX_PREFIX_MATCHES])
            more = ", ..." if len(found) > MAX_PREFIX_MATCHES else ""
            raise ValidationError(
                "job_id", text, f"matches several jobs ({shown}{more}); give more of the id"
            )
        return found[0]

    def get_job(self, job_id: str) -> JobView:
        """One job, by its id or a prefix of it (see :meth:`job_id`)."""
        return self._service.store.get(self.job_id(job_id))

    def wait_job(
        self, job_id: str, timeout: float | None, *, cancel_on_timeout: bool = False
    ) -> JobView:
        """Block until the job is finished; past ``timeout`` raise ``InferenceTimeoutError``
        (cancelling the job first with ``cancel_on_timeout``)."""
        return self._service.wait(self.job_id(job_id), timeout, cancel_on_timeout=cancel_on_timeout)

    def follow_job(self, job_id: str, timeout: float | None = None) -> InferenceStream:
        """The answer of a queued or running inference job, piece by piece from its start, as
        it is written; a finished job gives its whole answer at once. Stopping early leaves the
        job running (it is not the reader's)."""
        return InferenceStream(self._service.follow(self.job_id(job_id), timeout, owned=False))

    def cancel_job(self, job_id: str) -> JobView:
        """Cancel a job: a queued one at once, a running one at its next chunk or probe."""
        return self._service.store.cancel(self.job_id(job_id))

    def retry_job(self, job_id: str) -> JobView:
        """Queue a failed, cancelled or expired job again and wake its host's worker.

        No worker is started in this process: a caller about to exit would leave the job
        half-done until its lease expires.
        """
        job = self._service.store.retry(self.job_id(job_id))
        self._service.ring(job.id, self._service.host_config(job.host), start_worker=False)
        return job

    def prune_jobs(self, older_than: timedelta, statuses: Sequence[str] = FINISHED) -> int:
        """Delete finished jobs (with their results) that ended more than ``older_than`` ago;
        returns how many."""
        return self._service.store.prune(older_than, statuses)

    def reap(self) -> list[ReapedJob]:
        """Re-queue running jobs whose worker died (lease expired) and ring their hosts."""
        service = self._service
        return reap(service.store, service.doorbell, waiter_grace=service.settings.waiter_grace)

    # -- workers --------------------------------------------------------------------------

    def workers(
        self, host: str | None = None, *, include_stale: bool = False
    ) -> list[dict[str, Any]]:
        """The workers serving hosts (of ``host``, or all), as dicts: ``worker_id``, ``host``,
        ``hostname`` (the machine), ``pid``, ``mode`` (embedded or distributed),
        ``started_at``, ``seen_at``, ``current_job``, ``loaded_model`` and ``live``. Only live
        ones (heard from within a few seconds) unless ``include_stale``; a worker that died is
        remembered for a day."""
        registry = self._service.workers
        within = None if include_stale else WORKER_LIVE_WITHIN
        now = utcnow()
        return [
            {**w.to_dict(), "live": worker_live(w.seen_at, now)}
            for w in registry.rows(host, within=within)
        ]

    # -- what the queue holds ---------------------------------------------------------------

    def snapshot(self, window: timedelta = STATS_WINDOW) -> QueueSnapshot:
        """The queue now: counts by status, host and kind; queued jobs by host and model; the
        jobs that ended within ``window``; per configured host its figures (queue, outcomes,
        loads, swaps, speed), its live workers, loaded model and context and current job; the
        live workers. What ``/metrics``, the dashboard, ``lmstrix ps`` and ``stats`` show."""
        url = self._service.database_url
        now = utcnow()
        finished = stats.finished_since(url, now - window)
        queue = stats.queue_lines(url)
        figures = host_figures([h.name for h in self.config.hosts], finished, queue, now)
        workers = self.workers()
        for w in workers:
            if w["host"] in figures:
                figures[w["host"]].add_worker(w, finished)
        return QueueSnapshot(
            now, stats.status_counts(url), queue, finished, list(figures.values()), workers
        )

    def host_rows(self, snap: QueueSnapshot) -> list[dict[str, Any]]:
        """Each host of ``snap`` as JSON-ready data: its figures with its URL, API generation,
        when the registry last saw it, and whether a worker is alive."""
        known = {h["name"]: h for h in self._service.registry.list_hosts()}
        urls = {h.name: h.url for h in self.config.hosts}
        return [
            {
                **f.to_dict(),
                "url": urls.get(f.host),
                "api_generation": known.get(f.host, {}).get("api_generation"),
                "last_seen": known.get(f.host, {}).get("last_seen"),
                "worker_alive": any(w["live"] for w in f.workers),
            }
            for f in snap.hosts
        ]

    def check_token(self, host: str) -> None:
        """Raise ``LMStudioAuthError`` when ``host`` refuses lmstrix's token (or wants one it
        is not given): a worker started there would fail every job it takes. A host that is down
        or answers otherwise is no error here; the worker waits for it as it does later."""
        hc = self.host(host)
        probe = self.config.settings.lmstudio.for_probe(TOKEN_CHECK_SECONDS, max_retries=0)
        with client_for(hc, probe) as client:
            try:
                client.detect_api_generation()
            except LMStudioAuthError:
                raise
            except LMStrixError:
                return

    def worker_argv(self, host: str) -> list[str]:
        """The command line of a dramatiq worker serving ``host`` alone (distributed mode)."""
        self.host(host)  # a clear error for an unknown host, before anything starts
        return worker_command(host)

    def run_worker(
        self,
        host: str,
        *,
        once: bool = False,
        on_start: Callable[[HostConfig], None] | None = None,
    ) -> int:
        """Run ``host``'s queued jobs in this process; returns how many ran.

        ``once`` drains the queue (after re-queueing jobs of dead workers) and returns;
        otherwise the worker runs until Ctrl-C. ``on_start`` is told the host before the first
        job runs.
        """
        service = self._service
        hc = service.host_config(host)
        service.store.host_id(host, hc.url)
        if on_start is not None:
            on_start(hc)
        if once:
            reap(service.store, None, waiter_grace=service.settings.waiter_grace)
            with service.client_for(hc) as client:
                # The service's notifier: through Redis when configured, so that waiters in
                # other processes hear of the jobs this drain finishes.
                runner = JobRunner(
                    service.store,
                    host,
                    client,
                    service.notifier,
                    settings=service.settings.for_host(hc.max_parallel),
                    mode=WorkerMode.DISTRIBUTED if service.distributed else WorkerMode.EMBEDDED,
                )
                try:
                    return runner.drain()
                finally:
                    runner.close()
        worker = EmbeddedWorker(
            service.store,
            host,
            lambda: service.client_for(hc),
            settings=service.settings.for_host(hc.max_parallel),
        )
        worker.start()
        try:
            while True:
                time.sleep(WORKER_POLL_SECONDS)
                worker.wake()
        except KeyboardInterrupt:
            pass
        finally:
            worker.stop()
        return worker.runner.jobs_run if worker.runner else 0


__all__ = ["FINISHED", "JobManager", "JobView", "ReapedJob"]
