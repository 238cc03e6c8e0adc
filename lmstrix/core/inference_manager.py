"""``InferenceManager`` / ``AsyncInferenceManager``: ``infer()`` as a blocking (or awaitable) call
over the job queue.

Every call is a job row: it is validated, routed to a host, queued, run by that host's
worker (an in-process thread in embedded mode, a dramatiq process in distributed mode) and waited
for by notification. The caller sees a plain result with the keys of the public API, plus
``job_id``, so a slow call can be looked up later with ``lmstrix jobs show``.

``infer()`` owns its job: Ctrl-C (or a cancelled task) cancels it, and so does the caller's death
(its heartbeat stops), so an abandoned call never runs again. Jobs queued with ``submit()`` are
not tied to their caller. ``verbose=True`` logs each call (job, host, model, load, timings) at
INFO on the ``lmstrix`` loggers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Unpack

from lmstrix.core.config import Config
from lmstrix.core.context_loader import read_context_files
from lmstrix.core.inference_result import RESULT_KEYS, InferenceResult
from lmstrix.core.inference_stream import AsyncInferenceStream, InferenceStream
from lmstrix.core.job_service import open_job_service
from lmstrix.core.prompt_loader import PromptLoader
from lmstrix.domain.context_blocks import ContextData
from lmstrix.domain.payloads import InferenceJobResult
from lmstrix.domain.requests import ExtraSampling, InferenceOptions, inference_request
from lmstrix.jobs.follow import JobFollower
from lmstrix.jobs.service import SubmittedJob
from lmstrix.jobs.store import JobView
from lmstrix.jobs.wait import cancel_owned

log = logging.getLogger(__name__)


def _log_verbosely() -> None:
    """Let this module's INFO records out, with somewhere to go if nothing is configured (a bare
    script asking for ``verbose=True`` means to see them)."""
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    if not log.hasHandlers():
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        log.addHandler(handler)


def log_call(job: JobView, level: int) -> None:
    """One line about a finished call: job, host, model, the load and the timings."""
    if not log.isEnabledFor(level):
        return
    r = InferenceJobResult.from_row(job.result)
    info = r.model_info
    if info is not None and info.context_length:
        load = f"loaded as {info.instance_id} at {info.context_length} tokens"
        if info.reduced:
            load += f" (reduced from {info.requested_context_length})"
    else:
        load = "no load"
    queued = (job.started_at - job.created_at).total_seconds() if job.started_at else None
    tps = r.tokens_per_second
    log.log(
        level,
        "job %s on %s: %s %s; %s; queued %s, inference %.2fs, %s, %d+%d tokens",
        job.id,
        job.host,
        job.model,
        job.status,
        load,
        "never ran" if queued is None else f"{queued:.2f}s",
        r.inference_time,
        f"{tps:.1f} tok/s" if tps else "no tok/s",
        r.prompt_tokens,
        r.response_tokens,
    )


class InferenceManager:
    """Run inference through the queue and wait for the answer.

    ``base_url`` pins every call to that LM Studio host (a configured host with that URL, or an
    ad-hoc one); otherwise calls go to a configured host that has the model. ``timeout`` is how
    long ``infer()`` waits before it cancels the job and raises ``InferenceTimeoutError``.
    ``verbose`` logs every call at INFO (job id, host, model, the load, the timings).
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
        if verbose:
            _log_verbosely()
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
        context_data: ContextData | None = None,
        *,
        host: str | None = None,
        priority: int | None = None,
        start_worker: bool = True,
        waiter: bool = False,
        history: Sequence[Mapping[str, Any]] | None = None,
        **sampling: Unpack[ExtraSampling],
    ) -> SubmittedJob:
        """Queue an inference and return at once (``wait()`` gets its result).

        ``waiter=True``: the caller waits for it right away with ``wait(owned=True)``, and the
        job is cancelled if the caller goes away (``infer()`` and ``lmstrix infer`` do this).
        ``history``: earlier turns of a conversation (``{"role": ..., "content": ...}``), sent
        before the prompt."""
        extra: dict[str, Any] = {} if priority is None else {"priority": priority}
        extra["start_worker"] = start_worker
        options = InferenceOptions(
            out_ctx,
            temperature,
            top_p,
            top_k,
            max_tokens,
            system_prompt,
            context_data,
            history=None if history is None else tuple(dict(turn) for turn in history),
            **sampling,
        )
        options = read_context_files(options)
        return self.service.submit_inference(
            model_id, prompt, options, host=host, waiter=waiter, **extra
        )

    def wait(
        self, job_id: str, timeout: float | None = None, *, owned: bool = False
    ) -> InferenceResult:
        """The result of a submitted job, waiting for it up to ``timeout`` (default: the
        manager's); past it the job is cancelled and ``InferenceTimeoutError`` raised.

        ``owned=True`` (for a job submitted with ``waiter=True``): leaving the wait early, by
        Ctrl-C or any exception, cancels the job too."""
        job = self.service.wait(job_id, self.timeout if timeout is None else timeout, owned=owned)
        self._calibrate(job)
        return self.result_of(job)

    def result_of(self, job: JobView) -> InferenceResult:
        """The result of a finished job, logged first when the manager is verbose."""
        log_call(job, logging.INFO if self.verbose else logging.DEBUG)
        return InferenceResult.from_job(job)

    def _calibrate(self, job: JobView) -> None:
        # Real prompt token counts sharpen the next estimates for this model (pre-checks).
        if job.status != "succeeded" or not job.model or not job.request:
            return
        tokens = InferenceJobResult.from_row(job.result).prompt_tokens
        if tokens > 0:
            req = inference_request(**job.request)
            chars = len(req.prompt) + len(req.system_prompt or "")
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
        context_data: ContextData | None = None,
        **sampling: Unpack[ExtraSampling],
    ) -> InferenceResult:
        """Generate a completion; see the module docstring and ``RESULT_KEYS`` for the keys.

        Besides the documented options, ``repeat_penalty``, ``min_p``, ``stop`` (a string or a
        list of them) and ``seed`` may be given by keyword; each reaches the host only where its
        chat endpoint takes it (a warning names the ones left out).

        ``context_data`` (``{"document": text, "notes": Path("notes.md")}``) places named blocks
        of text before the prompt, each under a ``## name`` header (files are read now, with
        :class:`~lmstrix.loaders.context_loader.ContextLoader`); they count in the token budget.
        Values of the wrong type raise ``ValidationError`` naming the field before anything is
        queued.

        Ctrl-C (or any exception) while it waits cancels the job, and so does this process's
        death: a job whose caller is gone is never run again."""
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
            waiter=True,
            **sampling,
        )
        return self.wait(job.id, owned=True)

    def stream(
        self,
        model_id: str,
        prompt: str,
        out_ctx: int | str = "auto",
        temperature: float = 0.7,
        top_p: float = 1.0,
        top_k: int = -1,
        max_tokens: int | None = None,
        system_prompt: str | None = None,
        context_data: ContextData | None = None,
        *,
        host: str | None = None,
        **sampling: Unpack[ExtraSampling],
    ) -> InferenceStream:
        """``infer()``, with the answer's text pieces as they come::

            stream = manager.stream("qwen3-4b", "Tell me a story")
            for piece in stream:
                print(piece, end="", flush=True)
            print(stream.result["tokens_per_second"])

        The job is queued before this returns (``stream.job_id``); ``stream.result`` is set when
        the loop ends. Leaving the loop early (then closing or dropping the stream, or a ``with``
        block) cancels the job. Past the manager's ``timeout`` the job is cancelled and
        ``InferenceTimeoutError`` raised from the loop.
        """
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
            host=host,
            waiter=True,
            **sampling,
        )
        return InferenceStream(self.follow(job.id, owned=True), self._calibrate)

    def follow(
        self, job_id: str, *, timeout: float | None = None, owned: bool = False
    ) -> JobFollower:
        """A reader of a queued or running job's pieces from its start (``lmstrix jobs follow``);
        ``owned`` cancels the job when the reader stops early."""
        return self.service.follow(
            job_id, self.timeout if timeout is None else timeout, owned=owned
        )

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

    async def aclose(self) -> None:
        await self.sync.service.notifier.aclose()
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
        context_data: ContextData | None = None,
        *,
        history: Sequence[Mapping[str, Any]] | None = None,
        **sampling: Unpack[ExtraSampling],
    ) -> InferenceResult:
        """``InferenceManager.infer`` for asyncio; cancelling the task cancels the job.
        ``history``: earlier turns of a conversation, sent before the prompt."""
        if not self.sync.service.knows_model(model_id):
            model_id, prompt = await asyncio.to_thread(self._argument_order, model_id, prompt)
        job = await self.submit_owned(
            functools.partial(
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
                waiter=True,
                history=history,
                **sampling,
            )
        )
        return await self.wait(job.id, owned=True)

    def stream(
        self,
        model_id: str,
        prompt: str,
        out_ctx: int | str = "auto",
        temperature: float = 0.7,
        top_p: float = 1.0,
        top_k: int = -1,
        max_tokens: int | None = None,
        system_prompt: str | None = None,
        context_data: ContextData | None = None,
        *,
        host: str | None = None,
        history: Sequence[Mapping[str, Any]] | None = None,
        **sampling: Unpack[ExtraSampling],
    ) -> AsyncInferenceStream:
        """``async for piece in manager.stream(...)``: the twin of
        :meth:`InferenceManager.stream`. ``stream = await manager.stream(...)`` queues the job
        at once (``stream.job_id``); otherwise the first piece asked for queues it.
        ``history``: earlier turns of a conversation, sent before the prompt."""

        return self.stream_submitted(
            functools.partial(
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
                host=host,
                waiter=True,
                history=history,
                **sampling,
            )
        )

    def stream_submitted(self, submit: Callable[[], SubmittedJob]) -> AsyncInferenceStream:
        """The stream of the job ``submit`` queues (with ``waiter=True``), run in a thread on
        the first piece asked for or on ``await``; the job is the stream's own."""

        async def start() -> JobFollower:
            job = await self.submit_owned(submit)
            return self.sync.follow(job.id, timeout=self.timeout, owned=True)

        return AsyncInferenceStream(start, self.sync._calibrate)

    async def submit_owned(self, submit: Callable[[], SubmittedJob]) -> SubmittedJob:
        """Run ``submit`` (which queues a job with ``waiter=True``) in a thread; a task
        cancelled meanwhile still cancels the job once the thread has queued it (the thread
        cannot be stopped, and its job would otherwise run for a caller that is gone until the
        waiter grace ran out)."""
        future = asyncio.ensure_future(asyncio.to_thread(submit))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(self._cancel_submitted)
            raise

    def _cancel_submitted(self, future: asyncio.Future[SubmittedJob]) -> None:
        if not future.cancelled() and future.exception() is None:
            cancel_owned(self.sync.service.store, future.result().id)

    def _argument_order(self, model_id: str, prompt: str) -> tuple[str, str]:
        """The API doc's async example calls ``infer("Question 1", "model1")``: prompt first.
        When the first argument is no known model and the second one is, take them that way."""
        if not (isinstance(model_id, str) and isinstance(prompt, str)):
            return model_id, prompt  # submit() names the bad one
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

    async def wait(
        self, job_id: str, timeout: float | None = None, *, owned: bool = False
    ) -> InferenceResult:
        """The awaitable twin of :meth:`InferenceManager.wait`."""
        timeout = self.timeout if timeout is None else timeout
        job = await self.sync.service.wait_async(job_id, timeout, owned=owned)
        return self.sync.result_of(job)


__all__ = [
    "RESULT_KEYS",
    "AsyncInferenceManager",
    "AsyncInferenceStream",
    "InferenceManager",
    "InferenceResult",
    "InferenceStream",
]
