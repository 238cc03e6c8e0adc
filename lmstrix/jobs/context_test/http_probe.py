"""The search's two probes over one host's HTTP client: load at N, and ask the needle question
with the context filled to N.

Why a class with state: a use probe runs on the instance the last load created (LM Studio may
have several), and each use probe's real token count improves the sizing of the next one.
"""

from __future__ import annotations

import time

from lmstrix.api.client import LMStudioClient
from lmstrix.api.exceptions import (
    ContextLimitExceededError,
    InferenceError,
    ModelLoadError,
    ModelNotFoundError,
)
from lmstrix.core.context import TokenCalibration
from lmstrix.core.context_search import LoadOutcome, UseOutcome
from lmstrix.core.needle import build_needle_prompt
from lmstrix.jobs.context_test.request import DEFAULT_OUTPUT_TOKENS
from lmstrix.jobs.context_test.verdicts import Speed

#: A use probe whose prompt came out this far from its target is re-sent with the calibration
#: it just improved (the first probe of a run starts from an uncalibrated estimate).
MAX_SIZING_ATTEMPTS = 3


class HttpProbe:
    """The search's two probes over one host's client.

    ``load``: every instance of the model is unloaded (and every other model: one model per
    host), then the model is loaded at N and the applied size read back. ``use``: a needle prompt
    of about ``N - output_tokens`` tokens on the instance of the last load; its size is learnt
    from the server's own ``usage.prompt_tokens`` (see :meth:`use`).
    """

    def __init__(
        self,
        client: LMStudioClient,
        model: str,
        *,
        output_tokens: int = DEFAULT_OUTPUT_TOKENS,
        question: str | None = None,
        seed: int = 0,
    ) -> None:
        self.client = client
        self.model = model
        self.output_tokens = output_tokens
        self.question = question
        self.seed = seed
        # Until the first real count: the shared default (pessimistic, so the first prompt
        # rather falls short than overflows).
        self.calibration = TokenCalibration(prior_weight=1)
        self.instance_id: str | None = None
        self.last_speed: Speed | None = None
        self.last_answer: str | None = None

    def ready(self) -> None:
        """Raise ``LMStudioConnectionError`` unless the host answers (a cheap model list)."""
        self.client.list_models()

    def load(self, size: int) -> LoadOutcome:
        started = time.perf_counter()
        self.instance_id = None
        try:
            loaded = self.client.load(self.model, size, reuse=False, unload_others=True)
        except ModelLoadError as exc:
            return LoadOutcome(False, error=exc.reason or str(exc), seconds=_since(started))
        self.instance_id = loaded.instance_id
        seconds = loaded.load_time_seconds
        return LoadOutcome(
            True,
            applied=loaded.context_length,
            seconds=seconds if seconds is not None else _since(started),
        )

    def use(self, size: int, context: int) -> UseOutcome:
        """Ask the needle question with the context filled to about ``size`` tokens.

        Token counts are only known after the fact, so the prompt is re-sent (at most
        ``MAX_SIZING_ATTEMPTS`` times in all) when its real size makes the answer
        inconclusive: a pass with a prompt clearly shorter than the target, or a failure with one
        clearly longer. A failure with a short prompt, or a pass with a long one, already
        decides the probe. Prompts are nested, so a re-send mostly hits the server's cache.
        """
        self.last_speed = None
        self.last_answer = None
        instance = self.instance_id or self.model
        target = size - self.output_tokens
        slack = max(16, target // 1000)
        seconds = 0.0
        tokens: int | None = None
        for attempt in range(1, MAX_SIZING_ATTEMPTS + 1):
            prompt = build_needle_prompt(
                target, self.calibration.estimate, seed=self.seed, question=self.question
            )
            started = time.perf_counter()
            try:
                chat = self.client.chat_completion(
                    instance,
                    prompt.messages(),
                    max_tokens=self.output_tokens,
                    temperature=0.0,
                )
            except ContextLimitExceededError as exc:
                seconds += _since(started)
                tokens = exc.prompt_tokens
                if tokens:
                    self._observe(prompt.text, tokens)
                    if attempt < MAX_SIZING_ATTEMPTS:
                        continue
                return UseOutcome(False, prompt_tokens=tokens, error=str(exc), seconds=seconds)
            except (InferenceError, ModelLoadError, ModelNotFoundError) as exc:
                # The instance crashed or vanished: a failure at this size, and it is gone.
                return UseOutcome(False, error=str(exc), seconds=seconds + _since(started))
            timed = chat.timing_source == "server" and chat.time_to_first_token is not None
            seconds += (
                (chat.time_to_first_token or 0.0) + (chat.generation_time or 0.0)
                if timed
                else chat.wall_time
            )
            tokens = chat.prompt_tokens
            if tokens:
                self._observe(prompt.text, tokens)
            passed = prompt.passed(chat.content)
            short = tokens is not None and tokens < target - slack
            long = tokens is not None and tokens > target + slack
            if attempt < MAX_SIZING_ATTEMPTS and ((passed and short) or (not passed and long)):
                continue
            self.last_answer = chat.content
            self.last_speed = Speed(chat.time_to_first_token, chat.tokens_per_second)
            return UseOutcome(passed, prompt_tokens=tokens, answer=chat.content, seconds=seconds)
        raise AssertionError("unreachable")

    def _observe(self, text: str, tokens: int) -> None:
        # The latest count alone: the next prompt is a longer or shorter cut of the same text,
        # so its ratio is the best predictor, and one odd observation cannot linger.
        self.calibration = TokenCalibration(prior_weight=1).observe(len(text), tokens)


def _since(started: float) -> float:
    return time.perf_counter() - started


__all__ = ["MAX_SIZING_ATTEMPTS", "HttpProbe"]
