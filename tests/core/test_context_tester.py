"""ContextTester end to end in embedded mode: context_test jobs run by a real worker (an in-process
thread, or a ``lmstrix worker`` process that gets killed), over HTTP against the emulator.

The emulator's rule model forgets a fact once it lies more than ``usable_limit`` prompt tokens
before the end of the prompt. A use probe at N holds ``N - output budget`` less one to two
sizing margins (``PromptBudget``), with the fact 17 tokens in, so it passes up to about
``usable + output budget + 17 + 2 margins``; these tests use a 32-token answer budget and allow
exactly that.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.configs import config_for
from helpers.waiting import wait_for

from lmstrix.api.exceptions import ModelNotFoundError, ValidationError
from lmstrix.core.context_tester import RESULT_KEYS, ContextTester
from lmstrix.core.inference_manager import InferenceManager
from lmstrix.core.models import ModelRegistry
from lmstrix.domain.probe_sizing import PromptBudget
from lmstrix.jobs.context_test import INTERRUPTED_ERROR, read_probes, read_progress
from lmstrix.testing import EMBEDDING_KEY, EmulatedModel, LMStudioEmulator

BUDGET = 32
DECLARED, LOADABLE, USABLE = 32768, 24576, 16384
MODEL = EmulatedModel(
    key="acme/m-7b",
    max_context_length=DECLARED,
    loadable_limit=LOADABLE,
    usable_limit=USABLE,
)
EMBEDDER = EmulatedModel(key=EMBEDDING_KEY, type="embedding", max_context_length=2048)
Factory = Callable[..., LMStudioEmulator]


def granularity(size: int) -> int:
    return max(256, size // 100)


def assert_near(optimal: int, usable: int) -> None:
    """Never above what the emulator's tolerance allows, within the granularity below."""
    slack = BUDGET + 17 + 2 * PromptBudget(usable, BUDGET).margin
    assert usable - granularity(usable) <= optimal <= usable + slack, optimal


def assert_confirmed_only(result: dict[str, Any], size: int) -> None:
    """A rerun of a converged test: one load at the known size, and its use probes there."""
    assert result["test_successful"] and result["optimal_context"] == size
    points = result["test_points"]
    assert [p["phase"] for p in points] == ["load", "use", "use"]
    assert points[0]["context_size"] == points[-1]["context_size"] == size
    assert all(p["outcome"] == "ok" for p in points)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'lmstrix.db'}"


def make_tester(url: str, db_url: str, **kwargs: object) -> ContextTester:
    return ContextTester(
        config=config_for(("h1", url), lmstudio={"max_retries": 0}),
        database_url=db_url,
        output_tokens=BUDGET,
        **kwargs,  # type: ignore[arg-type]
    )


