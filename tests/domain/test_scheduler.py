"""The scheduling policy on its own: swap avoidance, starvation bound, run bound, priority."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lmstrix.domain.scheduler import (
    PRIORITY_BATCH,
    PRIORITY_INTERACTIVE,
    HostState,
    QueuedJob,
    SchedulerPolicy,
    choose_next,
    next_state,
)


def simulate(
    jobs: list[QueuedJob], policy: SchedulerPolicy, job_seconds: float = 0.005
) -> tuple[list[QueuedJob], int, float]:
    """Run every job through the policy; returns (order, swaps, longest wait)."""
    queue = list(jobs)
    host = HostState()
    now = 0.0
    order: list[QueuedJob] = []
    swaps = 0
    longest = 0.0
    while queue:
        job = choose_next(queue, host, now, policy)
        assert job is not None
        if job.model != host.loaded_model:
            swaps += 1
        longest = max(longest, now - job.created_at)
        queue.remove(job)
        order.append(job)
        host = next_state(host, job)
        now += job_seconds
    return order, swaps, longest


def interleaved(n: int, models: str = "ABC", priority: int = PRIORITY_BATCH) -> list[QueuedJob]:
    return [
        QueuedJob(id=f"{i:04d}", model=models[i % len(models)], created_at=0.0, priority=priority)
        for i in range(n)
    ]


def test_empty_queue() -> None:
    assert choose_next([], HostState(), 0.0) is None


def test_interleaved_300_jobs_load_three_times() -> None:
    order, swaps, longest = simulate(interleaved(300), SchedulerPolicy(max_wait=60, max_run=1000))
    assert swaps == 3  # FIFO would swap 300 times
    assert [j.model for j in order[:100]] == ["A"] * 100
    assert longest <= 60


def test_fifo_order_within_a_model() -> None:
    jobs = [QueuedJob(id=str(i), model="A", created_at=float(10 - i)) for i in range(5)]
    order, _, _ = simulate(jobs, SchedulerPolicy())
    assert [j.created_at for j in order] == sorted(j.created_at for j in jobs)


def test_prefers_the_loaded_model_over_an_older_job() -> None:
    jobs = [QueuedJob("old-b", "B", created_at=0.0), QueuedJob("new-a", "A", created_at=5.0)]
    choice = choose_next(jobs, HostState("A", 3), now=6.0, policy=SchedulerPolicy(max_wait=60))
    assert choice is not None and choice.id == "new-a"


def test_starving_job_of_another_model_goes_first() -> None:
    jobs = [QueuedJob("old-b", "B", created_at=0.0), QueuedJob("new-a", "A", created_at=5.0)]
    choice = choose_next(jobs, HostState("A", 3), now=61.0, policy=SchedulerPolicy(max_wait=60))
    assert choice is not None and choice.id == "old-b"


def test_loaded_models_starving_jobs_before_switching() -> None:
    jobs = [QueuedJob("b", "B", created_at=1.0), QueuedJob("a", "A", created_at=2.0)]
    choice = choose_next(jobs, HostState("A", 3), now=100.0, policy=SchedulerPolicy(max_wait=60))
    assert choice is not None and choice.id == "a"


def test_max_run_gives_other_models_a_turn() -> None:
    jobs = [QueuedJob("a", "A", created_at=0.0), QueuedJob("b", "B", created_at=1.0)]
    policy = SchedulerPolicy(max_wait=1e9, max_run=5)
    assert choose_next(jobs, HostState("A", 4), 2.0, policy).id == "a"  # type: ignore[union-attr]
    assert choose_next(jobs, HostState("A", 5), 2.0, policy).id == "b"  # type: ignore[union-attr]
    # but with nothing else queued the loaded model keeps going
    assert choose_next(jobs[:1], HostState("A", 50), 2.0, policy).id == "a"  # type: ignore[union-attr]


def test_interactive_before_batch_even_at_the_cost_of_a_swap() -> None:
    jobs = [
        QueuedJob("batch-a", "A", created_at=0.0, priority=PRIORITY_BATCH),
        QueuedJob("chat-b", "B", created_at=9.0, priority=PRIORITY_INTERACTIVE),
    ]
    choice = choose_next(jobs, HostState("A", 1), now=10.0)
    assert choice is not None and choice.id == "chat-b"


@settings(max_examples=200, deadline=None)
@given(
    models=st.lists(st.sampled_from("ABCDE"), min_size=1, max_size=120),
    max_wait=st.floats(min_value=0.05, max_value=5.0),
    max_run=st.integers(min_value=1, max_value=50),
)
def test_every_job_runs_once_and_fifo_within_a_model(
    models: list[str], max_wait: float, max_run: int
) -> None:
    jobs = [QueuedJob(f"{i}", m, created_at=i * 0.001) for i, m in enumerate(models)]
    policy = SchedulerPolicy(max_wait=max_wait, max_run=max_run)
    order, swaps, _ = simulate(jobs, policy, job_seconds=0.01)
    assert sorted(j.id for j in order) == sorted(j.id for j in jobs)
    assert swaps <= len(jobs)
    # within one model, jobs always run oldest first
    for model in set(models):
        mine = [j for j in order if j.model == model]
        assert [j.created_at for j in mine] == sorted(j.created_at for j in mine)
