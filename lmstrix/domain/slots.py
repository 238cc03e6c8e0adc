"""Parallel slots: how many jobs of one loaded model a host's worker runs at once, and which
queued job may join the ones already running (pure: the runner asks, the store claims).

A loaded instance serves S requests at once (LM Studio 0.4: ``config.parallel`` of the loaded
instance, 4 by default; llama.cpp: ``total_slots`` of ``/props``). The worker uses up to S of
them, fewer where the configuration caps it (``max_parallel`` of the host, else of the queue;
1 is strict serial), and one slot where the host says nothing.

Who may join the running jobs:

- only a job of the same model at the same load size (a different one needs a load, and a load
  waits until the running jobs have ended: the swap never pulls a model from under them);
- never a context test, and nothing joins a running context test: it loads and unloads at will
  and measures the host alone;
- only within the context budget. Where the slots share one KV cache (LM Studio), the running
  jobs' prompt and output budgets together must fit the loaded context; where the context is
  split between the slots (llama.cpp: ``n_ctx / total_slots``), each job must fit its slot. A job
  whose output is unbounded counts one slot's share of the context for its output.

A job that arrives alone always runs (it may still overflow: that is its own answer to give).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lmstrix.domain.scheduler import HostState, QueuedJob, SchedulerPolicy, choose_next


def slot_count(reported: int | None, *caps: int | None) -> int:
    """The slots to use: what the host reports (1 when it says nothing), capped by every
    configured cap that is set."""
    slots = reported if reported is not None and reported >= 1 else 1
    for cap in caps:
        if cap is not None:
            slots = min(slots, max(cap, 1))
    return slots


@dataclass(frozen=True, slots=True)
class SlotJob:
    """What admission needs to know of a job: which load it needs, its token budget, and
    whether it wants the host to itself."""

    model: str
    load_context: int | None
    prompt_tokens: int
    max_tokens: int | None
    exclusive: bool = False


@dataclass(frozen=True, slots=True)
class SlotHost:
    """The loaded instance's slots: how many the worker uses, the context it was loaded at,
    and whether its slots share that context (one KV cache) or each get an equal part."""

    slots: int
    context: int | None
    shared_cache: bool = True

    @property
    def per_slot(self) -> int | None:
        """The context of one slot (split hosts), or the share one unbounded output counts."""
        return None if self.context is None else self.context // max(self.slots, 1)


def job_budget(job: SlotJob, host: SlotHost) -> int:
    """The tokens ``job`` may occupy: its prompt and its output limit (an unbounded output
    counts one slot's share of the context)."""
    output = job.max_tokens if job.max_tokens is not None and job.max_tokens >= 0 else None
    if output is None:
        output = host.per_slot or 0
    return job.prompt_tokens + output


def admits(running: Sequence[SlotJob], candidate: SlotJob, host: SlotHost) -> bool:
    """Whether ``candidate`` may start now, next to ``running`` (all on this host's loaded
    instance): see the module's rules."""
    if not running:
        return True
    if len(running) >= host.slots or candidate.exclusive or any(j.exclusive for j in running):
        return False
    first = running[0]
    if candidate.model != first.model or candidate.load_context != first.load_context:
        return False
    if host.context is None:
        return True
    need = job_budget(candidate, host)
    if not host.shared_cache:
        per_slot = host.per_slot
        return per_slot is None or need <= per_slot
    return sum(job_budget(j, host) for j in running) + need <= host.context


def choose_joining(
    queued: Sequence[QueuedJob],
    host: HostState,
    now: float,
    policy: SchedulerPolicy,
    running_model: str | None,
) -> QueuedJob | None:
    """The job to claim next while jobs of ``running_model`` run (None: nothing runs).

    The scheduler's usual choice (interactive before batch, ``max_wait`` and ``max_run``),
    taken only when it is of the running model: when it is another model's turn, nothing more
    joins, the running jobs end, and then that model is loaded."""
    choice = choose_next(queued, host, now, policy)
    if choice is None or running_model is None or choice.model == running_model:
        return choice
    return None