def test_result_keys_registry_and_probe_rows(make_emulator: Factory, database_url: str) -> None:
    """usable < loadable < declared, on SQLite and PostgreSQL."""
    emu = make_emulator([MODEL, EMBEDDER])
    tester = make_tester(emu.url, database_url)
    result = tester.test_model_context(MODEL.key)
    assert tuple(result) == RESULT_KEYS
    assert result["test_successful"] is True and result["error"] is None
    assert result["model_id"] == MODEL.key
    assert_near(result["optimal_context"], USABLE)
    assert result["final_working_size"] == result["optimal_context"]
    bad = result["failure_point"]
    assert bad is not None and bad - result["optimal_context"] <= granularity(USABLE)
    assert result["total_time"] > 0

    job_id = tester.last_job_id
    assert job_id is not None
    rows = read_probes(database_url, job_id)
    assert result["iterations"] == len(rows) == len(result["test_points"])
    assert all(r.outcome != "in_flight" and r.finished_at is not None for r in rows)
    loads = [r for r in rows if r.kind == "load"]
    uses = [r for r in rows if r.kind == "use"]
    assert loads[0].size == DECLARED and loads[0].outcome == "failed"
    assert "insufficient" in (loads[0].error or "")
    assert max(r.size for r in loads if r.outcome == "ok") <= LOADABLE
    # every use probe really held its size, less the answer's room and a small margin
    assert uses and all(PromptBudget(r.size, BUDGET).accepts(r.prompt_tokens or 0) for r in uses)
    assert any(r.outcome == "failed" and "wrong answer" in (r.error or "") for r in uses)
    # the job's result knows the loadable limit, found by load probes before any use probe
    job = tester.service.store.get(job_id)
    assert job.status == "succeeded" and job.result is not None
    assert LOADABLE - granularity(LOADABLE) <= job.result["loadable_context"] <= LOADABLE
    assert job.result["use_probes"] == len(uses)
    progress = read_progress(database_url, job_id)
    assert progress is not None and progress["stop_reason"] == "converged"
    assert progress["iterations"] == len(rows)

    model = ModelRegistry(database_url).get_model(MODEL.key)
    assert model.test_status == "tested" and model.test_error is None
    assert model.tested_context == model.last_known_good_context == result["optimal_context"]
    assert model.last_known_bad_context == bad
    assert model.last_tested is not None
    assert model.time_to_first_token and model.tokens_per_second
    assert emu.counters.max_in_flight == 1
    tester.close()


def test_silent_reduction_is_used_and_confirmed(make_emulator: Factory, db_url: str) -> None:
    fitted = EmulatedModel(key="acme/fit", max_context_length=DECLARED, loadable_limit=20000)
    emu = make_emulator([fitted], auto_fit=True)
    tester = make_tester(emu.url, db_url)
    result = tester.test_model_context(fitted.key)
    assert result["test_successful"] and result["optimal_context"] == 20000
    assert result["failure_point"] is not None
    assert 20000 < result["failure_point"] <= 20000 + granularity(20000)
    rows = read_probes(db_url, tester.last_job_id or "")
    reduced = [r for r in rows if r.outcome == "reduced"]
    assert reduced and all(r.applied_context == 20000 for r in reduced)
    assert rows[0].size == DECLARED and rows[0].outcome == "reduced"
    # auto-fit's size was use-probed on the instance it left, then one load above confirmed it
    assert len(rows) <= 4


def test_load_failures_bound_the_search(make_emulator: Factory, db_url: str) -> None:
    heavy = EmulatedModel(key="acme/heavy", max_context_length=DECLARED, loadable_limit=12000)
    emu = make_emulator([heavy])
    tester = make_tester(emu.url, db_url)
    result = tester.test_model_context(heavy.key)
    assert result["test_successful"]
    # usable == loadable here: the answer is the largest size that loads
    assert 12000 - granularity(12000) <= result["optimal_context"] <= 12000
    failed_loads = [p for p in result["test_points"] if p["outcome"] == "failed"]
    assert failed_loads and all(p["phase"] == "load" for p in failed_loads)
    assert all(p["context_size"] > 12000 for p in failed_loads)


def test_custom_prompt_accepts_any_answer(make_emulator: Factory, db_url: str) -> None:
    emu = make_emulator([MODEL])
    tester = make_tester(emu.url, db_url)
    result = tester.test_model_context(MODEL.key, prompt="Reply with one word.")
    # any non-empty answer passes, so the limit found is the loadable one
    assert result["test_successful"]
    assert LOADABLE - granularity(LOADABLE) <= result["optimal_context"] <= LOADABLE


