"""Needle prompts for use probes: does the model still read every part of an N-token prompt?

A use probe at context N sends a prompt of about N tokens (minus the answer's budget) with facts
("needles") at several depths, by default the start, the middle and the end, each with its own
value, and the questions about them at the very end. It passes when every needle is recalled,
and says which depths were not. Effective context is often far below the claimed one, and most
failures are mid-context, so a single fact at the start proves little. A model that no longer
attends to a part of a long prompt answers without that fact's value. (The original lmstrix
asked "2+3=" in a tiny prompt, so "works at N" only meant "allocates at N".)

The grammar is the emulator's needle grammar (``lmstrix.testing.rules``) and plain English, so the
same prompt probes the rule-based emulator and a real model:

- fact: ``The <subject> is <value>.``; the value is four digits; the start needle is the first
  sentence after a one-line instruction, the others sit at a sentence end at their depth;
- filler: simple sentences that never contain the words "the", "is" or "what", nor digits, so
  filler can never read as a fact, a question or an answer;
- questions: an instruction ("Answer with the code only.", or "codes" for several) and then
  ``What is the <subject>?`` for each needle, at the very end.

Why this shape (measured on SmolLM2-135M-Instruct, the real model the tests run, at temperature
0 with prompts sized by its own tokenizer): with the earlier probe (a word-and-digits value such
as ``kestrel-2904``, the question followed by "Answer with the value only.") it recalled 1 of 6
needles at 256 tokens and 1 of 6 at 1024. It copied the digits and garbled or replaced the word
("pelican-1924"), or began an essay on "a code of honor". Moving the instruction before the
question helped (2-4 of 5 up to 1024, 1 of 5 at 2048); a value of digits alone did most (with
the question last: 5 of 5 at 256, 512, 1024 and 2048, 4 of 5 at 3072, 5 of 5 at 4096; with the
question first: 0 of 4 at 3072). Natural sentences as filler and a system message changed
nothing measurable, so the filler keeps its vocabulary (which can never collide with the
needle grammar) and the probe stays one user message. A model that fails this probe fails at
reading the start of its context, not at spelling a made-up word.

A layout can be cut: ``layout_tokens`` places the needles for a prompt of that size and cuts it
shorter (needles placed beyond the cut are left out, the end needle stays at the end). The
prompts a context test sends to one loaded instance are cuts of that instance's layout, so they
share their text up to the shorter one's end and the server's prompt cache only processes what
it has not seen. This is what makes screens (shorter prompts on a larger instance) cheap.

Sizing uses a ``count_tokens(text) -> int`` function: the exact tokenizer when one exists (the
emulator's), else an estimate fitted to the server's ``usage.prompt_tokens`` (the context tester
uses :mod:`lmstrix.domain.probe_sizing`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from lmstrix.domain.context import TokenCalibration
from lmstrix.domain.errors import ValidationError

CountTokens = Callable[[str], int]


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_SUBJECT_ADJECTIVES = _words(
    "amber azure cobalt copper crimson emerald golden indigo ivory jade olive scarlet silver "
    "teal violet"
)
_SUBJECT_NOUNS = _words(
    "anchor beacon compass falcon harbor lantern lighthouse orchard quarry signal tower vault"
)
# Filler vocabulary: no "the", "is", "what" (see the module docstring), no digits, no "?"/"!".
_F_ADJECTIVES = _words(
    "quiet distant gentle narrow ancient bright silent shallow golden hidden northern "
    "wandering patient steady humble"
)
_F_NOUNS = _words(
    "rivers meadows harbors lanterns orchards valleys bridges gardens forests islands "
    "villages hills roads clouds fields"
)
_F_VERBS = _words("wander drift linger gather settle rest shimmer stretch glow turn rise fade bend")
_F_PREPOSITIONS = _words("past near beyond beside under across along toward behind among")

_INSTRUCTION = "Remember this fact, you will be asked about it at the end."
_INSTRUCTION_MANY = "Remember these facts, you will be asked about them at the end."
_FILLER_INTRO = "Some unrelated notes follow."
_ANSWER_HINT = "Answer with the code only."
_ANSWER_HINT_MANY = "Answer with the codes only."

#: Where a probe's needles sit by default, as a share of the filler: the start, the middle and
#: the end. Effective context is often far below the claimed one, and most failures are in the
#: middle of a long prompt, so one fact at the start proves little.
DEFAULT_DEPTHS: tuple[float, ...] = (0.0, 0.5, 1.0)


@dataclass(frozen=True, slots=True)
class Needle:
    """The fact to recall: ``subject`` names it, ``value`` is what a correct answer contains."""

    subject: str
    value: str

    @property
    def fact(self) -> str:
        """``The <subject> is <value>.``"""
        return f"The {self.subject} is {self.value}."

    @property
    def question(self) -> str:
        """``What is the <subject>?``"""
        return f"What is the {self.subject}?"


def make_needle(seed: int = 0) -> Needle:
    """A deterministic needle for ``seed``: e.g. ``The violet lantern code is 4729.``

    Four digits: a model cannot guess them (one chance in 9000), the filler never contains
    digits, and small models copy digits faithfully where they garble made-up words (see the
    module docstring), so a wrong answer means the fact was not read.
    """
    rng = random.Random(f"needle:{seed}")
    subject = f"{rng.choice(_SUBJECT_ADJECTIVES)} {rng.choice(_SUBJECT_NOUNS)} code"
    return Needle(subject, str(rng.randint(1000, 9999)))


def make_needles(seed: int = 0, count: int = 1) -> tuple[Needle, ...]:
    """``count`` needles for ``seed``, each with its own subject and value; the first is
    :func:`make_needle`'s, so a one-needle probe is the same as before depths existed."""
    needles = [make_needle(seed)]
    rng = random.Random(f"needles:{seed}")
    while len(needles) < count:
        subject = f"{rng.choice(_SUBJECT_ADJECTIVES)} {rng.choice(_SUBJECT_NOUNS)} code"
        value = str(rng.randint(1000, 9999))
        if all(subject != n.subject and value != n.value for n in needles):
            needles.append(Needle(subject, value))
    return tuple(needles)


