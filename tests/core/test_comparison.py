"""ModelComparator over the queue: several models and hosts, the emulator over HTTP."""

from __future__ import annotations

import _thread
import math
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.configs import config_for
from helpers.waiting import wait_for

from lmstrix.api.exceptions import ValidationError
from lmstrix.testing import DEFAULT_MODELS, LMStudioEmulator
from lmstrix.testing.backend import EmulatedModel
from lmstrix.utils.comparison import DEFAULT_METRICS, ModelComparator

MODELS = ["qwen/qwen3-4b", "google/gemma-3-4b", "llama-3.2-1b-instruct"]


def test_compare_models_on_one_host(
    make_emulator: Callable[..., LMStudioEmulator], database_url: str
) -> None:
    emu = make_emulator()
    with ModelComparator(MODELS, config=config_for(emu), database_url=database_url) as cmp:
        rows = cmp.compare_models("say the same words", max_tokens=16)
    assert [r["model_id"] for r in rows] == MODELS
    for row in rows:
        assert set(DEFAULT_METRICS) | {"model_id", "response", "succeeded", "error"} <= set(row)
        assert row["succeeded"] is True and row["error"] is None
        assert row["response"] == "the same words"
        assert row["response_length"] == len("the same words")
        assert row["response_time"] > 0 and row["tokens_per_second"] > 0
        assert row["host"] == "h1" and row["job_id"]
    counters = emu.counters
    assert counters.max_in_flight == 1  # one host: the models ran one after the other
    assert sorted(counters.loads_by_model()) == sorted(MODELS)  # each loaded once
    assert counters.load_count == 3


def test_failures_stay_in_their_row(
    make_emulator: Callable[..., LMStudioEmulator], tmp_path: Path
) -> None:
    emu = make_emulator()
    db_url = f"sqlite:///{tmp_path / 'c.db'}"
    ids = ["llama-3.2-1b-instruct", "no-such-model", "qwen/qwen3-4b"]
    with ModelComparator(ids, config=config_for(emu), database_url=db_url) as cmp:
        emu.fail_next_load("Failed to load model: insufficient system resources", ids[2])
        rows = cmp.compare_models("say ok", metrics=["response_time", "time_to_first_token"])
    assert [r["succeeded"] for r in rows] == [True, False, False]
    assert "no-such-model" in rows[1]["error"] and rows[1]["job_id"] is None
    assert "insufficient" in rows[2]["error"] and rows[2]["job_id"]
    assert rows[0]["response_time"] > 0 and rows[0]["time_to_first_token"] is not None
    # A failed model's metrics are numbers (NaN), so the usual formatting works on every row.
    assert math.isnan(rows[2]["response_time"]) and math.isnan(rows[1]["time_to_first_token"])
    assert [f"{r['response_time']:.2f}" for r in rows][1:] == ["nan", "nan"]
    assert "tokens_per_second" not in rows[0]  # only the metrics asked for


def test_models_on_different_hosts(
    make_emulator: Callable[..., LMStudioEmulator], tmp_path: Path
) -> None:
    a = make_emulator([DEFAULT_MODELS[0]])
    b = make_emulator([DEFAULT_MODELS[2]])
    ids = [DEFAULT_MODELS[2].key, DEFAULT_MODELS[0].key]
    db_url = f"sqlite:///{tmp_path / 'c.db'}"
    with ModelComparator(ids, config=config_for(a, b), database_url=db_url) as cmp:
        rows = cmp.compare_models("2+3=", metrics=["tokens_used", "response_tokens"])
    assert [(r["model_id"], r["host"], r["response"]) for r in rows] == [
        (ids[0], "h2", "5"),
        (ids[1], "h1", "5"),
    ]
    assert all(r["tokens_used"] > r["response_tokens"] > 0 for r in rows)


def test_bad_arguments(lmstudio_emulator: LMStudioEmulator, tmp_path: Path) -> None:
    config = config_for(lmstudio_emulator)
    db_url = f"sqlite:///{tmp_path / 'c.db'}"
    for bad in ([], ["a", "a"], ["ok", ""]):
        with pytest.raises(ValidationError):
            ModelComparator(bad, config=config, database_url=db_url)
    with ModelComparator(MODELS[:1], config=config, database_url=db_url) as cmp:
        with pytest.raises(ValidationError) as err:
            cmp.compare_models("hi", metrics=["speed"])
        assert err.value.field == "metrics" and "tokens_per_second" in str(err.value)
        with pytest.raises(ValidationError):
            cmp.compare_models("")
        assert cmp.manager.service.store.list_jobs() == []


