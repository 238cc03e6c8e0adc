"""``BatchProcessor``: many prompts through the queue at batch priority.

Two ways in:

- ``process_batch(prompts)`` blocks and returns one ``infer()``-shaped result per prompt, in
  input order. A prompt that fails (empty, too long, refused by the model) gets a result with
  ``succeeded=False`` and ``error``; the others are unaffected.
- ``submit_jsonl(file)`` takes an OpenAI Batch API input file and returns a batch id at once;
  ``batch_status``, ``batch_results`` and ``cancel_batch`` follow OpenAI's batch object and
  output lines, so existing tooling reads them.

Either way every request is a ``batch_item`` job row at batch priority: a host's worker serves
interactive ``infer()`` calls first and fits batch items in between, and a batch never makes a
host run two things at once. The ``batches`` row is kept in step with its items by reading
their job rows (see :mod:`lmstrix.jobs.batch_store`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from lmstrix.core.batch_requests import RequestPlanner
from lmstrix.core.config import Config
from lmstrix.core.context_loader import read_context_files
from lmstrix.core.inference_result import InferenceResult
from lmstrix.core.job_service import open_job_service
from lmstrix.domain.errors import (
    ContextLimitExceededError,
    InferenceTimeoutError,
    LMStrixError,
    LMStudioAuthError,
    LMStudioConnectionError,
    ModelNotFoundError,
    ValidationError,
)
from lmstrix.domain.openai_batch import (
    CHAT_URL,
    MAX_FILE_BYTES,
    BatchRecord,
    BatchValidationError,
    LineError,
    output_line,
    parse_lines,
)
from lmstrix.domain.requests import InferenceOptions
from lmstrix.jobs.batch_store import BatchNotFound, BatchStore, NewItem
from lmstrix.jobs.doorbell import BrokerUnavailableError
from lmstrix.jobs.store import JobView

# Faults of the host or its credentials: every later item would fail the same way (after its
# own connection retries), so the batch stops and the error is raised, as infer() raises it.
HOST_FAULTS = (LMStudioConnectionError, LMStudioAuthError)
FOREVER = 10.0**9

BatchInput = str | bytes | os.PathLike[str] | Iterable[str | bytes | Mapping[str, Any]]


def result_of(job: JobView) -> InferenceResult:
    """The result of a finished item; only host faults raise (they end the whole batch)."""
    try:
        return InferenceResult.from_job(job)
    except HOST_FAULTS:
        raise
    except LMStrixError:
        return InferenceResult.from_job(job, raise_faults=False)


def _batch_timeout(batch_id: str, waited: float, *, cancelled: bool) -> InferenceTimeoutError:
    exc = InferenceTimeoutError(None, waited)
    then = (
        "it was cancelled"
        if cancelled
        else f"it was not cancelled (`lmstrix batch cancel {batch_id}`)"
    )
    exc.message = (
        f"batch {batch_id} did not finish within {waited:.1f}s; {then}; "
        f"`lmstrix batch status {batch_id}` shows how far it got"
    )
    exc.args = (exc.message,)
    exc.details["batch_id"] = batch_id
    return exc


class BatchProcessor:
    """Runs batches of prompts for ``model_id`` through the queue.

    ``max_workers`` is how many hosts a batch may spread over (each host's worker runs one
    request at a time, so this is the real parallelism); ``batch_size`` is how many prompts of
    one ``process_batch`` call are queued at any moment, so a long call leaves room for other
    batches and a cancelled call leaves little to clean up. ``timeout`` (seconds, ``None``: no
    limit) bounds a whole ``process_batch`` call.
    """

    def __init__(
        self,
        model_id: str | None = None,
        max_workers: int = 3,
        batch_size: int = 10,
        *,
        config: Config | None = None,
        database_url: str | None = None,
        timeout: float | None = None,
    ) -> None:
        for name, value in (("max_workers", max_workers), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(name, value, "must be a positive integer")
        if timeout is not None and timeout <= 0:
            raise ValidationError("timeout", timeout, "must be positive, or None for no limit")
        self.model_id = model_id
        self.max_workers = max_workers
        self.batch_size = batch_size
        self.timeout = timeout
        self.service = open_job_service(config, database_url=database_url)
        self.batches = BatchStore(self.service.database_url, self.service.store)

    def close(self) -> None:
        self.service.close()

    def __enter__(self) -> BatchProcessor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- process_batch ------------------------------------------------------------------

    def process_batch(self, prompts: Iterable[str], **options: Any) -> list[InferenceResult]:
        """One result per prompt, in input order, with the keys of ``infer()``.

        ``options`` are ``infer()``'s (``max_tokens``, ``temperature``, ``system_prompt``...)
        and apply to every prompt. A bad option or an unknown model raises before anything is
        queued; a host that cannot be reached raises after the rest of the batch is cancelled.
        """
        model_id = self._model()
        if isinstance(prompts, str):
            raise ValidationError("prompts", prompts, "must be a list of prompts, not one string")
        items = list(prompts)
        if not items:
            return []
        # Options and the model are the same for every prompt: if they are wrong, say so once.
        opts = read_context_files(InferenceOptions.of(**options))
        RequestPlanner(self.service, self.max_workers).prepare(model_id, ".", "-", opts)
        planner = RequestPlanner(self.service, self.max_workers)
        results: list[InferenceResult | None] = [None] * len(items)
        ready: list[tuple[int, NewItem]] = []
        for i, prompt in enumerate(items):
            try:
                ready.append((i, planner.prepare(model_id, prompt, f"prompt-{i}", opts)))
            except (ValidationError, ContextLimitExceededError) as exc:
                results[i] = InferenceResult.failed(str(exc), model_id)
        if ready:
            batch_id, _ = self.batches.create(
                [],
                total=len(ready),
                model=model_id,
                metadata={"source": "BatchProcessor.process_batch"},
                max_attempts=self.service.settings.max_attempts,
            )
            self._run_window(batch_id, ready, results)
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    def _run_window(
        self,
        batch_id: str,
        ready: list[tuple[int, NewItem]],
        results: list[InferenceResult | None],
    ) -> None:
        """Keep ``batch_size`` items queued; wait for them in order, topping the window up."""
        started = time.monotonic()
        deadline = started + (self.timeout if self.timeout is not None else FOREVER)
        todo = deque(ready)
        pending: deque[tuple[int, str]] = deque()
        finished = False
        try:
            while todo or pending:
                while todo and len(pending) < self.batch_size:
                    index, item = todo.popleft()
                    pending.append((index, self._queue(batch_id, item)))
                index, job_id = pending.popleft()
                remaining = deadline - time.monotonic()
                try:
                    job = self.service.wait(job_id, max(remaining, 0.0), cancel_on_timeout=False)
                except InferenceTimeoutError:
                    waited = time.monotonic() - started
                    raise _batch_timeout(batch_id, waited, cancelled=True) from None
                results[index] = result_of(job)
            finished = True
        finally:
            if not finished:
                # The error on its way up matters more than a failure to clean up after it.
                with contextlib.suppress(LMStrixError):
                    self.batches.cancel(batch_id)
        self.batches.refresh(batch_id)

    def _queue(self, batch_id: str, item: NewItem) -> str:
        job_id = self.batches.add_item(batch_id, item, self.service.settings.max_attempts)
        self.service.ring(job_id, self.service.host_config(item.host))
        return job_id

    def _model(self) -> str:
        if not isinstance(self.model_id, str) or not self.model_id.strip():
            raise ValidationError(
                "model_id", self.model_id, "process_batch needs the processor's model_id"
            )
        return self.model_id.strip()

    # -- OpenAI batch files ---------------------------------------------------------------

    def submit_jsonl(
        self,
        path_or_lines: BatchInput,
        *,
        metadata: Mapping[str, str] | None = None,
        start_worker: bool = True,
        endpoint: str = CHAT_URL,
        source: str | None = None,
    ) -> str:
        """Validate an OpenAI Batch input file and queue all of it; returns the batch id.

        ``path_or_lines``: a path, or the file's lines (strings, bytes or parsed dicts); a
        string holding JSON (it starts with ``{`` or has a newline) is taken as the content.
        Nothing is queued unless every line is valid (``BatchValidationError`` lists the
        problems with their line numbers). A body without ``model`` uses ``model_id``.
        ``start_worker=False``: leave the work to ``lmstrix worker`` (embedded mode, a process
        about to exit). ``endpoint``: what every line runs, ``/v1/chat/completions`` or
        ``/v1/completions``. ``source``: the input's name in messages and in the batch object's
        ``input_file_id`` (default: the path, or what the input was).
        """
        named, lines = _read_input(path_or_lines)
        source = source or named
        parsed = parse_lines(lines, default_model=self.model_id, source=source, endpoint=endpoint)
        planner = RequestPlanner(self.service, self.max_workers)
        items: list[NewItem] = []
        errors: list[LineError] = []
        for bl in parsed:
            try:
                items.append(
                    planner.prepare(
                        bl.model,
                        bl.prompt,
                        bl.custom_id,
                        InferenceOptions(system_prompt=bl.system_prompt, **bl.params()),
                    )
                )
            except ModelNotFoundError as exc:
                errors.append(LineError(bl.line, "model_not_found", str(exc), "model"))
            except ContextLimitExceededError as exc:
                errors.append(LineError(bl.line, "context_length_exceeded", str(exc), "messages"))
            except ValidationError as exc:
                param = "messages" if exc.field == "prompt" else exc.field
                errors.append(
                    LineError(bl.line, "invalid_value", f"body.{param}: {exc.reason}", param)
                )
        if errors:
            raise BatchValidationError(source, errors)
        models = {it.model for it in items}
        batch_id, job_ids = self.batches.create(
            items,
            model=models.pop() if len(models) == 1 else None,
            metadata=dict(metadata) if metadata else None,
            input_file=source,
            max_attempts=self.service.settings.max_attempts,
            endpoint=endpoint,
        )
        self._ring_hosts(batch_id, items, job_ids, start_worker)
        return batch_id

    def _ring_hosts(
        self, batch_id: str, items: list[NewItem], job_ids: list[str], start_worker: bool
    ) -> None:
        first: dict[str, str] = {}
        for item, job_id in zip(items, job_ids, strict=True):
            first.setdefault(item.host, job_id)
        try:
            for host, job_id in first.items():
                self.service.ring(job_id, self.service.host_config(host), start_worker=start_worker)
        except BrokerUnavailableError as exc:
            self.batches.fail(batch_id, type(exc).__name__, str(exc))
            raise

    def batch_status(self, batch_id: str) -> dict[str, Any]:
        """The OpenAI batch object (status, ``request_counts``, Unix timestamps)."""
        return self.batches.refresh(batch_id).to_openai()

    def batch_results(self, batch_id: str) -> Iterator[dict[str, Any]]:
        """Output lines of the finished requests, in input order (an unknown id raises now)."""
        endpoint = self.batches.refresh(batch_id).endpoint
        return (output_line(item, endpoint) for item in self.batches.items(batch_id))

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """Cancel: queued requests at once, running ones at their next chunk."""
        return self.batches.cancel(batch_id).to_openai()

    def list_batches(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest batches (OpenAI batch objects), newest first."""
        return [b.to_openai() for b in self.batches.recent(limit)]

    def wait_batch(
        self,
        batch_id: str,
        timeout: float | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Block until the batch is finished; returns its batch object.

        Waits on each item's done-notification in run order (no polling of the batch), calling
        ``on_progress`` with the refreshed batch object after each. Past ``timeout`` it raises
        ``InferenceTimeoutError`` and leaves the batch alone.
        """
        started = time.monotonic()
        deadline = started + (timeout if timeout is not None else FOREVER)
        record = self.batches.refresh(batch_id)
        if on_progress is not None:
            on_progress(record.to_openai())
        while not record.finished:
            ids = self.batches.unfinished_job_ids(batch_id)
            if not ids:
                # All items ended since the last look; or, in a process_batch window, some are
                # still to be queued, and there is nothing to wait on.
                return self._progress(batch_id, record, on_progress).to_openai()
            for job_id in ids:
                remaining = deadline - time.monotonic()
                try:
                    self.service.wait(job_id, max(remaining, 0.0), cancel_on_timeout=False)
                except InferenceTimeoutError:
                    waited = time.monotonic() - started
                    raise _batch_timeout(batch_id, waited, cancelled=False) from None
                record = self._progress(batch_id, record, on_progress)
            record = self.batches.refresh(batch_id)
        return record.to_openai()

    def _progress(
        self,
        batch_id: str,
        before: BatchRecord,
        on_progress: Callable[[dict[str, Any]], None] | None,
    ) -> BatchRecord:
        record = self.batches.refresh(batch_id)
        changed = (record.status, record.completed, record.failed) != (
            before.status,
            before.completed,
            before.failed,
        )
        if on_progress is not None and changed:
            on_progress(record.to_openai())
        return record


def _read_input(data: BatchInput) -> tuple[str, Iterable[str | bytes | Mapping[str, Any]]]:
    """(a name for messages, the lines) of whatever ``submit_jsonl`` was given."""
    if isinstance(data, bytes):
        return "<bytes>", data.splitlines()
    if isinstance(data, str) and ("\n" in data or data.lstrip().startswith("{")):
        return "<string>", data.splitlines()
    if isinstance(data, str | os.PathLike):
        source = os.fspath(data)
        path = Path(source).expanduser()
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "no such file"
            raise ValidationError("path", source, what)
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ValidationError(
                "path", source, f"is {size} bytes; a batch file may have {MAX_FILE_BYTES}"
            )
        return source, path.read_bytes().splitlines()
    return "<lines>", data


__all__ = ["BatchNotFound", "BatchProcessor", "BatchValidationError"]
