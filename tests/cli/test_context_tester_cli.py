"""``lmstrix test`` and ``lmstrix submit test`` in embedded mode (SQLite file, the emulator over
HTTP, the in-process worker)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.configs import CliEnv

from lmstrix.cli import cli
from lmstrix.core.context_tester import RESULT_KEYS
from lmstrix.core.models import ModelRegistry
from lmstrix.domain.probe_sizing import PromptBudget
from lmstrix.jobs.context_test import read_probes
from lmstrix.jobs.store import JobStore
from lmstrix.testing import EMBEDDING_KEY, EmulatedModel, LMStudioEmulator

DECLARED, LOADABLE, USABLE = 16384, 12288, 8192
BUDGET = 64  # the default answer budget of a model that does not reason
MODEL = EmulatedModel(
    key="acme/m-3b",
    size_bytes=2_000_000_000,
    max_context_length=DECLARED,
    loadable_limit=LOADABLE,
    usable_limit=USABLE,
)
SMALL = EmulatedModel(key="acme/tiny", size_bytes=500_000_000, max_context_length=4096)
EMBEDDER = EmulatedModel(key=EMBEDDING_KEY, type="embedding", max_context_length=2048)


@pytest.fixture
def emu(make_emulator: Callable[..., LMStudioEmulator]) -> LMStudioEmulator:
    return make_emulator([MODEL, SMALL, EMBEDDER])


@pytest.fixture
def env(emu: LMStudioEmulator, tmp_path: Path, cli_env: CliEnv) -> dict[str, str]:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    return cli_env(emu.url, db, LMSTRIX_LMSTUDIO__MAX_RETRIES="0")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def jobs(env: dict[str, str]) -> int:
    return len(JobStore(env["LMSTRIX_DATABASE_URL"]).list_jobs())


def test_dry_run_says_what_and_where_without_probing(
    env: dict[str, str], emu: LMStudioEmulator
) -> None:
    code, out, err = run("test", MODEL.key, "--dry-run")
    assert code == 0, err
    assert f"would test {MODEL.key} on h1 ({emu.url})" in out
    assert f"sizes 2048 to {DECLARED} tokens" in out
    code, out, _ = run("test", "--all", "--dry-run", "--json", "--threshold", "8192")
    plans = json.loads(out)
    # smallest first; the embedding model is not a candidate
    assert [p["model_id"] for p in plans] == [SMALL.key, MODEL.key]
    assert [p["upper"] for p in plans] == [4096, 8192]
    assert all(p["host"] == "h1" for p in plans)
    code, out, _ = run("test", MODEL.key, "--ctx", "4096", "--dry-run")
    assert code == 0 and "at exactly 4096 tokens" in out
    code, out, _ = run("test", MODEL.key, "--min-context", "256", "--dry-run")
    assert code == 0 and f"sizes 256 to {DECLARED} tokens" in out
    assert jobs(env) == 0 and emu.counters.load_count == 0


def test_live_rows_then_verdict(env: dict[str, str], emu: LMStudioEmulator) -> None:
    code, out, err = run("test", MODEL.key)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == f"{MODEL.key} on h1"
    probe_lines = lines[1:-1]
    assert probe_lines and all(line.split()[1] in ("load", "use") for line in probe_lines)
    assert "wrong answer" in out and "insufficient system resources" in out
    assert lines[-1].startswith(f"✓ {MODEL.key} on h1: uses up to ")
    model = ModelRegistry(env["LMSTRIX_DATABASE_URL"]).get_model(MODEL.key)
    assert model.test_status == "tested" and model.tested_context
    slack = BUDGET + 17 + 2 * PromptBudget(USABLE, BUDGET).margin  # the fact is 17 tokens in
    assert USABLE - 256 <= model.tested_context <= USABLE + slack
    assert f"uses up to {model.tested_context} tokens" in lines[-1]
    (job,) = JobStore(env["LMSTRIX_DATABASE_URL"]).list_jobs()
    rows = read_probes(env["LMSTRIX_DATABASE_URL"], job.id)
    assert [ln.split()[1:3] for ln in probe_lines] == [[r.kind, str(r.size)] for r in rows]


def test_json_result_and_single_size(env: dict[str, str], emu: LMStudioEmulator) -> None:
    code, out, err = run("test", MODEL.key, "--json", "--threshold", "8192")
    assert code == 0, err
    result = json.loads(out)
    assert set(RESULT_KEYS) <= set(result)
    assert result["job_status"] == "succeeded" and result["host"] == "h1"
    assert result["optimal_context"] == 8192 and result["failure_point"] is None
    code, out, err = run("test", MODEL.key, "--ctx", "6144", "--json")
    assert code == 0, err
    single = json.loads(out)
    assert single["optimal_context"] == 6144
    assert [(p["phase"], p["context_size"]) for p in single["test_points"]] == [
        ("load", 6144),
        ("use", 6144),
    ]


def test_ctx_guard_rails(env: dict[str, str], emu: LMStudioEmulator) -> None:
    code, _, err = run("test", MODEL.key, "--ctx", str(DECLARED * 2))
    assert code == 2 and "declares" in err
    code, out, err = run("test", MODEL.key, "--ctx", "15000")
    assert code == 0, err
    assert out.strip().splitlines()[-1].startswith(f"✗ {MODEL.key} on h1: fails at 15000")
    before = emu.counters.load_count + emu.counters.load_failures
    code, _, err = run("test", MODEL.key, "--ctx", "15000")
    assert code == 2 and "--force" in err and "already failed" in err
    assert emu.counters.load_count + emu.counters.load_failures == before  # no probe
    code, out, err = run("test", MODEL.key, "--ctx", "15500", "--force")
    assert code == 0 and "force: testing 15500" in err
    model = ModelRegistry(env["LMSTRIX_DATABASE_URL"]).get_model(MODEL.key)
    assert model.last_known_bad_context == 15000 and model.test_status == "failed"


def test_bad_input_clear_message_no_probe(
    env: dict[str, str], emu: LMStudioEmulator, tmp_path: Path
) -> None:
    code, _, err = run("test", "acme/nope")
    assert code == 6 and "not found" in err
    code, _, err = run("test", MODEL.key, "--threshold", "1000")
    assert code == 2 and "threshold" in err and "2048" in err
    code, _, err = run("test", EMBEDDING_KEY)
    assert code == 2 and "embedding model" in err
    code, _, err = run("test", MODEL.key, "--min-context", "100")
    assert code == 2 and "min_context" in err and ">= 256" in err
    code, _, err = run("submit", "test", MODEL.key, "--min-context", "9000", "--threshold", "8192")
    assert code == 2 and "above the threshold 8192" in err
    code, _, err = run("test", MODEL.key, "--all")
    assert code == 2 and "MODEL_ID or --all" in err
    code, _, err = run("test")
    assert code == 2
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    code, _, err = run("test", MODEL.key, "--file-prompt", str(empty))
    assert code == 2 and "empty" in err
    code, _, err = run("test", MODEL.key, "--prompt", "hi", "--file-prompt", str(empty))
    assert code == 2 and "not both" in err
    for depths in ("0,x", "0,1.5", "0.5,0.5", ""):
        code, _, err = run("test", MODEL.key, "--depths", depths)
        assert code == 2 and "depths" in err, (depths, err)
    assert jobs(env) == 0
    assert emu.counters.load_count == 0 and emu.counters.load_failures == 0


def test_file_prompt_replaces_the_question(
    env: dict[str, str], emu: LMStudioEmulator, tmp_path: Path
) -> None:
    question = tmp_path / "q.txt"
    question.write_text("Reply with one word.\n")
    code, out, err = run("test", MODEL.key, "--file-prompt", str(question), "--json")
    assert code == 0, err
    # any answer passes, so only loading limits the result
    assert LOADABLE - 256 <= json.loads(out)["optimal_context"] <= LOADABLE


def test_all_in_size_order_with_progress(env: dict[str, str], emu: LMStudioEmulator) -> None:
    code, out, err = run("test", "--all", "--threshold", "8192")
    assert code == 0, err
    headings = [ln for ln in out.splitlines() if ln.startswith("[")]
    assert headings == [f"[1/2] {SMALL.key} on h1", f"[2/2] {MODEL.key} on h1"]
    assert "2/2 test(s) finished" in err
    code, out, err = run("test", "--all")
    assert code == 0
    assert f"skipped h1/{SMALL.key}: already tested (4096)" in err
    assert f"skipped h1/{MODEL.key}: already tested (8192)" in err


def test_submit_test_then_worker(env: dict[str, str], emu: LMStudioEmulator) -> None:
    code, out, err = run("submit", "test", MODEL.key, "--ctx", "4096")
    assert code == 0, err
    job_id = out.strip()
    assert "lmstrix worker --host h1" in err
    assert emu.counters.load_count == 0
    code, _, err = run("worker", "--host", "h1", "--once")
    assert code == 0 and "ran 1 job" in err
    code, out, _ = run("jobs", "show", job_id, "--json")
    job = json.loads(out)
    assert job["kind"] == "context_test" and job["status"] == "succeeded"
    assert job["result"]["optimal_context"] == 4096
    # --min-context reaches the queued request
    code, out, err = run("submit", "test", MODEL.key, "--min-context", "512", "--json")
    assert code == 0, err
    queued = JobStore(env["LMSTRIX_DATABASE_URL"]).get(json.loads(out)["job_id"])
    assert queued.request["min_context"] == 512


def test_exit_code_when_the_test_cannot_run(env: dict[str, str], emu: LMStudioEmulator) -> None:
    run("scan")
    emu.remove_model(MODEL.key)  # deleted from the host after the scan
    code, out, err = run("test", MODEL.key, "--ctx", "4096")
    assert code == 1, err
    assert f"✗ {MODEL.key} on h1: the test did not finish" in out
    assert "not among the host's downloaded models" in out


def test_depths_choose_the_needles(env: dict[str, str], emu: LMStudioEmulator) -> None:
    """A model that loses the middle of long prompts: with the default depths the middle is
    named where it fails; asked only about the start and the end, it works at the top."""
    lost = EmulatedModel(key="acme/lost", max_context_length=8192, middle_limit=5000)
    emu.add_model(lost)
    code, out, err = run("test", lost.key, "--reset")
    assert code == 0, err
    assert "misses depth 0.5" in out
    code, out, err = run("test", lost.key, "--reset", "--depths", "0,1")
    assert code == 0, err
    assert "works at 8192 tokens" in out