def check_depths(depths: object) -> tuple[float, ...]:
    """``depths`` as a sorted tuple of distinct shares in ``[0, 1]``, or a ``ValidationError``."""
    if not isinstance(depths, (list, tuple)):
        raise ValidationError("depths", depths, "must be a list of numbers from 0 to 1")
    values = list(depths)
    if not values or len(values) > MAX_NEEDLES:
        raise ValidationError("depths", depths, f"must hold 1 to {MAX_NEEDLES} depths")
    out: list[float] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValidationError("depths", depths, "must be numbers from 0 (start) to 1 (end)")
        out.append(float(value))
    if len(set(out)) != len(out):
        raise ValidationError("depths", depths, "must not repeat a depth")
    return tuple(sorted(out))


#: The most needles one probe holds: each is a question the answer must get right.
MAX_NEEDLES = 8


def filler_words(seed: int = 0) -> Iterator[str]:
    """The infinite, deterministic filler stream for ``seed``, one word per item.

    Sentences look like ``Quiet rivers wander past distant meadows.``; the period is attached to
    the last word. Any prefix of the stream is the same whatever length is later taken, which is
    what makes prompts of different sizes share their start.
    """
    rng = random.Random(f"filler:{seed}")
    while True:
        sentence = [
            rng.choice(_F_ADJECTIVES),
            rng.choice(_F_NOUNS),
            rng.choice(_F_VERBS),
            rng.choice(_F_PREPOSITIONS),
            rng.choice(_F_ADJECTIVES),
            rng.choice(_F_NOUNS),
        ]
        if rng.random() < 0.4:
            sentence.insert(2, "often" if rng.random() < 0.5 else "slowly")
        sentence[0] = sentence[0].capitalize()
        sentence[-1] += "."
        yield from sentence