# The "Model Comparison" example of the Python API document, character for character.
DOCUMENTED_EXAMPLE = """\
from lmstrix.utils.comparison import ModelComparator

# Create comparator
comparator = ModelComparator([
    "llama-3.2-3b-instruct",
    "mistral-7b-instruct",
    "codellama-13b-python"
])

# Compare models on a task
prompt = "Explain quantum computing"
comparison = comparator.compare_models(
    prompt=prompt,
    metrics=["response_time", "tokens_per_second", "response_length"]
)

# Results include performance metrics for each model
for model_result in comparison:
    print(f"Model: {model_result['model_id']}")
    print(f"Response time: {model_result['response_time']:.2f}s")
    print(f"Speed: {model_result['tokens_per_second']:.1f} tok/s")
    print("---")
"""


def test_the_documented_example_runs_with_a_failed_model(
    make_emulator: Callable[..., LMStudioEmulator],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Two of the example's three models exist; the third fails, and its row still formats.
    emu = make_emulator(
        [EmulatedModel("llama-3.2-3b-instruct"), EmulatedModel("mistral-7b-instruct")]
    )
    monkeypatch.setenv("LMSTRIX_HOSTS", f"h1={emu.url}")
    monkeypatch.setenv("LMSTRIX_DATABASE_URL", f"sqlite:///{tmp_path / 'doc.db'}")
    namespace: dict[str, object] = {}
    try:
        exec(DOCUMENTED_EXAMPLE, namespace)
    finally:
        comparator = namespace.get("comparator")
        if isinstance(comparator, ModelComparator):
            comparator.close()
    blocks = capsys.readouterr().out.split("---\n")
    assert blocks[-1] == ""
    assert [b.splitlines()[0] for b in blocks[:-1]] == [
        "Model: llama-3.2-3b-instruct",
        "Model: mistral-7b-instruct",
        "Model: codellama-13b-python",
    ]
    for block in blocks[:2]:  # the models that answered have measured numbers
        _, time_line, speed_line = block.splitlines()
        assert re.fullmatch(r"Response time: \d+\.\d\ds", time_line), time_line
        assert float(speed_line.removeprefix("Speed: ").removesuffix(" tok/s")) > 0
    assert blocks[2].splitlines()[1:] == ["Response time: nans", "Speed: nan tok/s"]


def test_an_interrupted_comparison_cancels_the_jobs_it_queued(
    make_emulator: Callable[..., LMStudioEmulator], tmp_path: Path
) -> None:
    # Ctrl-C while the first model is answering: none of the comparison's jobs stays queued
    # for a worker to run later.
    emu = make_emulator()
    db_url = f"sqlite:///{tmp_path / 'c.db'}"
    with ModelComparator(MODELS, config=config_for(emu), database_url=db_url) as cmp:
        store = cmp.manager.service.store
        cmp.manager.service.rescan()  # the models are known: submitting needs no request

        def interrupt_when_a_job_hangs() -> None:
            wait_for(lambda: emu.hanging > 0 and len(store.list_jobs()) == len(MODELS))
            _thread.interrupt_main()

        interrupter = threading.Thread(target=interrupt_when_a_job_hangs, daemon=True)
        emu.configure(hang_requests=True)
        try:
            interrupter.start()
            with pytest.raises(KeyboardInterrupt):
                cmp.compare_models("say hello")
            jobs = store.list_jobs()
            assert all(j.cancel_requested_at is not None for j in jobs)
        finally:
            emu.configure(hang_requests=False)
            emu.release_hangs()
            interrupter.join(timeout=60)
        wait_for(lambda: all(store.get(j.id).finished for j in jobs), what="the jobs to end")
        assert {store.get(j.id).status for j in jobs} <= {"cancelled", "failed"}
        assert emu.counters.inferences <= 1  # only the one that was already running
