"""Context tests as jobs over HTTP against the emulator, for the two populations of models the
search must get right (lmstrix.testing.rules): a "load-size" model that only uses what it is
loaded at when that is small enough, and a model that loses the middle of a long prompt before
its start. Also: a probe during which another client loads a model is flagged.

Every verdict is checked against what a job would get: the registry's tested size is one the
model was loaded at, filled, and answered right at.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers.configs import config_for

from lmstrix.core.context_tester import ContextTester, JobView
from lmstrix.core.models import ModelRegistry
from lmstrix.domain.probe_sizing import PromptBudget
from lmstrix.jobs.context_test import read_probes
from lmstrix.jobs.context_test.probe_rows import DISTURBED_NOTE
from lmstrix.testing import EmulatedModel, LMStudioEmulator
from lmstrix.testing.backend import BackendInstance, Completion, Message
from lmstrix.testing.rules import RuleBackend, RuleInstance

BUDGET = 32
Factory = Callable[..., LMStudioEmulator]


def granularity(size: int) -> int:
    return max(256, size // 100)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'lmstrix.db'}"


def make_tester(url: str, db_url: str) -> ContextTester:
    return ContextTester(
        config=config_for(("h1", url), lmstudio={"max_retries": 0}),
        database_url=db_url,
        output_tokens=BUDGET,
    )


def run_test(emu: LMStudioEmulator, db_url: str, key: str) -> tuple[dict[str, Any], str, JobView]:
    """A context test of ``key`` through the facade: its public result, job id and job row."""
    with make_tester(emu.url, db_url) as tester:
        result = tester.test_model_context(key)
        job_id = tester.last_job_id
        assert job_id is not None
        return result, job_id, tester.service.store.get(job_id)


def judged_at_own_size(db_url: str, job_id: str, size: int) -> bool:
    """Whether the job's rows hold a passing use probe at ``size`` on an instance loaded at
    exactly ``size`` (the row's applied context)."""
    return any(
        r.kind == "use" and r.size == size and r.applied_context == size and r.outcome == "ok"
        for r in read_probes(db_url, job_id)
    )


def test_load_size_model_is_judged_at_its_own_load(make_emulator: Factory, db_url: str) -> None:
    """Loads up to 24,576 but only uses 12,000 when loaded at that size: loaded higher, it still
    recalls prompts up to half the window, which a search probing on the big instance would take
    for a working size."""
    rope = EmulatedModel(
        key="acme/rope-7b",
        max_context_length=32768,
        loadable_limit=24576,
        load_usable_limit=12000,
    )
    emu = make_emulator([rope])
    result, job_id, job = run_test(emu, db_url, rope.key)
    assert result["test_successful"], result["error"]
    optimal = result["optimal_context"]
    assert 12000 - granularity(12000) <= optimal <= 12000
    assert judged_at_own_size(db_url, job_id, optimal)
    failure = result["failure_point"]
    assert failure is not None and optimal < failure <= optimal + granularity(optimal)
    assert job.result is not None and job.result["failed_depths"] == [0.0, 0.5, 1.0]
    # a screen on the instance at the loadable limit passed above the true limit: a hint only
    rows = read_probes(db_url, job_id)
    assert any(
        r.kind == "use" and r.outcome == "ok" and r.size > 12000 and r.applied_context == 24576
        for r in rows
    )
    model = ModelRegistry(db_url).get_model(rope.key)
    assert model.tested_context == optimal


def test_a_middle_depth_failure_is_reported(make_emulator: Factory, db_url: str) -> None:
    """Recalls the start and the end of any prompt it holds, but loses the middle of prompts
    longer than 9,000 tokens."""
    lost = EmulatedModel(key="acme/lost-3b", max_context_length=32768, middle_limit=9000)
    emu = make_emulator([lost])
    result, job_id, job = run_test(emu, db_url, lost.key)
    assert result["test_successful"], result["error"]
    optimal = result["optimal_context"]
    # a probe at N holds N less the answer's room and one or two sizing margins
    slack = BUDGET + 2 * PromptBudget(9000, BUDGET).margin
    assert 9000 - granularity(9000) <= optimal <= 9000 + slack
    assert judged_at_own_size(db_url, job_id, optimal)
    assert job.result is not None and job.result["failed_depths"] == [0.5]
    failed = [r for r in read_probes(db_url, job_id) if r.size == result["failure_point"]]
    assert any("not recalled at depth 0.5" in (r.error or "") for r in failed)
    assert all(r.prompt_tokens for r in read_probes(db_url, job_id) if r.kind == "use")


def test_custom_depths_and_a_single_needle(make_emulator: Factory, db_url: str) -> None:
    """With only a start needle the middle is never asked about: the model is good up to the
    cap."""
    lost = EmulatedModel(key="acme/lost-3b", max_context_length=16384, middle_limit=4000)
    emu = make_emulator([lost])
    with make_tester(emu.url, db_url) as tester:
        job = tester.service.submit_context_test(lost.key, output_tokens=BUDGET, depths=(0.0,))
        view = tester.watch(job.id)
        result = tester.result(view, 0.0)
    assert result["optimal_context"] == 16384


class _Intruder(RuleBackend):
    """Another client of the host: the first time the tested model answers a long prompt, it
    loads a model of its own on the host."""

    def __init__(self, tested: str, other: str) -> None:
        self.tested, self.other = tested, other
        self.emulator: LMStudioEmulator | None = None
        self.intruded = False

    def load(self, model: EmulatedModel, context_length: int) -> BackendInstance:
        backend = self

        class Instance(RuleInstance):
            def complete(self, messages: Sequence[Message], **kwargs: Any) -> Completion:
                if model.key == backend.tested and not backend.intruded:
                    backend.intruded = True
                    assert backend.emulator is not None
                    backend.emulator.load(backend.other, 4096)
                return super().complete(messages, **kwargs)

        return Instance(model, context_length)


def test_another_clients_model_flags_the_measurement(make_emulator: Factory, db_url: str) -> None:
    tested = EmulatedModel(key="acme/m-7b", max_context_length=16384)
    other = EmulatedModel(key="someone/else", max_context_length=8192)
    intruder = _Intruder(tested.key, other.key)
    emu = make_emulator([tested, other], backend=intruder)
    intruder.emulator = emu
    result, job_id, job = run_test(emu, db_url, tested.key)
    assert intruder.intruded
    assert result["test_successful"]
    assert job.result is not None and job.result["disturbed"] is True
    flagged = [r for r in read_probes(db_url, job_id) if DISTURBED_NOTE in (r.error or "")]
    assert flagged and all(r.kind == "use" for r in flagged)
    assert any(p["disturbed"] for p in job.result["test_points"])