def test_threshold_caps_and_rerun_uses_known_sizes(make_emulator: Factory, db_url: str) -> None:
    emu = make_emulator([MODEL])
    tester = make_tester(emu.url, db_url)
    capped = tester.test_model_context(MODEL.key, threshold=8192)
    assert capped["optimal_context"] == 8192 and capped["failure_point"] is None
    assert max(p["context_size"] for p in capped["test_points"]) == 8192
    full = tester.test_model_context(MODEL.key)
    assert_near(full["optimal_context"], USABLE)
    # converged already: a rerun only confirms the size at its own load; reset tests again
    again = tester.test_model_context(MODEL.key)
    assert_confirmed_only(again, full["optimal_context"])
    emu.reset_counters()
    fresh = tester.test_model_context(MODEL.key, reset=True)
    assert fresh["iterations"] > 0 and emu.counters.load_count > 0
    assert_near(fresh["optimal_context"], USABLE)
    # the lower cap above did not lower what a higher one found
    model = ModelRegistry(db_url).get_model(MODEL.key)
    assert model.tested_context == fresh["optimal_context"]


def test_bad_input_is_refused_before_queueing(make_emulator: Factory, db_url: str) -> None:
    emu = make_emulator([MODEL, EMBEDDER])
    tester = make_tester(emu.url, db_url)
    with pytest.raises(ModelNotFoundError):
        tester.test_model_context("acme/no-such-model")
    with pytest.raises(ValidationError) as low:
        tester.test_model_context(MODEL.key, threshold=1000)
    assert low.value.field == "threshold"
    with pytest.raises(ValidationError) as emb:
        tester.test_model_context(EMBEDDING_KEY)
    assert "embedding" in str(emb.value)
    assert tester.service.store.list_jobs() == []
    assert emu.counters.load_count == 0


def test_min_context_searches_below_2048(make_emulator: Factory, db_url: str) -> None:
    """A small model that forgets before 2048 tokens: the default range only says so; a lower
    ``min_context`` finds its limit."""
    small = EmulatedModel(key="acme/small", max_context_length=8192, usable_limit=1000)
    emu = make_emulator([small])
    tester = make_tester(emu.url, db_url)
    default = tester.test_model_context(small.key)
    assert not default["test_successful"] and "2048 already fails" in default["error"]
    low = make_tester(emu.url, db_url, min_context=256)
    lowered = low.test_model_context(small.key, reset=True)
    assert lowered["test_successful"]
    assert_near(lowered["optimal_context"], 1000)
    assert min(p["context_size"] for p in lowered["test_points"]) >= 256
    # a single size needs no range: the tester's minimum does not get in its way
    single = low.result(low.watch(low.submit(small.key, ctx=512).id), 0.0)
    assert single["optimal_context"] == 512
    with pytest.raises(ValidationError) as err:
        make_tester(emu.url, db_url, min_context=128)
    assert err.value.field == "min_context" and ">= 256" in str(err.value)
    with pytest.raises(ValidationError) as err:
        tester.test_model_context(small.key, threshold=4096, min_context=8192)
    assert err.value.field == "min_context" and "threshold" in str(err.value)


def test_cancel_stops_between_probes(make_emulator: Factory, db_url: str) -> None:
    emu = make_emulator([MODEL], hang_loads_above=DECLARED - 1)  # the first probe blocks
    tester = make_tester(emu.url, db_url)
    job = tester.submit(MODEL.key)
    wait_for(lambda: emu.hanging == 1, what="the first load to hang")
    assert tester.cancel(job.id).status == "running"  # running: it stops before its next probe
    emu.configure(hang_loads_above=None)
    emu.release_hangs()
    view = tester.watch(job.id, timeout=30)
    assert view.status == "cancelled"
    result = tester.result(view, 0.0)
    assert result["test_successful"] is False and result["error"] == "cancelled"
    rows = read_probes(db_url, job.id)
    assert [(r.kind, r.size, r.outcome) for r in rows] == [("load", DECLARED, "failed")]
    assert emu.counters.inferences == 0
    model = ModelRegistry(db_url).get_model(MODEL.key)
    # what it learnt stays (the next run starts below it); nothing was verified
    assert model.test_status == "untested" and model.tested_context is None
    assert model.last_known_bad_context == DECLARED


