"""The pure slot rules: how many slots, who may join the running jobs, and which queued job the
scheduler lets join (property tests over random queues and running sets)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lmstrix.domain.scheduler import (
    PRIORITY_BATCH,
    PRIORITY_INTERACTIVE,
    HostState,
    QueuedJob,
    SchedulerPolicy,
    choose_next,
)
from lmstrix.domain.slots import SlotHost, SlotJob, admits, choose_joining, job_budget, slot_count

MODELS = ["a", "b", "c"]
caps = st.one_of(st.none(), st.integers(1, 16))


@given(st.one_of(st.none(), st.integers(-2, 16)), caps, caps)
def test_slot_count_is_the_report_capped_and_never_below_one(
    reported: int | None, host_cap: int | None, queue_cap: int | None
) -> None:
    n = slot_count(reported, host_cap, queue_cap)
    assert n >= 1
    assert n <= (reported if reported and reported >= 1 else 1)
    for cap in (host_cap, queue_cap):
        if cap is not None:
            assert n <= cap
    if host_cap == 1 or queue_cap == 1 or not reported or reported <= 1:
        assert n == 1  # strict serial, or a host that reports nothing


def test_slot_count_examples() -> None:
    assert slot_count(4, None, None) == 4
    assert slot_count(4, 2, None) == 2
    assert slot_count(None, 8) == 1


jobs = st.builds(
    SlotJob,
    model=st.sampled_from(MODELS),
    load_context=st.sampled_from([4096, 8192]),
    prompt_tokens=st.integers(0, 3000),
    max_tokens=st.one_of(st.none(), st.integers(0, 3000)),
    exclusive=st.booleans(),
)
hosts = st.builds(
    SlotHost,
    slots=st.integers(1, 8),
    context=st.one_of(st.none(), st.integers(256, 16384)),
    shared_cache=st.booleans(),
)


@given(st.lists(jobs, max_size=8), jobs, hosts)
def test_admission_keeps_every_rule(running: list[SlotJob], cand: SlotJob, host: SlotHost) -> None:
    ok = admits(running, cand, host)
    if not running:
        assert ok  # a job alone always runs
        return
    if not ok:
        return
    assert len(running) < host.slots
    assert not cand.exclusive and not any(j.exclusive for j in running)
    assert cand.model == running[0].model and cand.load_context == running[0].load_context
    if host.context is not None:
        if host.shared_cache:
            total = sum(job_budget(j, host) for j in [*running, cand])
            assert total <= host.context
        else:
            assert job_budget(cand, host) <= host.context // host.slots


@given(st.integers(2, 8), st.integers(1024, 16384), st.integers(0, 500), st.integers(1, 4000))
def test_shared_cache_admits_jobs_until_their_budgets_fill_the_context(
    slots: int, context: int, prompt: int, output: int
) -> None:
    host = SlotHost(slots, context, shared_cache=True)
    job = SlotJob("a", 4096, prompt, output)
    running = [job]
    while admits(running, job, host):
        running.append(job)
    budget = prompt + output
    expected = max(1, min(slots, context // budget))
    assert len(running) == expected


def test_split_context_bounds_each_job_by_its_slot() -> None:
    host = SlotHost(4, 8192, shared_cache=False)  # 2048 per slot
    small, big = SlotJob("a", 4096, 100, 1900), SlotJob("a", 4096, 100, 2000)
    assert admits([small, small, small], small, host)
    assert not admits([small], big, host)
    unbounded = SlotJob("a", 4096, 10, None)  # its output counts one slot's share
    assert job_budget(unbounded, host) == 10 + 2048
    assert not admits([small], unbounded, host)


queued_jobs = st.builds(
    QueuedJob,
    id=st.uuids().map(str),
    model=st.sampled_from(MODELS),
    created_at=st.floats(0, 1000),
    priority=st.sampled_from([PRIORITY_INTERACTIVE, PRIORITY_BATCH]),
)
states = st.builds(
    HostState,
    loaded_model=st.one_of(st.none(), st.sampled_from(MODELS)),
    run_length=st.integers(0, 20),
)
policies = st.builds(SchedulerPolicy, max_wait=st.floats(1, 500), max_run=st.integers(1, 20))


@given(st.lists(queued_jobs, max_size=12), states, st.floats(0, 2000), policies)
def test_joining_is_the_scheduler_s_choice_of_the_running_model_or_nothing(
    queued: list[QueuedJob], state: HostState, now: float, policy: SchedulerPolicy
) -> None:
    usual = choose_next(queued, state, now, policy)
    # nothing running: exactly the usual choice
    assert choose_joining(queued, state, now, policy, None) == usual
    for running in MODELS:
        joining = choose_joining(queued, state, now, policy, running)
        if joining is not None:
            assert joining == usual and joining.model == running
        else:
            # another model's turn (interactive first, a starving job, max_run), or nothing
            assert usual is None or usual.model != running


@given(st.lists(queued_jobs, min_size=1, max_size=12), st.floats(0, 2000), policies)
def test_an_interactive_job_of_another_model_stops_a_batch_from_filling_the_slots(
    queued: list[QueuedJob], now: float, policy: SchedulerPolicy
) -> None:
    state = HostState("a", 1)
    batch = [QueuedJob(f"b{i}", "a", now, PRIORITY_BATCH) for i in range(3)]
    urgent = QueuedJob("urgent", "b", now, PRIORITY_INTERACTIVE)
    assert choose_joining([*batch, urgent], state, now, policy, "a") is None
    assert choose_joining(batch, state, now, policy, "a") in batch


@given(st.integers(1, 20), st.floats(1, 500))
def test_max_wait_and_max_run_still_bound_another_model_s_wait(
    max_run: int, max_wait: float
) -> None:
    policy = SchedulerPolicy(max_wait=max_wait, max_run=max_run)
    mine = [QueuedJob(f"a{i}", "a", 100.0 + i) for i in range(3)]
    theirs = QueuedJob("b0", "b", 50.0)
    # the loaded model's run is long enough: the other model's turn, nothing more joins
    assert choose_joining([*mine, theirs], HostState("a", max_run), 60.0, policy, "a") is None
    # the other model's job waited max_wait: nothing more joins either
    starving_now = 50.0 + max_wait + 0.5
    assert choose_joining([*mine, theirs], HostState("a", 0), starving_now, policy, "a") is None
