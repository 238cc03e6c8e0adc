"""``ModelComparator``: the same prompt on several models, with speed and length side by side.

    comparator = ModelComparator(["llama-3.2-1b-instruct", "qwen/qwen3-4b"])
    for row in comparator.compare_models("Explain quantum computing"):
        print(row["model_id"], row["response_time"], row["tokens_per_second"])

All prompts are submitted first and then waited for, so models on different hosts run at the
same time, while models on one host run one after the other (that host's worker serializes them,
and each is loaded once). Timings come from the host (LM Studio's stats), so time spent queued or
loading the model does not count against a model's speed.

Every metric is a number: one a host did not report, or of a model that failed, is NaN (a float),
so ``f"{row['response_time']:.2f}"`` prints ``nan`` instead of raising; ``math.isnan`` tells
them apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from lmstrix.core.config import Config
from lmstrix.core.inference_manager import InferenceManager
from lmstrix.core.inference_result import InferenceResult
from lmstrix.domain.errors import LMStrixError, ValidationError
from lmstrix.jobs.service import SubmittedJob

DEFAULT_METRICS = ("response_time", "tokens_per_second", "response_length")
# metric -> what it measures
METRICS = {
    "response_time": "generation time in seconds (the host's, without queueing or loading)",
    "tokens_per_second": "response tokens per second of generation",
    "response_length": "characters in the response",
    "response_tokens": "tokens in the response",
    "prompt_tokens": "tokens in the prompt",
    "tokens_used": "prompt plus response tokens",
    "time_to_first_token": "seconds until the first token",
}


def metric_value(name: str, result: InferenceResult) -> float | int:
    """One metric of a result: NaN when the host did not report it or the call failed."""
    if not result["succeeded"]:
        return math.nan
    value: float | int | None
    if name == "response_time":
        value = result.inference_time
    elif name == "tokens_per_second":
        value = result.tokens_per_second
        if value is None and result.inference_time > 0:
            value = result.response_tokens / result.inference_time
    elif name == "response_length":
        value = len(result.response)
    elif name == "time_to_first_token":
        value = result.time_to_first_token
    else:
        value = int(result[name])
    return math.nan if value is None else value


def check_metrics(metrics: Iterable[str]) -> list[str]:
    if isinstance(metrics, str):
        metrics = [metrics]
    chosen = list(metrics)
    unknown = [m for m in chosen if m not in METRICS]
    if unknown or not chosen:
        raise ValidationError("metrics", chosen, f"choose from {', '.join(METRICS)} (at least one)")
    return list(dict.fromkeys(chosen))


class ModelComparator:
    """Runs one prompt on each of ``model_ids`` through the queue and reports metrics."""

    def __init__(
        self,
        model_ids: Sequence[str],
        *,
        config: Config | None = None,
        database_url: str | None = None,
        timeout: float = 300,
    ) -> None:
        if isinstance(model_ids, str):
            model_ids = [model_ids]
        ids = [m.strip() if isinstance(m, str) else m for m in model_ids]
        if not ids or not all(isinstance(m, str) and m for m in ids):
            raise ValidationError("model_ids", list(model_ids), "must be non-empty model ids")
        duplicates = sorted({m for m in ids if ids.count(m) > 1})
        if duplicates:
            raise ValidationError("model_ids", ids, f"lists {', '.join(duplicates)} twice")
        self.model_ids: list[str] = ids
        self.manager = InferenceManager(timeout=timeout, config=config, database_url=database_url)

    def close(self) -> None:
        self.manager.close()

    def __enter__(self) -> ModelComparator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def compare_models(
        self,
        prompt: str,
        metrics: Iterable[str] = DEFAULT_METRICS,
        **options: Any,
    ) -> list[dict[str, Any]]:
        """One dict per model, in the order given: ``model_id``, each metric, ``response``,
        ``succeeded``, ``error`` (and ``job_id``, ``host``).

        ``options`` are ``infer()``'s (``max_tokens``, ``temperature``...). A model that fails,
        is unknown or whose host is down gets ``succeeded=False`` and ``error``; the others are
        still compared. Metrics a host did not report (or of a failed model) are NaN, so a
        format such as ``:.2f`` never raises.
        """
        chosen = check_metrics(metrics)
        if not isinstance(prompt, str) or not prompt:
            raise ValidationError("prompt", prompt, "must be a non-empty string")
        submitted: list[SubmittedJob | LMStrixError] = []
        try:
            for model_id in self.model_ids:
                try:
                    submitted.append(self.manager.submit(model_id, prompt, **options))
                except LMStrixError as exc:
                    submitted.append(exc)
            return [
                self._row(model_id, self._answer(model_id, job), chosen)
                for model_id, job in zip(self.model_ids, submitted, strict=True)
            ]
        except BaseException:  # Ctrl-C while waiting: nobody wants the other answers any more
            self._cancel(submitted)
            raise

    def _cancel(self, submitted: Sequence[SubmittedJob | LMStrixError]) -> None:
        """Cancel the queued or running jobs of an abandoned comparison (finished ones stay)."""
        for job in submitted:
            if isinstance(job, SubmittedJob):
                try:
                    self.manager.service.store.cancel(job.id)
                except LMStrixError:
                    continue

    def _answer(self, model_id: str, job: SubmittedJob | LMStrixError) -> InferenceResult:
        """The model's result; one that could not answer gets a failed result with its error
        (and the job behind it, when there was one), so its row is built like the others."""
        try:
            if isinstance(job, SubmittedJob):
                return self.manager.wait(job.id)
            error = job
        except LMStrixError as exc:
            error = exc
        job_id = error.details.get("job_id") or None
        return InferenceResult.failed(str(error), model_id, job_id=job_id)

    @staticmethod
    def _row(model_id: str, result: InferenceResult, metrics: list[str]) -> dict[str, Any]:
        row: dict[str, Any] = {"model_id": model_id}
        row.update({m: metric_value(m, result) for m in metrics})
        row.update(
            response=result.response,
            succeeded=result.succeeded,
            error=result.error,
            job_id=result["job_id"],
            host=result.model_info.get("host"),
        )
        return row


__all__ = ["DEFAULT_METRICS", "METRICS", "ModelComparator"]
