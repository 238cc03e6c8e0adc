"""``Gateway``: what ``lmstrix serve`` asks of the queue, as one facade.

Requests go through the queue exactly as ``infer()`` sends them (same routing, pre-checks and
scheduling; the job is the caller's, so a caller that goes away cancels it). Before a request is
queued it is admitted: with ``[serve] max_queued`` set, a host whose queue is that deep takes no
more, and in distributed mode a model whose hosts no live worker serves is refused at once.
Besides, the gateway lists the registry's models and cancels or retries jobs by id.
"""

from __future__ import annotations

import functools
import logging
from datetime import timedelta
from typing import Any

from lmstrix.core.batch_files import BatchFiles
from lmstrix.core.batch_processor import BatchProcessor
from lmstrix.core.config import Config
from lmstrix.core.inference_manager import AsyncInferenceManager
from lmstrix.core.inference_result import InferenceResult
from lmstrix.core.inference_stream import AsyncInferenceStream
from lmstrix.core.jobs import STATS_WINDOW, JobManager, QueueSnapshot
from lmstrix.domain.admission import admit
from lmstrix.domain.model import Model
from lmstrix.domain.openai_api import CompletionCall
from lmstrix.domain.serve_settings import ServeSettings
from lmstrix.jobs import embedded
from lmstrix.jobs.service import SubmittedJob
from lmstrix.jobs.store import JobView

log = logging.getLogger(__name__)


class Gateway:
    """The queue as the OpenAI-compatible server uses it; one per server."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.settings: ServeSettings = config.settings.serve
        self.inference = AsyncInferenceManager(timeout=self.settings.timeout, config=config)
        self.jobs = JobManager(config)
        self._service = self.inference.sync.service
        self._batch_processor: BatchProcessor | None = None

    @property
    def distributed(self) -> bool:
        return self.config.distributed

    def start_workers(self) -> None:
        """Embedded mode: start this process's worker for every configured host, so jobs
        queued before the server started (or by other processes) run too. Distributed mode
        starts none: the dramatiq workers do the work."""
        if self.distributed:
            return
        service = self._service
        for host in self.config.hosts:
            service.store.host_id(host.name, host.url)  # a fresh database knows no host yet
            embedded.ensure_worker(
                service.store,
                host.name,
                functools.partial(service.client_for, host),
                service.settings.for_host(host.max_parallel),
            )

    async def aclose(self) -> None:
        await self.inference.aclose()
        self.jobs.close()
        if self._batch_processor is not None:
            self._batch_processor.close()

    # -- models ---------------------------------------------------------------------------

    def models(self) -> list[Model]:
        """Every model present on a configured host, as the registry knows it."""
        hosts = {h.name for h in self.config.hosts}
        return [
            m for m in self._service.registry.list_models(include_missing=False) if m.host in hosts
        ]

    # -- requests -------------------------------------------------------------------------

    def admit(self, model_id: str) -> None:
        """Raise ``ModelNotFoundError``, ``NoWorkerError`` or ``QueueFullError`` when the
        request cannot be queued now (see the module docstring)."""
        service = self._service
        hosts = [m.host for m in service.resolve_model(model_id)]
        bound = self.settings.max_queued
        depths = service.store.queue_depths() if bound is not None else {}
        admit(model_id, hosts, depths, bound, service.served if self.distributed else None)

    def _submit(self, call: CompletionCall) -> SubmittedJob:
        """Admit ``call`` and queue it as its caller's own job (one trip to a thread)."""
        self.admit(call.model)
        return self.inference.sync.submit(
            call.model,
            call.prompt,
            system_prompt=call.system_prompt,
            waiter=True,
            history=call.history or None,
            **call.options,
        )

    async def complete(self, call: CompletionCall) -> InferenceResult:
        """The whole answer; cancelling the task cancels the job."""
        job = await self.inference.submit_owned(functools.partial(self._submit, call))
        return await self.inference.wait(job.id, owned=True)

    async def stream(self, call: CompletionCall) -> AsyncInferenceStream:
        """The answer piece by piece; the job is queued (and ``job_id`` known) on return, so
        refusals raise here, before any byte is sent."""
        stream = self.inference.stream_submitted(functools.partial(self._submit, call))
        return await stream.started()

    def abandon(self, job_id: str) -> None:
        """The caller of ``job_id`` went away: cancel the job unless it is over. Never raises
        (the caller is on its way out)."""
        try:
            if not self.jobs.get_job(job_id).finished:
                self.jobs.cancel_job(job_id)
                log.info("job %s: its HTTP client went away; cancelled", job_id)
        except Exception:
            log.warning("job %s: could not cancel it after its client went away", job_id)

    # -- what the queue holds --------------------------------------------------------------

    def snapshot(self, window: timedelta = STATS_WINDOW) -> QueueSnapshot:
        """The queue now (see :meth:`JobManager.snapshot`)."""
        return self.jobs.snapshot(window)

    def dashboard(self) -> dict[str, Any]:
        """What the dashboard shows, as JSON-ready data: hosts (API generation, live workers,
        loaded model and its context), the queue by host and model, running and recent jobs,
        batches with their counts, and models with their tested context."""
        snap = self.snapshot()
        recent = self.jobs.list_jobs(limit=25)
        running = self.jobs.list_jobs(status=["running"], limit=50)
        hosts = self.jobs.host_rows(snap)
        now = snap.taken_at

        def job(j: JobView) -> dict[str, Any]:
            began = j.started_at or j.created_at
            return {
                "id": j.id,
                "kind": j.kind,
                "host": j.host,
                "model": j.model,
                "status": j.status,
                "attempts": j.attempts,
                "seconds": round(((j.finished_at or now) - began).total_seconds(), 1),
                "words": len(((j.result or {}).get("response") or "").split()),
                "error": j.error_message,
            }

        return {
            "taken_at": now.isoformat(),
            "mode": "distributed" if self.distributed else "embedded",
            "hosts": hosts,
            "queue": [
                {
                    "host": q.host,
                    "model": q.model,
                    "depth": q.depth,
                    "oldest_wait": round((now - q.oldest).total_seconds(), 1),
                }
                for q in snap.queue
            ],
            "running": [job(j) for j in running],
            "recent": [job(j) for j in recent],
            "batches": self._batches().list_batches(10),
            "models": [
                {
                    "id": m.id,
                    "host": m.host,
                    "tested_context": m.tested_context,
                    "declared_context": m.declared_context,
                    "test_status": m.test_status,
                }
                for m in self.models()
            ],
        }

    def _batches(self) -> BatchProcessor:
        if self._batch_processor is None:
            self._batch_processor = BatchProcessor(config=self.config)
        return self._batch_processor

    @functools.cached_property
    def files(self) -> BatchFiles:
        """OpenAI's files and batches over the batch layer."""
        return BatchFiles(self._batches(), self.settings.max_file_bytes)

    # -- jobs -----------------------------------------------------------------------------

    def cancel(self, job_id: str) -> JobView:
        return self.jobs.cancel_job(job_id)

    def retry(self, job_id: str) -> JobView:
        return self.jobs.retry_job(job_id)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.jobs.get_job(job_id).to_dict()


__all__ = ["Gateway"]