@dataclass(frozen=True, slots=True)
class NeedlePrompt:
    """One use-probe prompt: send ``text`` as the user message, then check the answer with
    :meth:`passed` (and :meth:`failed_depths` says which needles were not recalled)."""

    text: str
    needles: tuple[Needle, ...]
    depths: tuple[float, ...]
    target_tokens: int
    tokens: int  # count_tokens(text) for the counter the prompt was sized with
    filler_words: int
    question: str
    custom_question: bool = field(default=False)

    @property
    def needle(self) -> Needle:
        """The first needle (the one at the smallest depth)."""
        return self.needles[0]

    def messages(self) -> list[dict[str, str]]:
        """The chat messages of the probe (one user message)."""
        return [{"role": "user", "content": self.text}]

    def failed_depths(self, answer: str | None) -> tuple[float, ...]:
        """The depths whose needle ``answer`` does not recall (none for a custom question)."""
        if self.custom_question:
            return ()
        return tuple(
            d
            for d, n in zip(self.depths, self.needles, strict=True)
            if not answer_recalls(answer, n)
        )

    def passed(self, answer: str | None) -> bool:
        """Whether ``answer`` passes: it recalls every needle, or (custom question) is
        non-empty."""
        if self.custom_question:
            return bool(answer and answer.strip())
        return not self.failed_depths(answer)


