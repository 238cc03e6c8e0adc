"""``InferenceManager`` / ``AsyncInferenceManager``: ``infer()`` as a blocking (or awaitable) call
over the job queue.

Every call is a job row (rule 1): it is validated, routed to a host, queued, run by that host's
worker (an in-process thread in embedded mode, a dramatiq process in distributed mode) and waited
for by notification. The caller sees a plain result with the keys of the public API, plus
``job_id``, so a slow call can be looked up later with ``lmstrix jobs show``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, Never, TypeVar, overload

from lmstrix.core.job_service import open_job_service
from lmstrix.domain.errors import InferenceTimeoutError
from lmstrix.domain.requests import InferenceOptions
from lmstrix.jobs import errors
from lmstrix.jobs.notify import (
    DONE_KEY,
    FIRST_SLICE,
    MAX_SLICE,
    LocalNotifier,
    RedisNotifier,
)
from lmstrix.jobs.service import SubmittedJob
from lmstrix.jobs.store import JobView
from lmstrix.loaders.prompt_loader import PromptLoader
from lmstrix.utils.config import Config

RESULT_KEYS = (
    "succeeded",
    "response",
    "tokens_used",
    "prompt_tokens",
    "response_tokens",
    "inference_time",
    "time_to_first_token",
    "tokens_per_second",
    "stop_reason",
    "error",
    "model_info",
    "job_id",
)


log = logging.getLogger(__name__)


T = TypeVar("T")


def _optional(convert: Callable[[Any], T]) -> Callable[[Any], T | None]:
    return lambda v: None if v is None else convert(v)


class _Field(Generic[T]):
    """A read-only typed attribute of an :class:`InferenceResult`: its key, converted."""

    def __init__(self, convert: Callable[[Any], T]) -> None:
        self.convert = convert
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _Field[T]: ...
    @overload
    def __get__(self, obj: InferenceResult, owner: type | None = None) -> T: ...
    def __get__(self, obj: InferenceResult | None, owner: type | None = None) -> T | _Field[T]:
        if obj is None:
            return self
        return self.convert(obj[self.name])

    def __set__(self, obj: InferenceResult, value: Never) -> None:
        raise AttributeError(f"property {self.name!r} of 'InferenceResult' object has no setter")


class InferenceResult(dict[str, Any]):
    """The result of ``infer()``: a plain dict (``result["response"]``, JSON-serializable) that
    also reads as a typed object (``result.response``)."""

    succeeded = _Field(bool)
    response = _Field(str)
    tokens_used = _Field(int)
    prompt_tokens = _Field(int)
    response_tokens = _Field(int)
    inference_time = _Field(float)
    time_to_first_token = _Field(_optional(float))
    tokens_per_second = _Field(_optional(float))
    stop_reason = _Field(_optional(str))
    error = _Field(_optional(str))
    model_info: _Field[dict[str, Any]] = _Field(dict)
    job_id = _Field(str)

    @classmethod
    def from_job(cls, job: JobView) -> InferenceResult:
        """The result of a finished job; raises for faults the caller must handle."""
        r = job.result or {}
        if job.status != "succeeded" and errors.should_raise(job.error_type):
            assert job.error_type is not None
            raise errors.rebuild(job.error_type, job.error_message or "", r.get("error_details"))
        error = None
        if job.status != "succeeded":
            error = job.error_message or job.error_type or job.status
        info = dict(r.get("model_info") or {"id": job.model, "host": job.host})
        return cls(
            succeeded=job.status == "succeeded",
            response=r.get("response") or "",
            tokens_used=int(r.get("tokens_used") or 0),
            prompt_tokens=int(r.get("prompt_tokens") or 0),
            response_tokens=int(r.get("response_tokens") or 0),
            inference_time=float(r.get("inference_time") or 0.0),
            time_to_first_token=r.get("time_to_first_token"),
            tokens_per_second=r.get("tokens_per_second"),
            stop_reason=r.get("stop_reason")
            or ("cancelled" if job.status == "cancelled" else None),
            error=error,
            model_info=info,
            job_id=job.id,
        )


class InferenceManager:
    """Run inference through the queue and wait for the answer.

    ``base_url`` pins every call to that LM Studio host (a configured host with that URL, or an
    ad-hoc one); otherwise calls go to a configured host that has the model. ``timeout`` is how
    long ``infer()`` waits before it cancels the job and raises ``InferenceTimeoutError``.
    """

    def __init__(
        self,
        verbose: bool = False,
        base_url: str | None = None,
        timeout: float = 300,
        max_retries: int = 3,
        *,
        config: Config | None = None,
        database_url: str | None = None,
    ) -> None:
        self.verbose = verbose
        self.timeout = timeout
        self.service = open_job_service(
            config,
            database_url=database_url,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
        )

    def close(self) -> None:
        self.service.close()

    def __enter__(self) -> InferenceManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(
        self,
        model_id: str,
        prompt: str,
        out_ctx: int | str = "auto",
        temperature: float = 0.7,
        top_p: float = 1.0,
        top_k: int = -1,
        max_tokens: int | None = None,
        system_prompt: str | None = None,
        context_data: dict[str, Any] | None = None,
        *,
        host: str | None = None,
        priority: int | None = None,
        start_worker: bool = True,
    ) -> SubmittedJob:
        """Queue an inference and return at once (``wait()`` gets its result)."""
        extra: dict[str, Any] = {} if priority is None else {"priority": priority}
        extra["start_worker"] = start_worker
        options = InferenceOptions(
            out_ctx, temperature, top_p, top_k, max_tokens, system_prompt, context_data
        )
        return self.service.submit_inference(model_id, prompt, options, host=host, **extra)

    def wait(self, job_id: str, timeout: float | None = None) -> InferenceResult:
        """The result of a submitted job, waiting for it up to ``timeout`` (default: the
        manager's); past it the job is cancelled and ``InferenceTimeoutError`` raised."""
        job = self.service.wait(job_id, self.timeout if timeout is None else timeout)
        self._calibrate(job)
        return InferenceResult.from_job(job)

    def _calibrate(self, job: JobView) -> None:
        # Real prompt token counts sharpen the next estimates for this model (pre-checks).
        req, res = job.request or {}, job.result or {}
        tokens = res.get("prompt_tokens")
        if job.status == "succeeded" and job.model and isinstance(tokens, int) and tokens > 0:
            chars = len(req.get("prompt") or "") + len(req.get("system_prompt") or "")
            self.service.context.observe(job.model, chars, tokens)

    def infer(
        self,
        model_id: str,
        prompt: str,
        out_ctx: int | str = "auto",
        temperature: float = 0.7,
        top_p: float = 1.0,
        top_k: int = -1,
        max_tokens: int | None = None,
        system_prompt: str | None = None,
        context_data: dict[str, Any] | None = None,
    ) -> InferenceResult:
        """Generate a completion; see the module docstring and python-api.md for the keys."""
        job = self.submit(
            model_id,
            prompt,
            out_ctx,
            temperature,
            top_p,
            top_k,
            max_tokens,
            system_prompt,
            context_data,
        )
        return self.wait(job.id)

    def infer_with_template(
        self,
        template_name: str,
        model_id: str,
        template_file: str | os.PathLike[str],
        variables: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> InferenceResult:
        """``infer()`` with the prompt ``template_name`` of a TOML prompt file, rendered with
        ``variables``; ``kwargs`` are ``infer()``'s options. A missing variable raises
        ``ValidationError`` naming it before anything is queued."""
        prompt = PromptLoader().render_template(template_file, template_name, variables)
        return self.infer(model_id, prompt, **kwargs)


class AsyncInferenceManager:
    """``await manager.infer(...)``: the same calls, many in flight at once.

    Submitting is a short database write done in a thread; waiting is pure asyncio (a Redis
    BLPOP on an asyncio connection, or a future completed by the embedded worker), so a thousand
    pending calls hold no threads.
    """

    def __init__(
        self,
        verbose: bool = False,
        base_url: str | None = None,
        timeout: float = 300,
        max_retries: int = 3,
        *,
        config: Config | None = None,
        database_url: str | None = None,
    ) -> None:
        self.sync = InferenceManager(
            verbose, base_url, timeout, max_retries, config=config, database_url=database_url
        )
        self.timeout = timeout
        self._aredis: Any = None

    async def aclose(self) -> None:
        if self._aredis is not None:
            await self._aredis.aclose()
        self.sync.close()

    async def infer(
        self,
        model_id: str,
        prompt: str,
        out_ctx: int | str = "auto",
        temperature: float = 0.7,
        top_p: float = 1.0,
        top_k: int = -1,
        max_tokens: int | None = None,
        system_prompt: str | None = None,
        context_data: dict[str, Any] | None = None,
    ) -> InferenceResult:
        model_id, prompt = await asyncio.to_thread(self._argument_order, model_id, prompt)
        job = await asyncio.to_thread(
            self.sync.submit,
            model_id,
            prompt,
            out_ctx,
            temperature,
            top_p,
            top_k,
            max_tokens,
            system_prompt,
            context_data,
        )
        return await self.wait(job.id)

    def _argument_order(self, model_id: str, prompt: str) -> tuple[str, str]:
        """The API doc's async example calls ``infer("Question 1", "model1")``: prompt first.
        When the first argument is no known model and the second one is, take them that way."""
        registry = self.sync.service.registry
        if not registry.has_model(model_id) and len(prompt) < 512 and registry.has_model(prompt):
            log.info("infer(%r, %r): taking the second argument as the model id", model_id, prompt)
            return prompt, model_id
        return model_id, prompt

    async def infer_with_template(
        self,
        template_name: str,
        model_id: str,
        template_file: str | os.PathLike[str],
        variables: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> InferenceResult:
        """The awaitable twin of :meth:`InferenceManager.infer_with_template`."""
        prompt = await asyncio.to_thread(
            PromptLoader().render_template, template_file, template_name, variables
        )
        return await self.infer(model_id, prompt, **kwargs)

    async def wait(self, job_id: str, timeout: float | None = None) -> InferenceResult:
        timeout = self.timeout if timeout is None else timeout
        service = self.sync.service
        started = time.monotonic()
        deadline = started + timeout
        slice_ = FIRST_SLICE
        waiter = self._local_waiter(job_id)
        try:
            while True:
                job = await asyncio.to_thread(service.store.get, job_id)
                if job.finished:
                    return InferenceResult.from_job(job)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    await asyncio.to_thread(service.store.cancel, job_id)
                    raise InferenceTimeoutError(
                        job_id, time.monotonic() - started, model_id=job.model
                    )
                notified = await self._wait_slice(job_id, waiter, min(slice_, remaining))
                slice_ = FIRST_SLICE if notified else min(slice_ * 2, MAX_SLICE)
        finally:
            if isinstance(service.notifier, LocalNotifier):
                service.notifier.forget(job_id)

    def _local_waiter(self, job_id: str) -> asyncio.Future[None] | None:
        notifier = self.sync.service.notifier
        if not isinstance(notifier, LocalNotifier):
            return None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not fut.done():
                fut.set_result(None)

        def done() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(settle)

        notifier.on_done(job_id, done)
        return fut

    async def _wait_slice(
        self, job_id: str, waiter: asyncio.Future[None] | None, seconds: float
    ) -> bool:
        if waiter is not None:
            try:
                await asyncio.wait_for(asyncio.shield(waiter), seconds)
                return True
            except TimeoutError:
                return False
        notifier = self.sync.service.notifier
        if isinstance(notifier, RedisNotifier):
            import redis.asyncio as aredis

            if self._aredis is None:
                self._aredis = aredis.Redis.from_url(notifier.url, socket_timeout=None)
            got = await self._aredis.blpop([DONE_KEY.format(job_id)], timeout=seconds)
            return got is not None
        await asyncio.sleep(seconds)
        return False
