"""The caller's side of the queue: route, validate, insert, ring, wait (facades and CLI share it).

Which mode runs is decided by the :class:`JobsConfig` alone: with a Redis URL, doorbells and
notifications go through Redis and dramatiq workers do the work; without one, this process starts
an embedded worker thread for each host it sends work to. The calls are the same either way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lmstrix.api.client import LMStudioClient
from lmstrix.api.factory import client_for
from lmstrix.db import JobKind
from lmstrix.db.model_store import ModelStore
from lmstrix.domain.budget import check_fits
from lmstrix.domain.context import ContextManager, resolve_out_ctx
from lmstrix.domain.context_blocks import compose_prompt
from lmstrix.domain.context_search import DEFAULT_MAX_ITERATIONS, DEFAULT_THRESHOLD
from lmstrix.domain.errors import (
    LMStudioConnectionError,
    LMStudioTimeoutError,
    ModelNotFoundError,
    ValidationError,
)
from lmstrix.domain.hosts import HostConfig
from lmstrix.domain.load_sizing import DEFAULT_CONTEXT, choose_load_context
from lmstrix.domain.model import Model
from lmstrix.domain.requests import InferenceOptions, inference_request
from lmstrix.domain.routing import choose_host
from lmstrix.domain.scheduler import PRIORITY_CONTEXT_TEST, PRIORITY_INTERACTIVE
from lmstrix.jobs import embedded
from lmstrix.jobs.doorbell import BrokerUnavailableError, Doorbell, RedisDoorbell, local_doorbell
from lmstrix.jobs.follow import JobFollower
from lmstrix.jobs.jobs_config import JobsConfig
from lmstrix.jobs.notify import (
    Notifier,
    RedisNotifier,
    local_notifier,
)
from lmstrix.jobs.store import JobStore, JobView
from lmstrix.jobs.wait import MAX_SLICE, OnLook, await_job, wait_for_job
from lmstrix.jobs.workers import WorkerRegistry

log = logging.getLogger(__name__)

# How long a resolved model id is trusted before the registry is asked again: long enough to
# keep lookups off the hot path of a loop of infer() calls, short enough that a finished context
# test is used within seconds.
MODEL_CACHE_SECONDS = 5.0
#: How long a live worker seen serving a host is taken as still there without asking the
#: database again (a dead one is noticed within seconds anyway: its row goes silent).
SERVED_CACHE_SECONDS = 1.0


DEFAULT_OPTIONS = InferenceOptions()


@dataclass(frozen=True, slots=True)
class SubmittedJob:
    id: str
    host: str
    model: str


class JobService:
    """Submit and wait for jobs against the configured hosts."""

    def __init__(self, config: JobsConfig, *, hosts: Sequence[HostConfig] | None = None) -> None:
        """``hosts``: where work may go when no host is named (default: every configured
        host); a host named explicitly may be any configured one."""
        self.config = config
        self.database_url = config.database_url
        self.store = JobStore(self.database_url)
        self.settings = config.queue
        self.hosts: list[HostConfig] = list(hosts) if hosts else list(config.hosts)
        self.distributed = config.distributed
        self.doorbell: Doorbell
        self.notifier: Notifier
        if config.redis_url:
            self.doorbell = RedisDoorbell(config.redis_url)
            self.notifier = RedisNotifier(config.redis_url)
        else:
            self.doorbell = local_doorbell()
            self.notifier = local_notifier()
        self._registry: ModelStore | None = None
        self.workers = WorkerRegistry(self.database_url)
        self._served_until: dict[str, float] = {}  # host -> monotonic time
        self.context = ContextManager()
        self._models: dict[tuple[str, str | None], tuple[float, list[Model]]] = {}

    @property
    def registry(self) -> ModelStore:
        if self._registry is None:
            self._registry = ModelStore(self.database_url)
        return self._registry

    def close(self) -> None:
        for part in (self.doorbell, self.notifier):
            close = getattr(part, "close", None)
            if close is not None:
                close()

    # -- hosts and models -----------------------------------------------------------------

    def host_config(self, name: str) -> HostConfig:
        for h in self.hosts:
            if h.name == name:
                return h
        return self.config.host(name)

    def client_for(self, host: HostConfig) -> LMStudioClient:
        return client_for(host, self.config.lmstudio)

    def knows_model(self, model_id: str) -> bool:
        """Whether ``model_id`` was resolved lately (no database read: a cache look)."""
        cached = self._models.get((model_id, None))
        return cached is not None and cached[0] > time.monotonic()

    def resolve_model(self, model_id: str, host: str | None = None) -> list[Model]:
        """The registry's entries for ``model_id`` on the candidate hosts (one per host).

        A model the registry does not know triggers one rescan of the hosts, so a fresh
        install works without ``lmstrix scan`` first.
        """
        if not isinstance(model_id, str) or not model_id.strip():
            raise ValidationError(
                "model_id", model_id, "must be a model id such as 'qwen/qwen3-4b' (a string)"
            )
        key = (model_id, host)
        cached = self._models.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        found = self._lookup(model_id, host)
        if not found:
            self.rescan(host)
            found = self._lookup(model_id, host)
        if not found:
            # Let the registry word the error (close matches across all hosts).
            self.registry.get_model(model_id, host)
            raise ModelNotFoundError(model_id)
        self._models[key] = (time.monotonic() + MODEL_CACHE_SECONDS, found)
        return found

    def _lookup(self, model_id: str, host: str | None) -> list[Model]:
        names = [host] if host else [h.name for h in self.hosts]
        found = []
        for name in names:
            try:
                found.append(self.registry.get_model(model_id, host=name))
            except ModelNotFoundError:
                continue
        return [m for m in found if m.present] or found

    def rescan(self, host: str | None = None) -> None:
        """Read the hosts' model lists into the registry; unreachable hosts are skipped, unless
        all are (then the connection error is raised: nothing else can be done)."""
        targets = [self.host_config(host)] if host else self.hosts
        errors: list[LMStudioConnectionError | LMStudioTimeoutError] = []
        for h in targets:
            try:
                with self.client_for(h) as client:
                    records = client.list_models()
                    gen = str(client.api_generation.value)
                self.registry.upsert_from_scan(h.name, h.url, records, api_generation=gen)
            except (LMStudioConnectionError, LMStudioTimeoutError) as exc:  # down, or hung
                log.warning("rescan of %s failed: %s", h.name, exc)
                errors.append(exc)
        if errors and len(errors) == len(targets):
            raise errors[0]

    # -- submit ---------------------------------------------------------------------------

    def prepare_request(
        self,
        chosen: Model,
        prompt: str,
        options: InferenceOptions = DEFAULT_OPTIONS,
    ) -> dict[str, Any]:
        """The inference request for ``prompt`` on the ``chosen`` model, as queued: the
        ``context_data`` blocks placed before the prompt, the output budget resolved and checked
        against the model's context (for the whole composed prompt), the load size chosen to
        fit. ``context_data`` must hold text here: the facades read files before."""
        o = options
        if chosen.type.startswith("embedding"):
            raise ValidationError(
                "model_id",
                chosen.id,
                "is an embedding model: it turns text into vectors and cannot answer a prompt; "
                "choose a chat model (`lmstrix list --filter type=llm`)",
            )
        prompt = compose_prompt(o.context_data, prompt)
        estimate = self.context.estimate_tokens
        earlier = "".join(str(turn.get("content", "")) for turn in o.history or ())
        prompt_tokens = estimate(prompt, chosen.id) + estimate(o.system_prompt or "", chosen.id)
        if earlier:
            prompt_tokens += estimate(earlier, chosen.id)
        limit = chosen.tested_context or chosen.declared_context or DEFAULT_CONTEXT
        budget = resolve_out_ctx(
            o.out_ctx, max_tokens=o.max_tokens, prompt_tokens=prompt_tokens, context_limit=limit
        )
        check_fits(chosen.id, prompt_tokens, budget, limit)
        ctx = choose_load_context(
            chosen.tested_context,
            chosen.declared_context,
            prompt_tokens + (budget if budget > 0 else 0) + 64,
        )
        request = inference_request(
            prompt=prompt,
            history=list(o.history) if o.history else None,
            system_prompt=o.system_prompt,
            temperature=o.temperature,
            top_p=o.top_p,
            top_k=o.top_k,
            max_tokens=budget,
            context_length=ctx,
            repeat_penalty=o.repeat_penalty,
            min_p=o.min_p,
            stop=None if o.stop is None else list(o.stop),
            seed=o.seed,
        ).model_dump(mode="json")
        if request["history"] is None:
            del request["history"]  # a row without turns reads as before they existed
        return request

    def submit_inference(
        self,
        model_id: str,
        prompt: str,
        options: InferenceOptions = DEFAULT_OPTIONS,
        *,
        host: str | None = None,
        priority: int = PRIORITY_INTERACTIVE,
        start_worker: bool = True,
        waiter: bool = False,
    ) -> SubmittedJob:
        """Validate, route and queue one inference; returns at once with the job id.

        ``waiter``: an interactive caller is about to wait for it with ``owned=True``; if that
        caller goes away, the job is cancelled and never run (again)."""
        if not isinstance(prompt, str) or not prompt:
            raise ValidationError("prompt", prompt, "must be a non-empty string")
        if not isinstance(options, InferenceOptions):
            raise ValidationError("options", options, "must be an InferenceOptions")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ValidationError("priority", priority, "must be an integer")
        models = self.resolve_model(model_id, host)
        chosen = models[0]
        if len(models) > 1:
            name = choose_host([m.host for m in models], self.store.queue_depths())
            chosen = next(m for m in models if m.host == name)
        request = self.prepare_request(chosen, prompt, options)
        hc = self.host_config(chosen.host)
        job_id = self.store.submit(
            host=chosen.host,
            model=chosen.id,
            request=request,
            kind=JobKind.INFERENCE,
            priority=priority,
            host_url=hc.url,
            max_attempts=self.settings.max_attempts,
            waiter=waiter,
        )
        self.ring(job_id, hc, start_worker=start_worker)
        return SubmittedJob(job_id, chosen.host, chosen.id)

    def context_test_model(self, model_id: str, host: str | None = None) -> Model:
        """The one model a context test of ``model_id`` means, read fresh from the registry.

        The same key on two hosts is two models (what fits depends on the machine), so an
        unqualified id found on several hosts is refused with the ``host/key`` ids to use.
        """
        models = self.resolve_model(model_id, host)
        if len(models) > 1:
            ids = ", ".join(m.qualified_id for m in models)
            raise ValidationError(
                "model_id", model_id, f"is on several hosts ({ids}); name one of these ids"
            )
        return self.registry.get_model(models[0].id, host=models[0].host)

    def submit_context_test(
        self,
        model_id: str,
        *,
        threshold: int = DEFAULT_THRESHOLD,
        ctx: int | None = None,
        reset: bool = False,
        force: bool = False,
        question: str | None = None,
        output_tokens: int | None = None,
        max_iterations: int = DEFAULT_MAX_ITERATIONS,
        min_context: int | None = None,
        host: str | None = None,
        priority: int = PRIORITY_CONTEXT_TEST,
        start_worker: bool = True,
        depths: tuple[float, ...] | None = None,
    ) -> SubmittedJob:
        """Validate and queue a context test of one model on its host; returns the job at once.
        ``depths`` None puts the needles at the start, the middle and the end.

        Bad input (see :func:`~lmstrix.domain.context_test_request.plan_context_test`) raises before
        any row is written, so nothing is ever probed for it.
        """
        from lmstrix.domain.context_test_request import plan_context_test

        model = self.context_test_model(model_id, host)
        request = plan_context_test(
            model,
            threshold=threshold,
            ctx=ctx,
            reset=reset,
            force=force,
            question=question,
            output_tokens=output_tokens,
            max_iterations=max_iterations,
            min_context=min_context,
            depths=depths,
        )
        hc = self.host_config(model.host)
        job_id = self.store.submit(
            host=model.host,
            model=model.id,
            request=request.model_dump(mode="json"),
            kind=JobKind.CONTEXT_TEST,
            priority=priority,
            host_url=hc.url,
            max_attempts=self.settings.max_attempts,
        )
        self.ring(job_id, hc, start_worker=start_worker)
        return SubmittedJob(job_id, model.host, model.id)

    def ring(self, job_id: str, host: HostConfig, *, start_worker: bool = True) -> None:
        """Wake the host's worker. If the doorbell cannot ring, the row is failed at once, so no
        job sits queued with nobody told (the caller gets the error).

        ``start_worker=False`` (``lmstrix submit`` in embedded mode): a process about to exit
        must not start running the job, it would leave it half-done until the lease expires.
        """
        if not self.distributed and start_worker:
            embedded.ensure_worker(
                self.store,
                host.name,
                lambda: self.client_for(host),
                self.settings.for_host(host.max_parallel),
            )
        try:
            self.doorbell.ring(host.name)
        except BrokerUnavailableError as exc:
            self.store.abandon(job_id, type(exc).__name__, str(exc))
            raise

    # -- wait -----------------------------------------------------------------------------

    def wait(
        self,
        job_id: str,
        timeout: float | None,
        *,
        cancel_on_timeout: bool = True,
        on_look: OnLook | None = None,
        max_slice: float = MAX_SLICE,
        owned: bool = False,
    ) -> JobView:
        """Block until the job's row is final; past ``timeout`` cancel it (unless told not to)
        and raise. ``on_look`` runs after every look at the row (see :func:`wait_for_job`).
        ``owned``: the job was submitted with ``waiter=True`` by this caller, whose leaving the
        wait early (Ctrl-C, an exception) cancels it. A job left queued on a host that no live
        worker serves gets one warning (logged, and repeated by the timeout error)."""
        return wait_for_job(
            self.store,
            self.notifier,
            job_id,
            timeout,
            cancel_on_timeout=cancel_on_timeout,
            on_look=on_look,
            max_slice=max_slice,
            owned=owned,
            served=self.served,
        )

    async def wait_async(
        self,
        job_id: str,
        timeout: float | None,
        *,
        cancel_on_timeout: bool = True,
        owned: bool = False,
    ) -> JobView:
        """:meth:`wait` for asyncio callers, holding no thread while it waits; with ``owned``
        a cancelled task cancels the job."""
        return await await_job(
            self.store,
            self.notifier,
            job_id,
            timeout,
            cancel_on_timeout=cancel_on_timeout,
            owned=owned,
            served=self.served,
        )

    def follow(self, job_id: str, timeout: float | None, *, owned: bool = False) -> JobFollower:
        """A reader of the job's streamed pieces from its first one (see :class:`JobFollower`);
        ``owned``: the job is the caller's (it was just submitted), cancelled when the reader
        stops early."""
        if not owned:
            self.store.status(job_id)  # an unknown id fails here, not at the first piece
        return JobFollower(
            self.store,
            self.notifier,
            self.notifier.pieces,
            job_id,
            timeout=timeout,
            owned=owned,
            served=self.served,
        )

    def served(self, host: str) -> bool:
        """Whether a live worker serves ``host``: this process's embedded one, or any in the
        workers table heard from within a few beats."""
        if not self.distributed and embedded.serving(self.store, host):
            return True
        now = time.monotonic()
        if self._served_until.get(host, 0.0) > now:
            return True
        if self.workers.serves(host):
            self._served_until[host] = now + SERVED_CACHE_SECONDS
            return True
        return False