def test_host_gone_mid_probe_then_resumed(make_emulator: Factory, db_url: str) -> None:
    emu = make_emulator([MODEL], hang_loads_above=DECLARED - 1)
    port = emu.port
    tester = make_tester(emu.url, db_url)
    job = tester.submit(MODEL.key)
    wait_for(lambda: emu.hanging == 1, what="the first load to hang")
    emu.stop()  # the host vanishes while loading (it froze, or LM Studio crashed)
    view = tester.watch(job.id, timeout=30)
    # it had the load request: a failure of the host, not something to send again
    assert view.status == "failed" and view.error_type == "LMStudioServerError"
    assert "closed before an answer" in (view.error_message or "")
    result = tester.result(view, 0.0)
    assert not result["test_successful"] and result["error"]
    rows = read_probes(db_url, job.id)
    # nothing was tried again against the dead host; the probe it died in stays in flight,
    # saying what stopped it, and counts as a failure at that size when the test resumes
    assert [(r.kind, r.size, r.outcome) for r in rows] == [("load", DECLARED, "in_flight")]
    assert "LMStudioServerError" in (rows[0].error or "")
    model = ModelRegistry(db_url).get_model(MODEL.key)
    assert model.test_status == "untested" and "test stopped" in (model.test_error or "")

    back = make_emulator([MODEL], port=port)  # LM Studio is back
    again = tester.test_model_context(MODEL.key)
    rows = read_probes(db_url, job.id)
    assert [(r.kind, r.size, r.outcome) for r in rows] == [("load", DECLARED, "failed")]
    assert INTERRUPTED_ERROR in (rows[0].error or "")
    assert again["test_successful"]
    assert_near(again["optimal_context"], USABLE)
    assert all(p["context_size"] < DECLARED for p in again["test_points"])
    assert all(rec.requested_context < DECLARED for rec in back.counters.loads)


def test_worker_killed_mid_probe_resumes_without_repeating_it(
    make_emulator: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = make_emulator([MODEL], hang_loads_above=DECLARED - 1)
    db = f"sqlite:///{tmp_path / 'kill.db'}"
    env = {
        "LMSTRIX_HOSTS": f"h1={emu.url}",
        "LMSTRIX_DATABASE_URL": db,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "LMSTRIX_QUEUE__LEASE_SECONDS": "1",
        "LMSTRIX_QUEUE__RETRY_DELAYS": "0.01,0.01",
        "LMSTRIX_LMSTUDIO__MAX_RETRIES": "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("LMSTRIX_CONFIG", raising=False)
    tester = ContextTester(output_tokens=BUDGET)
    job = tester.submit(MODEL.key, start_worker=False)
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "lmstrix.cli", "worker", "--host", "h1", "--once"],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: emu.hanging == 1, timeout=60, what="the worker's first load to hang")
        rows = read_probes(db, job.id)
        assert [(r.kind, r.size, r.outcome) for r in rows] == [("load", DECLARED, "in_flight")]
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        log.close()
    assert tester.service.store.get(job.id).status == "running"  # nobody knows it died yet

    # A worker in this process reaps the expired lease and runs the job again.
    tester.service.ring(job.id, tester.service.host_config("h1"))
    view = tester.watch(job.id, timeout=60)
    assert view.status == "succeeded" and view.attempts == 2
    rows = read_probes(db, job.id)
    assert rows[0].size == DECLARED and rows[0].outcome == "failed"
    assert rows[0].error == INTERRUPTED_ERROR
    assert [r.size for r in rows].count(DECLARED) == 1  # never probed again
    assert all(rec.requested_context < DECLARED for rec in emu.counters.loads)
    result = tester.result(view, 0.0)
    assert result["test_successful"] and result["iterations"] == len(rows)
    assert_near(result["optimal_context"], USABLE)
    assert view.result is not None and view.result["resumed"]["in_flight"] == [DECLARED]

    # Run again: the registry already holds the answer, which is only confirmed.
    again = tester.test_model_context(MODEL.key)
    assert_confirmed_only(again, result["optimal_context"])
    tester.close()


