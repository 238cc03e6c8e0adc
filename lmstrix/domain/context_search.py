"""The context-limit search: the largest context that both loads and is really used.

Pure logic over an abstract probe, no HTTP, no clock. The search is an explicit state machine
(``next_probe`` decides, ``record`` learns, ``result`` judges), driven by :class:`SearchLoop`::

    state = SearchState.start(config, known_good=..., known_bad=..., history=..., in_flight=...)
    loop = SearchLoop(probe, state, before=persist_in_flight, after=persist_outcome,
                      should_stop=cancel_requested)
    summary = loop.run()                           # loop.state: what was learnt, even on a raise

``next_probe`` is a function of the state only, so a caller can persist before every probe, and a
run that died can be resumed from its persisted rows: completed ones are replayed as facts, and a
probe still in flight counts as a failure at its size (the machine may have frozen there).

Two probes:

- **load** at N: unload every instance of the model, load it at N and read back the size LM
  Studio applied. A failed load is a failure at N. A *silent reduction* (applied A < N) is also a
  failure at N (N does not load), and A is a size that does load. Auto-fit usually reduces to the
  largest size that fits, so A is treated as a strong candidate: it is use-probed right away (the
  model is already loaded there) and then confirmed with one load just above it.
- **use** at N on the instance loaded at ``context``: a needle prompt of about N tokens (minus the
  answer budget; see :mod:`lmstrix.domain.needle`) with needles at several depths and the
  questions last; an answer that misses any needle, or an error, is a failure.

What a use probe proves depends on where it ran, because a model's recall can depend on the size
it is loaded at (rope-scaled models), not only on the prompt:

- at its own size (``context == N``: the instance every job of the model will run on, since the
  worker loads at the tested size) it is a **verdict** about N, pass or fail. Only such passes
  make a size good, so the reported size was always loaded at exactly that size and filled;
- below its instance's size (``N < context``) it is a **screen**. A failed screen proves
  ``context`` bad (a model that misses a needle in a shorter prompt misses it in a full one);
  any other reading is a *hint*: where the usable limit probably is, for models whose recall
  depends on the prompt alone. Hints only choose which sizes get verdicts next, and once a
  verdict contradicts a hint (a size works where a screen failed, or fails where one passed),
  every hint is ignored for the rest of the search.

Screens are cheap: the prompts sent to one instance are cuts of one layout (needles placed for
a prompt of the instance's size), so the server's prompt cache serves all but their new tokens.

A model is **load-dependent** (:attr:`SearchState.load_dependent`) once it recalled a needle in a
prompt at least as long as one in which it missed that needle on an instance loaded at another
size. A needle at the start or the end is in every prompt, one at depth d in between is in a
cut of an instance loaded at C when d * C < the cut's size; a model whose recall depends on the
prompt alone can never do that, so no screen on a prompt-rule model ever triggers what follows.
For a load-dependent model, what a screen on the instance at N shows is about N, so the
search bisects with **partial fills**: the instance at N gets a prompt filling
:attr:`SearchState.fill_share` of its window, the smallest share at which an instance of this
model was seen to miss a needle (the screens on the instance that failed at the loadable limit
measure it; before any screen missed, ``PRE_SCREEN_PERCENT``). A miss proves N bad (as any
failed screen). A pass is *provisional*: it steers the bisection and is never a verdict; the
largest one is confirmed by the full prompt on an instance loaded at exactly that size, and if
that fails, the size is bad, partial passes are no longer trusted for this model
(:attr:`SearchState.partial_trusted`) and the search bisects below with verdicts. When one
bisection step is left above a partial pass and its instance is still loaded, the pass is
confirmed right away: the rest of the prompt extends the cached one, whereas confirming it
after a failed last step costs a load and a whole prompt, and the pass is the answer whenever
that step fails (load-size population in simulation: 70.6 % -> 69.4 % of the plain search).

Why the measured share and not a fixed one: it is where this model's overloaded instance broke,
so it is the cheapest fill that has been seen to tell; a share chosen in advance is either
larger (paying for tokens that tell nothing more) or smaller (passing instances that then fail
in full). In simulation (``bench/context_search.py``, load-size population) the search costs
69.4 % of the plain search's time with the measured share, 74.0 % with a fixed 60 %, 81.2 %
without partial fills; a margin above the measured share (10 to 50 % of the rest of the window)
cost 75 to 86 % (against 72.6 % then, before the screens stepped down and partial passes were
confirmed before the last step) and protected nothing the confirmation does not.

What fools it, and what that costs: a model whose overloaded instances miss needles only deeper
into the window the closer their load is to its limit (say past 95 % of the window just above
the limit, past half of it from 1.5 times the limit on). Partial fills at the share the largest
instance broke at then pass on sizes above the limit, the bisection climbs too high, the
confirmation fails, and the bisection is redone below with full prompts. The result stays
sound (the reported size passed the full prompt at its own load, as always); in simulation
such a population costs 105.4 % of the plain search's time instead of 90.7 % without partial
fills.

Where the time goes on a load-dependent model: a prompt on the instance at N says something
about N only once it fills past the share at which overloaded instances miss (half the window in
the simulation), and the bisection needs about log2(range / granularity) such prompts, as many
steps as the plain search pays full prompts for; the verdict at the loadable limit and the final
full prompt come on top. A bisection told in advance that the model is load-dependent and where
it breaks (no screens, no verdict to find out) spends 68 % of the plain search's time there.

Strategy, chosen to minimise the expensive work (a full prompt at N processes ~N tokens, a load
costs time growing with N):

1. Load probes first: at the top of the range, then bisection between the largest size known to
   load and the smallest known to fail, until they are within the granularity. Loads are much
   cheaper than prompts at large N, and usable <= loadable, so this bounds everything.
2. A verdict at the loadable limit. Usually it passes and the search is over.
3. Every verdict at N starts with a **pre-screen** at ``PRE_SCREEN_PERCENT`` of N on the same
   instance: a failure there settles "N is bad" for a fraction of the prompt; a pass costs only
   the rest of the prompt, which extends the cached cut.
4. If the loadable limit fails, screens search the prompt size on the instance still loaded
   there, then verdicts check where they point: the smallest failure first (if it works at its
   own size, the screens were wrong about this model, one probe showed it, and the largest
   pass needs no verdict), then the largest pass. Until one passes, the screens step down from
   the smallest failure, doubling the step (the granularity, then twice that, ...): a prompt
   shorter than the one cached costs only its answer, while one longer costs its new tokens,
   so the search goes down on failures for free and bisects only the last step's width once
   something passed (a bisection from the middle of the range pays for climbing back from
   its first pass). In simulation this took the load-size population from 72.6 % to 70.6 %
   of the plain search's time (its screens from 4.1 % to 2.5 %); the prompt-rule population
   went from 47.6 % to 47.7 %.
5. Otherwise (no hints, or contradicted ones): a load-dependent model is bisected with partial
   fills and its largest partial pass confirmed by a verdict; any other model (and one whose
   partial passes misled) with verdicts, between the largest good and the smallest bad size.

Bisection is arithmetic. Geometric splits look attractive for ranges spanning orders of
magnitude, but with a granularity relative to the good size and real limits that sit within a
few times of the declared one (and usable within a few times of loadable), arithmetic needed
fewer probes in simulation, both on average and in the worst case. Probe sizes are aligned down
to ``align`` when that keeps them strictly inside the bracket (round numbers in the registry,
no measurable cost).

Bounds: ``[min_context, min(declared, threshold)]``; the threshold is the safety cap that is never
exceeded. Nothing at or above a known failure (``known_bad``, an in-flight size, or any failed
probe of this run) is ever loaded or filled (screens run on the instance that just failed, with
shorter prompts); ``reset=True`` drops prior knowledge. The search stops when
the verified good size and the smallest failure are within the granularity (default: the larger
of 256 tokens and 1 % of the good size), when the top of the range works, when even the bottom
fails, or after ``max_iterations`` probes in this run. The reported size is always one whose use
probe passed at its own load in this test; a ``known_good`` the search would stop at is first
confirmed by one such probe (it is what every job will load at, and earlier versions measured it
on larger instances).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

from lmstrix.domain.errors import ValidationError

DEFAULT_THRESHOLD = 65536
DEFAULT_MIN_CONTEXT = 2048
DEFAULT_MAX_ITERATIONS = 60
DEFAULT_ALIGN = 256
MIN_GRANULARITY = 256
#: The share of its size an instance's first screen fills (see ``_use``).
PRE_SCREEN_PERCENT = 60


class ProbeKind(StrEnum):
    """What a probe does."""

    LOAD = "load"
    USE = "use"


class Outcome(StrEnum):
    """How a probe ended. Everything but ``OK`` is a failure at the probe's size."""

    OK = "ok"
    REDUCED = "reduced"  # load: LM Studio applied less than asked (the applied size loads)
    FAILED = "failed"  # load error, or use probe error (timeout, crash, overflow...)
    WRONG = "wrong"  # use probe answered without the fact
    INTERRUPTED = "interrupted"  # in flight when the run died