def _normalise(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", text.lower())


def answer_recalls(answer: str | None, needle: Needle) -> bool:
    """True when ``answer`` contains the needle's value, ignoring case, spaces and punctuation.

    ``4729``, ``4,729`` and ``The ... code is 4729.`` all pass; ``I don't know.``, an empty
    answer or other digits do not. Loose on form, strict on content: the probe asks whether the
    model read the fact, not whether it follows formatting instructions.
    """
    if not answer:
        return False
    wanted = _normalise(needle.value)
    return bool(wanted) and wanted in _normalise(answer)


def _head(needles: tuple[Needle, ...], depths: tuple[float, ...]) -> str:
    instruction = _INSTRUCTION if len(needles) == 1 else _INSTRUCTION_MANY
    first = f" {needles[0].fact}" if depths and depths[0] == 0 else ""
    return f"{instruction}{first}\n\n{_FILLER_INTRO}\n\n"


def _tail(needles: tuple[Needle, ...], question: str | None) -> str:
    if question is not None:
        return f"\n\n{question}"
    hint = _ANSWER_HINT if len(needles) == 1 else _ANSWER_HINT_MANY
    return "\n\n" + " ".join([hint, *(n.question for n in needles)])


def _placed(
    k: int, frame: int, needles: tuple[Needle, ...], depths: tuple[float, ...]
) -> list[tuple[float, Needle, int]]:
    """Where each needle goes among ``k`` filler words of a layout of ``frame`` words: depth 0
    in the head (index -1), depth 1 after the last word, others at their share of ``frame``;
    a needle placed beyond a cut (``k < frame``) is left out."""
    out = []
    for depth, needle in zip(depths, needles, strict=True):
        if depth == 0:
            out.append((depth, needle, -1))
        elif depth == 1:
            out.append((depth, needle, k))
        elif (at := round(depth * frame)) < k:
            out.append((depth, needle, at))
    return out


def _body(words: list[str], k: int, placed: list[tuple[float, Needle, int]]) -> str:
    """``k`` filler words with each needle below the start at its index, moved back to the
    sentence end nearest before it."""
    taken = words[:k]
    inserts: dict[int, list[str]] = {}
    for _, needle, at in placed:
        if at < 0:
            continue
        while 0 < at <= k and not taken[at - 1].endswith("."):
            at -= 1
        inserts.setdefault(at, []).append(needle.fact)
    out: list[str] = []
    for i in range(k + 1):
        out.extend(inserts.get(i, ()))
        if i < k:
            out.append(taken[i])
    return " ".join(out)


def _fit_words(size: Callable[[int], int], target: int, base: int) -> int:
    """The most filler words whose prompt holds at most ``target`` tokens (``size(0) == base``
    fits). A few secant steps on the word count (token counts are close to additive in
    words), then bisection on the bracket."""
    # Invariant: size(good) <= target < size(bad) (bad None: not found yet). k = 0 fits.
    good, good_n, bad = 0, base, None
    per_word = max((size(64) - base) / 64, 1e-3)
    for step in range(64):
        if bad is not None and bad - good <= 1:
            break
        guess = good + max(1, int((target - good_n) / per_word))
        if bad is not None:
            guess = min(guess, bad - 1) if step < 6 else (good + bad) // 2
        n = size(guess)
        if n <= target:
            good, good_n = guess, n
        else:
            bad = guess
        per_word = max((n - base) / guess, 1e-3)
    while bad is None or bad - good > 1:  # only for counters that defy the estimate
        k = good * 2 + 1 if bad is None else (good + bad) // 2
        if size(k) <= target:
            good = k
        else:
            bad = k
    return good


def build_needle_prompt(
    target_tokens: int,
    count_tokens: CountTokens | None = None,
    *,
    seed: int = 0,
    needle: Needle | None = None,
    question: str | None = None,
    depths: tuple[float, ...] = (0.0,),
    layout_tokens: int | None = None,
) -> NeedlePrompt:
    """The largest needle prompt of at most ``target_tokens`` tokens by ``count_tokens``.

    One needle per depth in ``depths`` (shares of the filler: 0 is the start, 1 the end, just
    before the question), each with its own subject and value; the questions (in depth order)
    come last. ``count_tokens`` defaults to an uncalibrated :class:`TokenCalibration` estimate;
    pass the model's calibrated ``estimate`` (or an exact tokenizer) so a probe at N really
    holds about N tokens. The caller subtracts the answer's budget from the context size first.
    ``question`` replaces the questions and their answer hint (a user's custom probe prompt; any
    non-empty answer then passes). ``needle`` replaces the first needle. Deterministic for a
    given ``seed``.

    ``layout_tokens`` (at least ``target_tokens``) places the needles for a prompt of that size
    and cuts it to ``target_tokens``: the needles placed beyond the cut are left out (the end
    needle stays at the end). Cuts of one layout share their text up to the shorter one's end,
    so a server's prompt cache serves all but the rest (see ``context_search``'s screens).

    Sizing costs a handful of ``count_tokens`` calls, not one per word (a 256k-token prompt
    included).
    """
    if isinstance(target_tokens, bool) or not isinstance(target_tokens, int):
        raise ValidationError("target_tokens", target_tokens, "must be an integer")
    depths = check_depths(depths)
    count = count_tokens or TokenCalibration().estimate
    needles = make_needles(seed, len(depths))
    if needle is not None:
        needles = (needle, *needles[1:])
    custom = question is not None
    if custom and not (question or "").strip():
        raise ValidationError("question", question, "must not be empty")
    stream = filler_words(seed)
    words: list[str] = []

    def text_of(k: int, frame: int) -> str:
        while len(words) < max(k, frame):
            words.append(next(stream))
        placed = _placed(k, frame, needles, depths)
        held = tuple(n for _, n, _ in placed)
        return (
            _head(held, tuple(d for d, _, _ in placed))
            + _body(words, k, placed)
            + _tail(held, question)
        )

    frame: int | None = None
    if layout_tokens is not None and layout_tokens > target_tokens:
        full = build_needle_prompt(
            layout_tokens, count, seed=seed, needle=needle, question=question, depths=depths
        )
        frame = full.filler_words
    base = count(text_of(0, frame or 0))
    if target_tokens < base:
        raise ValidationError(
            "target_tokens", target_tokens, f"a needle prompt needs at least {base} tokens"
        )
    good = _fit_words(lambda k: count(text_of(k, frame or k)), target_tokens, base)
    if frame is not None:
        good = min(good, frame)
    layout = frame or good
    text = text_of(good, layout)
    placed = _placed(good, layout, needles, depths)
    held = tuple(n for _, n, _ in placed)
    asked = question if question is not None else " ".join(n.question for n in held)
    return NeedlePrompt(
        text=text,
        needles=held,
        depths=tuple(d for d, _, _ in placed),
        target_tokens=target_tokens,
        tokens=count(text),
        filler_words=good,
        question=asked,
        custom_question=custom,
    )


__all__ = [
    "DEFAULT_DEPTHS",
    "MAX_NEEDLES",
    "CountTokens",
    "Needle",
    "NeedlePrompt",
    "TokenCalibration",
    "answer_recalls",
    "build_needle_prompt",
    "check_depths",
    "filler_words",
    "make_needle",
    "make_needles",
]