def test_multiple_models_smallest_first_one_per_host(make_emulator: Factory, db_url: str) -> None:
    small = EmulatedModel(key="s/small", size_bytes=1_000_000_000, max_context_length=8192)
    mid = EmulatedModel(key="m/mid", size_bytes=2_000_000_000, max_context_length=8192)
    big = EmulatedModel(
        key="b/big", size_bytes=3_000_000_000, max_context_length=16384, usable_limit=6000
    )
    e1, e2 = make_emulator([small, big]), make_emulator([mid])
    tester = ContextTester(
        config=config_for(("h1", e1.url), ("h2", e2.url), lmstudio={"max_retries": 0}),
        database_url=db_url,
        output_tokens=BUDGET,
    )
    results = tester.test_multiple_models(
        ["b/big", "s/small", "m/mid", "x/unknown"], threshold=16384, parallel=True
    )
    assert [r["model_id"] for r in results] == ["s/small", "m/mid", "b/big", "x/unknown"]
    assert all(tuple(r) == RESULT_KEYS for r in results)
    assert [r["test_successful"] for r in results] == [True, True, True, False]
    assert results[0]["optimal_context"] == results[1]["optimal_context"] == 8192
    assert_near(results[2]["optimal_context"], 6000)
    assert "x/unknown" in (results[3]["error"] or "")
    assert e1.counters.max_in_flight == 1 and e2.counters.max_in_flight == 1
    sequential = tester.test_multiple_models(["m/mid", "s/small"], threshold=16384)
    assert [r["model_id"] for r in sequential] == ["s/small", "m/mid"]
    for r in sequential:  # known from the first run: only confirmed
        assert_confirmed_only(r, 8192)


def test_worker_reloads_after_a_test(make_emulator: Factory, db_url: str) -> None:
    """A test loads and unloads at will: the runner must not trust what it loaded before."""
    emu = make_emulator([MODEL])
    config = config_for(("h1", emu.url), lmstudio={"max_retries": 0})
    manager = InferenceManager(config=config, database_url=db_url)
    manager.service.rescan()
    ModelRegistry(db_url).update_model(MODEL.key, {"tested_context": 8192})
    assert manager.infer(MODEL.key, "say before", max_tokens=8).succeeded
    assert emu.counters.loads[-1].applied_context == 8192
    tester = ContextTester(config=config, database_url=db_url, output_tokens=BUDGET)
    job = tester.submit(MODEL.key, ctx=4096)  # leaves the model loaded at 4096
    assert tester.result(tester.watch(job.id), 0.0)["test_successful"]
    assert emu.loaded_instances() == {MODEL.key: 4096}
    after = manager.infer(MODEL.key, "say after", max_tokens=8)
    assert after.succeeded and after.response == "after"
    assert after.model_info["context_length"] == 8192
    assert emu.loaded_instances() == {MODEL.key: 8192}
    manager.close()
    tester.close()


def test_same_model_on_two_hosts_needs_a_host(make_emulator: Factory, db_url: str) -> None:
    e1, e2 = make_emulator([MODEL]), make_emulator([MODEL])
    tester = ContextTester(
        config=config_for(("h1", e1.url), ("h2", e2.url), lmstudio={"max_retries": 0}),
        database_url=db_url,
        output_tokens=BUDGET,
    )
    tester.service.rescan()
    with pytest.raises(ValidationError) as err:
        tester.test_model_context(MODEL.key, threshold=4096)
    assert f"h1/{MODEL.key}" in str(err.value) and f"h2/{MODEL.key}" in str(err.value)
    result = tester.test_model_context(f"h2/{MODEL.key}", threshold=4096)
    assert result["test_successful"] and result["optimal_context"] == 4096
    assert e1.counters.load_count == 0 and e2.counters.load_count > 0
    registry = ModelRegistry(db_url)
    assert registry.get_model(MODEL.key, host="h2").tested_context == 4096
    assert registry.get_model(MODEL.key, host="h1").test_status == "untested"