class StopReason(StrEnum):
    """Why the search ended."""

    CONVERGED = "converged"  # good and bad within the granularity
    AT_CAP = "at_cap"  # the top of the range works
    NO_WORKING_SIZE = "no_working_size"  # even the bottom of the range fails
    MAX_ITERATIONS = "max_iterations"  # probe budget spent before converging


@dataclass(frozen=True, slots=True)
class LoadOutcome:
    """What a load probe observed. ``applied`` None means "as requested"."""

    ok: bool
    applied: int | None = None
    error: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class UseOutcome:
    """What a use probe observed. ``ok`` False with ``error`` None is a wrong answer (the
    instance is still loaded); with ``error`` set the instance is presumed gone."""

    ok: bool
    prompt_tokens: int | None = None
    answer: str | None = None
    error: str | None = None
    seconds: float = 0.0
    failed_depths: tuple[float, ...] = ()
    disturbed: bool = False


ProbeOutcome = LoadOutcome | UseOutcome


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    """The next probe to run. For a use probe, ``context`` is the size the model is loaded at
    (>= ``size``); the caller fills the prompt to about ``size`` tokens."""

    kind: ProbeKind
    size: int
    context: int | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TestPoint:
    """One probe as recorded (and as persisted by the caller)."""

    __test__ = False  # not a pytest test class

    kind: ProbeKind
    size: int
    outcome: Outcome
    applied: int | None = None
    context: int | None = None
    prompt_tokens: int | None = None
    error: str | None = None
    seconds: float = 0.0
    reason: str = ""
    failed_depths: tuple[float, ...] = ()
    disturbed: bool = False

    @property
    def failed(self) -> bool:
        """True when this point is a failure (at ``bad_size``)."""
        return self.outcome is not Outcome.OK

    @property
    def screen(self) -> bool:
        """A use probe filled below the size its instance was loaded at: a cheap hint about
        the prompt size, never a verdict about ``size`` (see the module docstring)."""
        return (
            self.kind is ProbeKind.USE
            and self.context is not None
            and self.context > self.size
            and self.outcome is not Outcome.INTERRUPTED
        )

    @property
    def bad_size(self) -> int | None:
        """The size this point proves unusable, if any: a failed screen proves its instance's
        size bad (a model loaded at C that fails a shorter prompt fails a full one too), every
        other failure its own size."""
        if not self.failed:
            return None
        if self.screen:
            assert self.context is not None
            return self.context
        return self.size

    @property
    def loadable(self) -> int | None:
        """The size this point proves loadable, if any."""
        if self.outcome is Outcome.OK:
            return self.size
        if self.outcome is Outcome.REDUCED and self.applied and self.applied > 0:
            return self.applied
        return None


