"""The default, rule-based model behind the emulator: deterministic answers with exact token counts.

It lets tests (and the context tester) observe *model* behaviour without a real model: overflow,
truncation at ``max_tokens`` or at the context edge, and forgetting beyond a usable window.

Prompt: the chat messages rendered by :func:`lmstrix.testing.tokenizer.render_chat`. A prompt
longer than the instance's applied context raises :class:`ContextOverflow`.

Attention window: the model "sees" only the last ``W`` tokens of the rendered prompt, where
``W = min(model.effective_usable, applied_context)``. Everything earlier is forgotten. Two more
rules forget facts (the context tester's two populations):

- ``middle_limit`` (lost in the middle): in a prompt of more than that many tokens, a fact
  sentence starting between 25 % and 75 % of the prompt is forgotten;
- ``load_usable_limit`` (a "load-size" model): on an instance loaded above it, a prompt of more
  than half the applied context forgets every fact.

Reply rules, applied to the text of the **last user message** (first match wins):

1. Needle questions — ``What is the <subject>?`` (case-insensitive). With one such question in
   the message the model looks for a fact sentence ``The <subject> is <value>.`` (case-insensitive;
   words of the subject separated by any whitespace; ``<value>`` is any text without ``.``, ``!``,
   ``?`` or a newline, ended by a period) **entirely inside the attended window** (a fact cut by
   the window edge is forgotten). If found (the last one wins) it answers
   ``The <subject> is <value>.``; otherwise ``I don't know.``, which never contains the value.
   With several, it answers each in order, ``I don't know the <subject>.`` for a forgotten one.
   Use :func:`fact_sentence` and :func:`question` to build probes.
2. Arithmetic — ``<a> <op> <b>`` followed by ``=``, ``?`` or the end of the message, with integer
   or decimal operands and ``+ - * / x ×``: the answer is the bare result (``"2+3="`` -> ``"5"``).
3. Counting — ``count to <N>``: ``"1 2 3 ... N"`` (N tokens; handy to force long outputs).
4. Echo — ``say <text>`` / ``repeat <text>``: ``<text>`` verbatim.
5. Otherwise ``You said: <the first 32 tokens of the message>``; with no user message at all,
   ``Hello! How can I help you today?``.

Length: the reply is cut at the earliest ``stop`` string (finish ``"stop"``); then to at most
``max_tokens`` tokens (``None`` or negative: unlimited) and to the room left in the context
(``applied_context - prompt_tokens``); a cut gives finish ``"length"``.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from lmstrix.testing.backend import (
    BackendInstance,
    Completion,
    ContextOverflow,
    EmulatedModel,
    Message,
)
from lmstrix.testing.tokenizer import (
    count_tokens,
    message_text,
    render_chat,
    token_spans,
    truncate_tokens,
)

UNKNOWN_ANSWER = "I don't know."
GREETING_ANSWER = "Hello! How can I help you today?"
ECHO_TOKENS = 32
MAX_COUNT = 100_000

_QUESTION = re.compile(r"what\s+is\s+the\s+([^?\n]+?)\s*\?", re.IGNORECASE)
_ARITHMETIC = re.compile(
    r"(-?\d+(?:\.\d+)?)\s*([-+*/x×])\s*(-?\d+(?:\.\d+)?)\s*(?:=|\?|$)", re.IGNORECASE
)
_COUNT = re.compile(r"\bcount\s+(?:from\s+1\s+)?to\s+(\d+)", re.IGNORECASE)
_ECHO = re.compile(r"^\s*(?:say|repeat)\b[:\s]+(.+)$", re.IGNORECASE | re.DOTALL)


def fact_sentence(subject: str, value: str) -> str:
    """A fact the model can recall: ``The <subject> is <value>.``"""
    return f"The {subject} is {value}."


def question(subject: str) -> str:
    """The question that asks for a fact: ``What is the <subject>?``"""
    return f"What is the {subject}?"


def _fact_pattern(subject: str) -> re.Pattern[str]:
    words = r"\s+".join(re.escape(w) for w in subject.split())
    return re.compile(rf"\bThe\s+{words}\s+is\s+([^.!?\n]+?)\.", re.IGNORECASE)


def recall(visible_text: str, subject: str) -> str | None:
    """The value of the last fact about ``subject`` in ``visible_text``, if any."""
    found = None
    for match in _fact_pattern(subject).finditer(visible_text):
        found = match.group(1).strip()
    return found


def _arithmetic(text: str) -> str | None:
    matches = list(_ARITHMETIC.finditer(text))
    if not matches:
        return None
    try:
        match = matches[-1]
        a, b = Decimal(match.group(1)), Decimal(match.group(3))
        op = match.group(2).lower()
        if op == "+":
            result = a + b
        elif op == "-":
            result = a - b
        elif op in ("*", "x", "×"):
            result = a * b
        else:
            if b == 0:
                return "undefined"
            result = a / b
    except InvalidOperation:
        return None
    if result == result.to_integral_value():
        return str(int(result))
    return format(result.normalize(), "f")


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str | None:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message.get("content"))
    return None


def reply_for(messages: Sequence[Mapping[str, Any]], visible_text: str) -> str:
    """The full (untruncated) reply of the rules above, given what the model attends to."""
    text = _last_user_text(messages)
    if text is None:
        return GREETING_ANSWER
    questions = list(_QUESTION.finditer(text))
    if len(questions) == 1:
        subject = " ".join(questions[-1].group(1).split())
        value = recall(visible_text, subject)
        return fact_sentence(subject, value) if value is not None else UNKNOWN_ANSWER
    if questions:
        parts = []
        for match in questions:
            subject = " ".join(match.group(1).split())
            value = recall(visible_text, subject)
            parts.append(
                fact_sentence(subject, value)
                if value is not None
                else f"I don't know the {subject}."
            )
        return " ".join(parts)
    arithmetic = _arithmetic(text)
    if arithmetic is not None:
        return arithmetic
    count = _COUNT.search(text)
    if count:
        n = min(int(count.group(1)), MAX_COUNT)
        return " ".join(str(i) for i in range(1, n + 1))
    echo = _ECHO.match(text)
    if echo:
        return echo.group(1).strip()
    return f"You said: {truncate_tokens(text.strip(), ECHO_TOKENS)}"


_ANY_FACT = re.compile(r"\bThe\s+[^.!?\n]+?\s+is\s+[^.!?\n]+?\.", re.IGNORECASE)


def remembered_text(model: EmulatedModel, prompt: str, context: int) -> str:
    """What the model attends to in ``prompt`` on an instance loaded at ``context``: the
    window, less the facts the middle and load-size rules forget (blanked)."""
    spans = token_spans(prompt)
    tokens = len(spans)
    if (
        model.load_usable_limit is not None
        and context > model.load_usable_limit
        and 2 * tokens > context
    ):
        return _ANY_FACT.sub(" ", prompt)
    visible = attended_text(prompt, min(model.effective_usable, context))
    if model.middle_limit is None or tokens <= model.middle_limit:
        return visible
    starts = [s for s, _ in spans]
    offset = len(prompt) - len(visible)

    def forget(match: re.Match[str]) -> str:
        position = bisect.bisect_right(starts, match.start() + offset) / tokens
        return " " if 0.25 < position < 0.75 else match.group(0)

    return _ANY_FACT.sub(forget, visible)


def attended_text(prompt: str, window: int) -> str:
    """The suffix of ``prompt`` made of its last ``window`` tokens."""
    spans = token_spans(prompt)
    if len(spans) <= window:
        return prompt
    if window <= 0:
        return ""
    return prompt[spans[len(spans) - window][0] :]


class RuleInstance:
    """One loaded instance of the rule-based model. Stateless, hence thread-safe."""

    def __init__(self, model: EmulatedModel, context_length: int) -> None:
        self.model = model
        self._context = context_length

    @property
    def applied_context(self) -> int:
        return self._context

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        return count_tokens(render_chat(messages))

    def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Completion:
        prompt = render_chat(messages)
        prompt_tokens = count_tokens(prompt)
        if prompt_tokens > self._context:
            raise ContextOverflow(prompt_tokens, self._context)
        text = reply_for(messages, remembered_text(self.model, prompt, self._context))
        finish = "stop"
        for s in stop or ():
            if s and s in text:
                text = text[: text.index(s)]
        limit = self._context - prompt_tokens
        if max_tokens is not None and max_tokens >= 0:
            limit = min(limit, max_tokens)
        if count_tokens(text) > limit:
            text = truncate_tokens(text, limit)
            finish = "length"
        return Completion(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=count_tokens(text),
            finish_reason=finish,
        )

    def close(self) -> None:
        pass


class RuleBackend:
    """The default :class:`ModelBackend`: loads always succeed at the asked context.

    Memory limits (``loadable_limit``) and auto-fit are enforced by the emulator before it calls
    :meth:`load`, so this backend applies exactly what it is given.
    """

    def load(self, model: EmulatedModel, context_length: int) -> BackendInstance:
        return RuleInstance(model, context_length)

    def close(self) -> None:
        pass
