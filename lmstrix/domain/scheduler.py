"""Which queued job a host's worker runs next: a pure policy, tested on its own.

A model swap costs seconds to minutes, so the worker prefers jobs for the model already loaded
(300 jobs over 3 models submitted A B C A B C load 3 times, not 300). Two bounds keep that from
starving anyone:

- ``max_wait``: a job of another model that has waited this long is served next (and the loaded
  model's own starving jobs before it, so overload degrades into batches, not into thrashing);
- ``max_run``: after this many jobs in a row on the loaded model, another model's jobs get a turn.

Above both sits priority: interactive calls (a person waiting on ``infer()``) go before batch
items even if that costs a swap. Otherwise: oldest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lmstrix.domain.enums import JobKind

PRIORITY_INTERACTIVE = 10
PRIORITY_CONTEXT_TEST = 5
PRIORITY_BATCH = 0


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """What the policy needs to know of a queued job."""

    id: str
    model: str
    created_at: float  # seconds (any epoch; only differences matter)
    priority: int = PRIORITY_INTERACTIVE


@dataclass(frozen=True, slots=True)
class HostState:
    """The host as the worker last left it."""

    loaded_model: str | None = None
    run_length: int = 0  # jobs run in a row on loaded_model


@dataclass(frozen=True, slots=True)
class SchedulerPolicy:
    max_wait: float = 300.0
    max_run: int = 100

    def __post_init__(self) -> None:
        if self.max_wait <= 0 or self.max_run < 1:
            raise ValueError("max_wait must be > 0 and max_run >= 1")


def may_start(priority: int, running_kinds: Sequence[str]) -> bool:
    """Whether a job of ``priority`` may start on a host where jobs of ``running_kinds`` run
    (live leases only). A context test holds its host: a probe measures the model alone, so
    nothing starts while one runs, and one starts only on a host where nothing runs. One worker
    per host already runs one job at a time; this also holds when a second worker serves the
    same host by mistake."""
    if JobKind.CONTEXT_TEST in running_kinds:
        return False
    return not (priority == PRIORITY_CONTEXT_TEST and running_kinds)


def _oldest(jobs: Sequence[QueuedJob]) -> QueuedJob:
    return min(jobs, key=lambda j: (j.created_at, j.id))


def choose_next(
    queued: Sequence[QueuedJob],
    host: HostState,
    now: float,
    policy: SchedulerPolicy = SchedulerPolicy(),
) -> QueuedJob | None:
    """The job to run next on this host, or ``None`` when nothing is queued."""
    if not queued:
        return None
    top = max(j.priority for j in queued)
    candidates = [j for j in queued if j.priority == top]
    loaded = host.loaded_model
    on_loaded = [j for j in candidates if j.model == loaded]
    others = [j for j in candidates if j.model != loaded]

    starving = [j for j in candidates if now - j.created_at >= policy.max_wait]
    if starving:
        starving_loaded = [j for j in starving if j.model == loaded]
        return _oldest(starving_loaded or starving)

    if on_loaded and others and host.run_length >= policy.max_run:
        return _oldest(others)
    if on_loaded:
        return _oldest(on_loaded)
    return _oldest(candidates)


def next_state(host: HostState, ran: QueuedJob) -> HostState:
    """The host state after running ``ran`` (a different model means a swap)."""
    if ran.model == host.loaded_model:
        return HostState(loaded_model=ran.model, run_length=host.run_length + 1)
    return HostState(loaded_model=ran.model, run_length=1)