def in_flight_point(request: ProbeRequest) -> TestPoint:
    """The row to persist *before* running ``request``: if the run dies, it stays interrupted
    and counts as a failure at that size on resume."""
    return TestPoint(
        request.kind,
        request.size,
        Outcome.INTERRUPTED,
        context=request.context,
        reason=request.reason,
    )


def _positive(field_name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(field_name, value, "must be a positive integer")
    return value


@dataclass(frozen=True, slots=True)
class SearchConfig:
    """The fixed parameters of one search.

    ``granularity`` None means the default rule ``max(256, 1 % of the good size)``: a relative
    precision, because 256 tokens matter at 4k and do not at 128k. ``max_iterations`` counts
    probes (load, use and screen) of this run. ``screen`` False skips the screens, pre-screens
    and partial fills included (every use probe then runs at its own load and fills it; see
    the module docstring).
    """

    declared: int
    threshold: int = DEFAULT_THRESHOLD
    min_context: int = DEFAULT_MIN_CONTEXT
    granularity: int | None = None
    max_iterations: int = DEFAULT_MAX_ITERATIONS
    align: int = DEFAULT_ALIGN
    screen: bool = True

    def __post_init__(self) -> None:
        _positive("declared", self.declared)
        _positive("threshold", self.threshold)
        _positive("min_context", self.min_context)
        _positive("max_iterations", self.max_iterations)
        _positive("align", self.align)
        if self.granularity is not None:
            _positive("granularity", self.granularity)
        if self.threshold < self.min_context:
            raise ValidationError(
                "threshold",
                self.threshold,
                f"must be at least the minimum context size {self.min_context}",
            )

    @property
    def upper(self) -> int:
        """The largest size ever probed: ``min(declared, threshold)``."""
        return min(self.declared, self.threshold)

    @property
    def lower(self) -> int:
        """The smallest size ever probed: ``min_context`` (or the declared size when a model
        declares less, so such a model is tested at its declared size only)."""
        return min(self.min_context, self.upper)

    def granularity_at(self, good: int | None) -> int:
        """The stopping granularity when ``good`` is the verified good size."""
        if self.granularity is not None:
            return self.granularity
        base = good if good is not None and good > 0 else self.lower
        return max(MIN_GRANULARITY, base // 100)


@dataclass(frozen=True, slots=True)
class SearchState:
    """Everything the search knows. Immutable: ``record`` returns a new state.

    ``prior`` holds facts from earlier runs (replayed history and in-flight sizes); ``points``
    the probes of this run. ``loaded`` is the size the model is loaded at as far as this run
    knows (None at start: after a resume nothing is assumed about the host).
    """

    config: SearchConfig
    known_good: int | None = None
    known_bad: int | None = None
    prior: tuple[TestPoint, ...] = ()
    points: tuple[TestPoint, ...] = ()
    loaded: int | None = None
    iterations: int = 0

    @classmethod
    def start(
        cls,
        config: SearchConfig,
        *,
        known_good: int | None = None,
        known_bad: int | None = None,
        history: Iterable[TestPoint] = (),
        in_flight: Iterable[int | ProbeRequest | TestPoint] = (),
        reset: bool = False,
    ) -> SearchState:
        """A fresh state, narrowed by what earlier runs learnt.

        ``known_good`` / ``known_bad``: the registry's last known good (a verified use) and bad
        sizes. ``history``: completed probe rows of an earlier run (rows still marked
        interrupted count as failures). ``in_flight``: probes that were running when the last
        run died, each a failure at its size. ``reset=True`` ignores all of it.
        """
        if reset:
            return cls(config)
        for name, value in (("known_good", known_good), ("known_bad", known_bad)):
            if value is not None:
                _positive(name, value)
        prior = list(history)
        for item in in_flight:
            if isinstance(item, TestPoint):
                prior.append(replace(item, outcome=Outcome.INTERRUPTED))
            elif isinstance(item, ProbeRequest):
                prior.append(in_flight_point(item))
            else:
                prior.append(
                    TestPoint(ProbeKind.LOAD, _positive("in_flight", item), Outcome.INTERRUPTED)
                )
        return cls(config, known_good=known_good, known_bad=known_bad, prior=tuple(prior))

    # -- derived facts -----------------------------------------------------------------------

    @property
    def all_points(self) -> tuple[TestPoint, ...]:
        return self.prior + self.points

    @property
    def bound(self) -> int:
        """Exclusive upper bound of the candidates: the smallest known failure, or the cap + 1."""
        bad = self.config.upper + 1
        if self.known_bad is not None:
            bad = min(bad, self.known_bad)
        for point in self.all_points:
            size = point.bad_size
            if size is not None:
                bad = min(bad, size)
        return bad

    @property
    def use_good(self) -> int | None:
        """The largest size whose use probe passed on an instance loaded at that very size (or
        the known good), below the bound. Screens never count: they are hints."""
        bound = self.bound
        goods = [
            p.size
            for p in self.all_points
            if p.kind is ProbeKind.USE
            and p.outcome is Outcome.OK
            and not p.screen
            and p.size < bound
        ]
        if self.known_good is not None and self.known_good < bound:
            goods.append(self.known_good)
        return max(goods, default=None)

    @property
    def confirmed(self) -> bool:
        """Whether :attr:`use_good` passed a use probe at its own load in this test (this run,
        or an earlier attempt of the same job), rather than being only the registry's word."""
        good = self.use_good
        return good is not None and any(
            p.kind is ProbeKind.USE and p.outcome is Outcome.OK and not p.screen and p.size == good
            for p in self.all_points
        )

    @property
    def loadable(self) -> int | None:
        """The largest size known to load (a use pass implies a load), not capped by the bound:
        a value >= bound means every candidate loads."""
        sizes = [s for p in self.all_points if (s := p.loadable) is not None]
        good = self.use_good
        if good is not None:
            sizes.append(good)
        return max(sizes, default=None)

    @property
    def hints(self) -> tuple[int | None, int | None] | None:
        """What the screens say about the usable limit inside ``(use_good, bound)``: the largest
        prompt size that passed and the smallest that failed (either None when no screen says
        so). None once a probe at its own size contradicted a screen, or the model is
        :attr:`load_dependent` (its recall depends on the size it is loaded at, not only on the
        prompt): hints are then ignored."""
        screens = [p for p in self.all_points if p.screen]
        if not screens or self.load_dependent:
            return None
        uses = [p for p in self.all_points if p.kind is ProbeKind.USE]
        worked = max((p.size for p in uses if not p.failed and not p.screen), default=0)
        broke = min((b for p in uses if (b := p.bad_size) is not None), default=None)
        for s in screens:
            if s.failed and worked >= s.size:
                return None  # a size at least as long worked at its own load
            if not s.failed and broke is not None and broke <= s.size:
                return None  # a size at most as long failed at its own load
        good, bound = self.use_good, self.bound
        low = good if good is not None else self.config.lower - 1
        passed = max(
            (p.size for p in screens if not p.failed and low < p.size < bound), default=None
        )
        above = passed if passed is not None else low
        failed = min((p.size for p in screens if p.failed and above < p.size < bound), default=None)
        return passed, failed

    @property
    def load_dependent(self) -> bool:
        """Whether the model recalled a needle on one instance in a prompt at least as long as
        one in which it missed that needle on an instance loaded at another size: its recall
        then depends on the size it is loaded at, not on the prompt alone. (A needle at the start
        or the end is in every prompt; one at depth ``d`` in between is in a prompt of ``size``
        tokens cut from the layout of an instance loaded at ``C`` when ``d * C < size``.)"""
        uses = [p for p in self.all_points if p.kind is ProbeKind.USE]
        missed = {d for p in uses if p.outcome is Outcome.WRONG for d in p.failed_depths}
        # depth -> instance size -> the longest prompt on it that held the depth and passed
        longest: dict[float, dict[int, int]] = {}
        for p in uses:
            if p.outcome is Outcome.OK:
                context = p.context or p.size
                for depth in missed:
                    if depth >= 1 or depth * context < p.size:
                        by_context = longest.setdefault(depth, {})
                        by_context[context] = max(by_context.get(context, 0), p.size)
        return any(
            size >= miss.size
            for miss in uses
            if miss.outcome is Outcome.WRONG
            for depth in miss.failed_depths
            for context, size in longest.get(depth, {}).items()
            if context != (miss.context or miss.size)
        )

    @property
    def fill_share(self) -> tuple[int, int]:
        """The share of its window a partial fill fills, as ``(numerator, denominator)``: the
        smallest share of its window at which an instance missed a needle (a screen answered
        wrong), else ``PRE_SCREEN_PERCENT``."""
        share = (PRE_SCREEN_PERCENT, 100)
        for p in self.all_points:
            if (
                p.screen
                and p.outcome is Outcome.WRONG
                and p.context is not None
                and p.size * share[1] < share[0] * p.context
            ):
                share = (p.size, p.context)
        return share

    @property
    def partial_passes(self) -> tuple[int, ...]:
        """The sizes whose own instance recalled every needle of a screen filling at least
        :attr:`fill_share` of it (a partial fill or a pre-screen)."""
        numerator, denominator = self.fill_share
        return tuple(
            p.context
            for p in self.all_points
            if p.screen
            and p.outcome is Outcome.OK
            and p.context is not None
            and p.size >= p.context * numerator // denominator
        )

    @property
    def partial_trusted(self) -> bool:
        """Whether a partial pass stands for a full one: the model is :attr:`load_dependent`,
        and no full prompt failed at its own load on a size at or below one whose instance
        passed a partial fill (that model's partial passes mislead)."""
        if not self.config.screen or not self.load_dependent:
            return False
        full_failures = [
            p.size
            for p in self.all_points
            if p.kind is ProbeKind.USE
            and not p.screen
            and p.outcome in (Outcome.WRONG, Outcome.FAILED)
        ]
        return not full_failures or all(c < min(full_failures) for c in self.partial_passes)

    @property
    def provisional(self) -> int | None:
        """The largest size inside ``(use_good, bound)`` whose own instance passed a partial
        fill: where the usable limit probably is, never a verdict (it counts only once a full
        prompt passed at that load)."""
        good, bound = self.use_good, self.bound
        low = good if good is not None else 0
        return max((c for c in self.partial_passes if low < c < bound), default=None)

    @property
    def auto_fit(self) -> int | None:
        """The applied size of the latest silent reduction, if any."""
        for point in reversed(self.all_points):
            if point.outcome is Outcome.REDUCED and point.applied:
                return point.applied
        return None


@dataclass(frozen=True, slots=True)
class SearchResult:
    """The verdict. ``optimal`` is the largest size whose use probe passed (None: none did);
    ``failure_point`` the smallest size that failed above it (None: the cap was reached)."""

    optimal: int | None
    failure_point: int | None
    loadable: int | None
    stop_reason: StopReason
    lower: int
    upper: int
    granularity: int
    iterations: int
    load_probes: int
    use_probes: int
    seconds: float
    points: tuple[TestPoint, ...] = field(default=())

    @property
    def converged(self) -> bool:
        """True when the limit was found to within the granularity (or the cap works)."""
        return self.stop_reason in (StopReason.CONVERGED, StopReason.AT_CAP)


# -- the decision function ---------------------------------------------------------------------


def stop_reason(state: SearchState) -> StopReason | None:
    """Why the search is over, or None while it should go on."""
    config = state.config
    settled = _settled(state)
    if settled is not None and state.confirmed:
        return settled
    if state.bound <= config.lower:
        return StopReason.NO_WORKING_SIZE
    if state.iterations >= config.max_iterations:
        return StopReason.MAX_ITERATIONS
    return None


def _settled(state: SearchState) -> StopReason | None:
    """Why the search would be over if its good size needed no confirmation."""
    config = state.config
    bound, good = state.bound, state.use_good
    if good is not None:
        if good >= config.upper and bound > config.upper:
            return StopReason.AT_CAP
        if bound - good <= config.granularity_at(good):
            return StopReason.CONVERGED
    return None


def _halvings(width: int, granularity: int) -> int:
    """Bisection steps a bracket of ``width`` needs to come within ``granularity`` (each step
    leaves at worst the larger half, ``ceil(width / 2)``)."""
    steps = 0
    while width > granularity:
        width = (width + 1) // 2
        steps += 1
    return steps


def _split(config: SearchConfig, low: int | None, high: int) -> int:
    """A probe size strictly inside ``(low, high)``; with ``low`` None, inside ``[lower, high)``
    and the lower bound itself once the bracket is within the granularity."""
    base = config.lower if low is None else low
    granularity = config.granularity_at(base)
    if low is None and high - base <= granularity:
        return base
    mid = (base + high) // 2
    aligned = mid // config.align * config.align
    # A round size only when it is free: aligning moves the split down by up to ``align``, and
    # once the bracket is not much wider than that the upper part can be left nearly whole (a
    # wasted probe). Keep it only if that part needs no more halvings than the midpoint's, so
    # each phase still takes at most ceil(log2(range / granularity)) probes.
    if base < aligned < high and _halvings(high - aligned, granularity) <= _halvings(
        high - mid, granularity
    ):
        mid = aligned
    return min(max(mid, base + 1), high - 1)


def _use(state: SearchState, size: int, reason: str) -> ProbeRequest:
    """A use probe at ``size`` on an instance loaded at exactly ``size`` (the instance a job
    will run on), or the load it needs first. With screens on, the instance first gets a
    screen at ``PRE_SCREEN`` of its size: if that fails, the size is bad for a fraction of a
    full fill; if it passes, the full prompt extends the same layout, so the server's prompt
    cache only processes the rest."""
    if state.loaded != size:
        return ProbeRequest(ProbeKind.LOAD, size, reason=f"load for the use probe ({reason})")
    pre = size * PRE_SCREEN_PERCENT // 100
    if state.config.screen and pre >= state.config.lower and not _screened(state, size):
        return ProbeRequest(ProbeKind.USE, pre, context=size, reason=f"pre-screen ({reason})")
    return ProbeRequest(ProbeKind.USE, size, context=size, reason=reason)


def _screened(state: SearchState, context: int) -> bool:
    """Whether the instance loaded last (at ``context``) already had a screen."""
    for point in reversed(state.points):
        if point.kind is ProbeKind.LOAD:
            return False
        if point.screen and point.context == context:
            return True
    return False


def _partial(state: SearchState, size: int, reason: str) -> ProbeRequest:
    """A partial fill of the instance loaded at ``size`` (:attr:`SearchState.fill_share` of
    it, rounded up), or the load it needs first; a full verdict instead when that share is
    below the range or the whole window."""
    numerator, denominator = state.fill_share
    fill = -(-size * numerator // denominator)
    if fill < state.config.lower or fill >= size:
        return _use(state, size, reason)
    if state.loaded != size:
        return ProbeRequest(ProbeKind.LOAD, size, reason=f"load for a partial fill ({reason})")
    return ProbeRequest(ProbeKind.USE, fill, context=size, reason=f"partial fill ({reason})")


def _screen(state: SearchState) -> ProbeRequest | None:
    """A screen on the instance loaded at the smallest failure, while the screens' bracket is
    wider than the granularity; None when screening is off, over or contradicted."""
    config, loaded, bound = state.config, state.loaded, state.bound
    if not config.screen or loaded is None or loaded != bound:
        return None
    hints = state.hints
    if hints is None and any(p.screen for p in state.all_points):
        return None  # contradicted: this model's recall depends on its load size
    passed, failed = hints or (None, None)
    good = state.use_good
    low = (
        passed
        if passed is not None
        else good
        if good is not None and good >= config.lower
        else None
    )
    high = failed if failed is not None else bound
    base = config.lower if low is None else low
    if low is not None and high - base <= config.granularity_at(base):
        return None
    if low is None and high <= config.lower:
        return None
    if low is None and failed is not None and failed == config.lower:
        return None
    size = _split(config, low, high)
    if passed is None:
        # Nothing passed yet: step down from the failures on this instance, doubling the step.
        # Every such prompt is a cut of the one cached, so a failure costs only its answer; the
        # first pass then leaves a bracket as wide as the last step instead of half the range.
        top = max(
            (
                p.size
                for p in state.all_points
                if p.kind is ProbeKind.USE and p.failed and p.context == loaded
            ),
            default=high,
        )
        step = max(config.granularity_at(base), top - high)
        below = (high - step) // config.align * config.align
        if below > base:
            size = below
    if size >= loaded:
        return None
    return ProbeRequest(ProbeKind.USE, size, context=loaded, reason="screen on the loaded instance")


def next_probe(state: SearchState) -> ProbeRequest | None:
    """The next probe to run, or None when the search is over (see :func:`stop_reason`).

    Deterministic in the state, so a caller may persist the request, crash, and get the same
    request again after replaying the same facts.
    """
    if stop_reason(state) is not None:
        return None
    config = state.config
    lower, bound = config.lower, state.bound
    good = state.use_good
    if good is not None and _settled(state) is not None:
        # Only the registry's word so far: the size every job will load at is confirmed.
        return _use(state, good, "confirm the known good size")
    loadable = state.loadable
    in_range = loadable is not None and loadable >= lower
    untested = (
        in_range and loadable is not None and loadable < bound and (good is None or loadable > good)
    )

    # 1. Auto-fit applied a size: the model sits there, and it is most likely the limit.
    if untested and loadable == state.auto_fit:
        assert loadable is not None
        return _use(state, loadable, "use at the size auto-fit applied")

    # 2. Find the loadable limit with load probes.
    if not in_range or (
        loadable is not None
        and loadable < bound - 1
        and bound - loadable > config.granularity_at(loadable)
    ):
        low = loadable if in_range else None
        if bound == config.upper + 1:
            return ProbeRequest(ProbeKind.LOAD, config.upper, reason="load at the top of the range")
        if low is not None and low == state.auto_fit and low == good:
            # Auto-fit's size works: one load just above it confirms it was the limit.
            size = low + config.granularity_at(low)
            aligned = size // config.align * config.align
            size = aligned if low < aligned < bound else min(size, bound - 1)
            return ProbeRequest(ProbeKind.LOAD, size, reason="confirm the auto-fit limit")
        return ProbeRequest(
            ProbeKind.LOAD, _split(config, low, bound), reason="bisect the loadable limit"
        )

    # 3. A use probe at the loadable limit: usually it passes and the search is over.
    if untested:
        assert loadable is not None
        return _use(state, loadable, "use at the loadable limit")

    # 4. It failed: screen shorter prompts on the instance still loaded there (cheap, cached).
    screen = _screen(state)
    if screen is not None:
        return screen

    # 5. Sizes at their own load: where the screens point first, else bisection.
    low = good if good is not None and good >= lower else None
    hints = state.hints
    if hints is not None:
        passed, failed = hints
        if failed is not None:
            # The failure first: if it works at its own load, the screens were wrong about
            # this model (its recall depends on its load size), one probe showed it and the
            # largest pass needs no verdict; if it fails, it is the failure point either way.
            return _use(state, failed, "confirm where the screens failed")
        if passed is not None:
            return _use(state, passed, "confirm the largest prompt the screens passed")
    if state.partial_trusted:
        # Recall set by the load size: partial fills steer the bisection, the last one is
        # confirmed by a full prompt (if that fails, the size is bad and the search goes on).
        provisional = state.provisional
        if provisional is not None:
            granularity = config.granularity_at(provisional)
            if bound - provisional <= granularity:
                return _use(state, provisional, "confirm the largest partial pass")
            if state.loaded == provisional and _halvings(bound - provisional, granularity) <= 1:
                # One step left: the rest of this prompt extends the cached one now, while
                # confirming after a failed last step costs a load and a whole prompt.
                return _use(
                    state, provisional, "confirm the largest partial pass before the last step"
                )
            low = provisional
        return _partial(state, _split(config, low, bound), "bisect the usable limit")
    return _use(state, _split(config, low, bound), "bisect the usable limit")


def record(state: SearchState, request: ProbeRequest, outcome: ProbeOutcome) -> SearchState:
    """The state after ``request`` ended with ``outcome``."""
    loaded: int | None
    if request.kind is ProbeKind.LOAD:
        if not isinstance(outcome, LoadOutcome):
            raise TypeError(f"a load probe needs a LoadOutcome, got {type(outcome).__name__}")
        applied = outcome.applied if outcome.applied is not None else request.size
        if outcome.ok and applied >= request.size:
            result, loaded = Outcome.OK, applied
        elif outcome.ok and applied > 0:
            result, loaded = Outcome.REDUCED, applied
        else:
            result, loaded = Outcome.FAILED, None
        point = TestPoint(
            ProbeKind.LOAD,
            request.size,
            result,
            applied=outcome.applied if outcome.ok else None,
            error=outcome.error,
            seconds=outcome.seconds,
            reason=request.reason,
        )
    else:
        if not isinstance(outcome, UseOutcome):
            raise TypeError(f"a use probe needs a UseOutcome, got {type(outcome).__name__}")
        if outcome.ok:
            result, loaded = Outcome.OK, state.loaded
        elif outcome.error is None:
            result, loaded = Outcome.WRONG, state.loaded
        else:
            result, loaded = Outcome.FAILED, None
        point = TestPoint(
            ProbeKind.USE,
            request.size,
            result,
            context=request.context,
            prompt_tokens=outcome.prompt_tokens,
            error=outcome.error,
            seconds=outcome.seconds,
            reason=request.reason,
            failed_depths=outcome.failed_depths,
            disturbed=outcome.disturbed,
        )
    return replace(
        state, points=(*state.points, point), loaded=loaded, iterations=state.iterations + 1
    )


def result(state: SearchState) -> SearchResult:
    """The verdict for ``state`` (final once :func:`next_probe` returns None)."""
    config = state.config
    reason = stop_reason(state) or StopReason.MAX_ITERATIONS
    good, bound = state.use_good, state.bound
    return SearchResult(
        optimal=good,
        failure_point=bound if bound <= config.upper else None,
        loadable=state.loadable,
        stop_reason=reason,
        lower=config.lower,
        upper=config.upper,
        granularity=config.granularity_at(good),
        iterations=state.iterations,
        load_probes=sum(1 for p in state.points if p.kind is ProbeKind.LOAD),
        use_probes=sum(1 for p in state.points if p.kind is ProbeKind.USE),
        seconds=sum(p.seconds for p in state.points),
        points=state.points,
    )


# -- the loop ----------------------------------------------------------------------------------


class Probe(Protocol):
    """The two probes, implemented over HTTP by the context tester and simulated in tests."""

    def load(self, size: int) -> LoadOutcome:
        """Unload every instance of the model, load it at ``size``, report the applied size."""
        ...

    def use(self, size: int, context: int) -> UseOutcome:
        """Run a needle prompt of about ``size`` tokens on the instance loaded at ``context``."""
        ...


@dataclass(slots=True)
class SearchLoop:
    """Drives a search with ``probe`` from ``state`` to its end: the one loop over
    :func:`next_probe`, used by the context-test job, the tests and the benchmark alike.

    Why a loop object and not a function: the caller needs what was learnt when the loop ends
    early (``state`` is current after every probe, also when a probe or a hook raised) and
    whether it was stopped (``cancelled``).

    The order around each probe is what crash safety and resumption rely on:

    1. ``should_stop()`` is looked at once a probe is due (not after the last one); True ends the
       loop with ``cancelled`` set, no probe run.
    2. ``before(state, request)``: persist the probe as in flight (see :func:`in_flight_point`),
       so that if the run dies during it, the size counts as a failure on resume. If it raises,
       the probe does not run.
    3. The probe. If it raises, ``on_error(request, exc)`` runs and the exception propagates:
       the probe stays in flight (no outcome is recorded), ``state`` is the one before it.
    4. ``state`` becomes the recorded state; ``after(state, point)`` persists the outcome.

    Resuming is starting from a state built by :meth:`SearchState.start` from the persisted
    rows (its ``iterations`` may already count probes of an earlier attempt).
    """

    probe: Probe
    state: SearchState
    before: Callable[[SearchState, ProbeRequest], None] | None = None
    after: Callable[[SearchState, TestPoint], None] | None = None
    on_error: Callable[[ProbeRequest, Exception], None] | None = None
    should_stop: Callable[[], bool] | None = None
    cancelled: bool = False

    def run(self) -> SearchResult:
        """Probe until the search is over or stopped; the verdict on what is known then."""
        while (request := next_probe(self.state)) is not None:
            if self.should_stop is not None and self.should_stop():
                self.cancelled = True
                break
            if self.before is not None:
                self.before(self.state, request)
            try:
                outcome = self._probe(request)
            except Exception as exc:
                if self.on_error is not None:
                    self.on_error(request, exc)
                raise
            self.state = record(self.state, request, outcome)
            if self.after is not None:
                self.after(self.state, self.state.points[-1])
        return result(self.state)

    def _probe(self, request: ProbeRequest) -> ProbeOutcome:
        if request.kind is ProbeKind.LOAD:
            return self.probe.load(request.size)
        # A use probe always names the instance it runs on (see _use).
        assert request.context is not None
        return self.probe.use(request.size, request.context)


__all__ = [
    "DEFAULT_ALIGN",
    "DEFAULT_MAX_ITERATIONS",
    "DEFAULT_MIN_CONTEXT",
    "DEFAULT_THRESHOLD",
    "LoadOutcome",
    "Outcome",
    "Probe",
    "ProbeKind",
    "ProbeOutcome",
    "ProbeRequest",
    "SearchConfig",
    "SearchLoop",
    "SearchResult",
    "SearchState",
    "StopReason",
    "TestPoint",
    "UseOutcome",
    "in_flight_point",
    "next_probe",
    "record",
    "result",
    "stop_reason",
]
