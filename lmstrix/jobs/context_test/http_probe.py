"""The search's two probes over one host's HTTP client: load at N, and ask the needle questions
with the context filled to N (or, for a screen, to less, cut from the same layout).

Why a class with state: a use probe runs on the instance the last load created (LM Studio may
have several), and each use probe's real token count improves the sizing of the next one.

A probe is only a clean measurement if nothing else runs on the host meanwhile. lmstrix itself
runs nothing else there (a context test is a job of the host's one worker, and the claim keeps
the host to itself while a test runs); other clients of the host are not lmstrix's to stop, so
after each answer the probe looks at what the host has loaded: any instance but its own means
another client was (or is) at work, and the probe says it may be disturbed.
"""

from __future__ import annotations

import time

from lmstrix.api.client import LMStudioClient
from lmstrix.domain.context_search import LoadOutcome, UseOutcome
from lmstrix.domain.context_test_request import DEFAULT_OUTPUT_TOKENS
from lmstrix.domain.errors import (
    ContextLimitExceededError,
    InferenceError,
    LMStrixError,
    LMStudioTimeoutError,
    ModelLoadError,
    ModelNotFoundError,
)
from lmstrix.domain.needle import DEFAULT_DEPTHS, build_needle_prompt
from lmstrix.domain.probe_sizing import SHARED_FITS, FitCache, PromptBudget, TokenFit
from lmstrix.domain.verdicts import Speed

#: Sends of one use probe at most. The first probe of a process starts from a default ratio
#: (one send to learn the model's, one to land within the margin, a third if the first
#: overflowed); later probes are sized from the fit and land on the first send.
MAX_SIZING_ATTEMPTS = 4


class HttpProbe:
    """The search's two probes over one host's client.

    ``load``: every instance of the model is unloaded (and every other model: one model per
    host), then the model is loaded at N and the applied size read back. ``use``: a needle prompt
    of about ``N - output_tokens`` tokens (less a small margin, see :mod:`.sizing`) on the
    instance of the last load, sized from the server's own ``usage.prompt_tokens``. What the
    counts teach is kept in ``fits`` (the process's shared cache unless given) for later tests
    of the same model on the same host.
    """

    def __init__(
        self,
        client: LMStudioClient,
        model: str,
        *,
        output_tokens: int = DEFAULT_OUTPUT_TOKENS,
        question: str | None = None,
        seed: int = 0,
        fits: FitCache | None = None,
        depths: tuple[float, ...] = DEFAULT_DEPTHS,
    ) -> None:
        self.client = client
        self.model = model
        self.output_tokens = output_tokens
        self.question = question
        self.seed = seed
        self.depths = depths
        self.fits = SHARED_FITS if fits is None else fits
        self.host = str(getattr(client, "base_url", ""))
        self.instance_id: str | None = None
        self.last_speed: Speed | None = None
        self.last_answer: str | None = None
        self.last_sends = 0

    @property
    def fit(self) -> TokenFit:
        """What this model's real token counts have taught so far."""
        return self.fits.get(self.host, self.model)

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
        except LMStudioTimeoutError as exc:  # it took the load and never finished it: too big
            return LoadOutcome(False, error=str(exc), seconds=_since(started))
        self.instance_id = loaded.instance_id
        seconds = loaded.load_time_seconds
        return LoadOutcome(
            True,
            applied=loaded.context_length,
            seconds=seconds if seconds is not None else _since(started),
        )

    def use(self, size: int, context: int) -> UseOutcome:
        """Ask the needle questions with the context filled to about ``size`` tokens, on the
        instance loaded at ``context``; below ``context`` (a screen) the prompt is a cut of the
        layout a full prompt at ``context`` has, so it shares that prompt's cache.

        Token counts are only known after the fact, so a prompt whose real count falls outside
        the budget (see :class:`~lmstrix.domain.probe_sizing.PromptBudget`) is re-sent,
        sized from the count it just got, up to ``MAX_SIZING_ATTEMPTS`` sends in all; so is one
        the server refused as too long, when it said how long. The answer of the last send is
        the probe's: whatever it says, it was said about a prompt of the size probed (an answer
        to a prompt far shorter than N proves nothing about N). Prompts are nested, so a re-send
        mostly hits the server's prompt cache.
        """
        self.last_speed = None
        self.last_answer = None
        self.last_sends = 0
        instance = self.instance_id or self.model
        budget = PromptBudget(size, self.output_tokens)
        layout = PromptBudget(context, self.output_tokens).target if context > size else None
        seconds = 0.0
        for attempt in range(1, MAX_SIZING_ATTEMPTS + 1):
            prompt = build_needle_prompt(
                budget.target,
                self.fit.estimate,
                seed=self.seed,
                question=self.question,
                depths=self.depths,
                layout_tokens=layout,
            )
            self.last_sends = attempt
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
            except LMStudioTimeoutError as exc:
                # No answer in time at this size (it may have frozen there): a failure, never
                # sent again. A host hung for good fails the next probe's readiness check.
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
                if not budget.accepts(tokens) and attempt < MAX_SIZING_ATTEMPTS:
                    continue
            self.last_answer = chat.content
            self.last_speed = Speed(chat.time_to_first_token, chat.tokens_per_second)
            return UseOutcome(
                prompt.passed(chat.content),
                prompt_tokens=tokens,
                answer=chat.content,
                seconds=seconds,
                failed_depths=prompt.failed_depths(chat.content),
                disturbed=self.others_loaded(),
            )
        raise AssertionError("unreachable")

    def others_loaded(self) -> bool:
        """Whether the host holds any instance but the one this probe loaded: another client
        loaded it, so it may have shared the machine (or the model's slots) with the probe.
        A host that cannot say is not taken as disturbed (its next probe checks it is up)."""
        try:
            instances = [i for m in self.client.list_models() for i in m.loaded_instances]
        except LMStrixError:
            return False
        return any(i.id != self.instance_id for i in instances)

    def _observe(self, text: str, tokens: int) -> None:
        self.fits.put(self.host, self.model, self.fit.observe(len(text), tokens))


def _since(started: float) -> float:
    return time.perf_counter() - started


__all__ = ["MAX_SIZING_ATTEMPTS", "HttpProbe"]
