"""``lmstrix compare`` through click, against the emulator over HTTP, in embedded mode on SQLite:
the table at 80 columns (one line per model, nothing split mid-word), ``--json``, exit codes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.configs import CliEnv

from lmstrix.cli import cli
from lmstrix.cli.cells import ELLIPSIS
from lmstrix.cli.errors import SOME_FAILED
from lmstrix.testing import DEFAULT_MODELS, LMStudioEmulator
from lmstrix.testing.backend import EmulatedModel

SMALL = "llama-3.2-1b-instruct"
QWEN = "qwen/qwen3-4b"
LONG = EmulatedModel("acme/an-extraordinarily-long-model-name-that-no-terminal-column-holds-7b")
# The emulator's models answer "say X" with X: a response too long for its column.
WORDS = (
    "the quick brown fox jumps over the lazy dog and keeps running through the tall grass "
    "until it reaches the riverbank where the ducks are sleeping"
)
COLUMNS = ("Model", "Time", "Tok/s", "Chars", "Response")


@pytest.fixture
def emulator(make_emulator: Callable[..., LMStudioEmulator]) -> LMStudioEmulator:
    return make_emulator([*DEFAULT_MODELS, LONG])


@pytest.fixture(autouse=True)
def env(
    emulator: LMStudioEmulator, tmp_path: Path, cli_env: CliEnv, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    monkeypatch.setenv("COLUMNS", "80")
    return cli_env(emulator.url, f"sqlite:///{tmp_path / 'cli.db'}")


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=stdin, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def table_rows(out: str) -> tuple[str, list[str]]:
    """The header line and the body lines of the printed table."""
    lines = [line for line in out.splitlines() if line.strip()]
    assert set(lines[1].strip()) == {"─"}, out  # the rule under the header
    return lines[0], lines[2:]


def cells(line: str) -> dict[str, str]:
    """A body line's cells by column (columns are two or more spaces apart; cells have no run
    of spaces in them)."""
    values = re.split(r" {2,}", line.strip())
    assert len(values) == len(COLUMNS), line
    return dict(zip(COLUMNS, values, strict=True))


def assert_whole_words(shown: str, text: str) -> None:
    """``shown`` is ``text``, or its first whole words followed by an ellipsis."""
    if shown == text:
        return
    assert shown.endswith(ELLIPSIS), shown
    words = shown.removesuffix(ELLIPSIS).split()
    assert words == text.split()[: len(words)], (shown, text)


def assert_fits(out: str, width: int = 80) -> None:
    too_long = [line for line in out.splitlines() if len(line) > width]
    assert not too_long, too_long


def test_two_models_and_a_failing_one_at_80_columns(emulator: LMStudioEmulator) -> None:
    code, out, err = run("compare", f"say {WORDS}", "-m", SMALL, "-m", LONG.key, "-m", "nope-7b")
    assert code == SOME_FAILED, err
    assert_fits(out)
    header, body = table_rows(out)
    assert tuple(header.split()) == COLUMNS
    assert len(body) == 3  # one line per model: nothing wrapped onto a second line
    rows = [cells(line) for line in body]
    assert rows[0]["Model"] == SMALL and rows[2]["Model"] == "nope-7b"
    cut_id = rows[1]["Model"]
    assert cut_id.endswith(ELLIPSIS) and LONG.key.startswith(cut_id.removesuffix(ELLIPSIS))
    for row in rows[:2]:
        assert row["Chars"] == str(len(WORDS)) and float(row["Tok/s"]) > 0
        assert re.fullmatch(r"\d+\.\d\ds", row["Time"])
        assert_whole_words(row["Response"], WORDS)
    assert [rows[2][c] for c in ("Time", "Tok/s", "Chars")] == ["-", "-", "-"]
    shown_error = rows[2]["Response"]
    assert shown_error.startswith("failed: ")
    # stderr: the whole error, on one line, naming the model
    errors = err.splitlines()
    assert (
        len(errors) == 1 and errors[0].startswith("error: nope-7b: ") and "not found" in errors[0]
    )
    assert_whole_words(shown_error, "failed: " + errors[0].removeprefix("error: nope-7b: "))
    assert emulator.counters.load_count == 2  # the unknown model never reached the host


def test_json_has_every_model_and_null_for_a_failed_models_numbers(
    emulator: LMStudioEmulator,
) -> None:
    emulator.fail_next_load("Failed to load model: insufficient system resources", QWEN)
    code, out, err = run("compare", "say same words", "-m", SMALL, "-m", QWEN, "--json")
    assert code == SOME_FAILED, err
    rows = json.loads(out)
    assert [r["model_id"] for r in rows] == [SMALL, QWEN]
    ok, failed = rows
    assert list(ok) == [
        "model_id",
        "host",
        "succeeded",
        "response_time",
        "tokens_per_second",
        "response_length",
        "response",
        "error",
        "job_id",
    ]
    assert ok["succeeded"] is True and ok["error"] is None and ok["host"] == "h1"
    assert ok["response"] == "same words" and ok["response_length"] == len("same words")
    assert ok["response_time"] >= 0 and ok["tokens_per_second"] > 0 and ok["job_id"]
    assert failed["succeeded"] is False and "insufficient" in failed["error"]
    assert (failed["response_time"], failed["tokens_per_second"]) == (None, None)
    assert failed["job_id"]  # it was queued and ran: the job shows what happened
    assert err.startswith(f"error: {QWEN}: ") and len(err.splitlines()) == 1


def test_all_answered_exits_zero_and_reads_the_prompt_from_a_file(tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("say from a file\n", encoding="utf-8")
    code, out, err = run("compare", "--file", str(prompt), "-m", SMALL, "-m", QWEN, "--json")
    assert code == 0, err
    assert [r["response"] for r in json.loads(out)] == ["from a file", "from a file"]
    code, out, err = run("compare", "-", "-m", SMALL, "-m", QWEN, stdin="say piped\n")
    assert code == 0 and err == "", err
    assert_fits(out)
    _, body = table_rows(out)
    assert [cells(line)["Response"] for line in body] == ["piped", "piped"]


def test_a_wide_terminal_shows_whole_ids_and_responses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    code, out, err = run("compare", f"say {WORDS}", "-m", LONG.key, "-m", SMALL)
    assert code == 0, err
    _, body = table_rows(out)
    assert cells(body[0])["Model"] == LONG.key
    assert [cells(line)["Response"] for line in body] == [WORDS, WORDS]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compare", "say hi"], "Missing option"),
        (["compare", "say hi", "-m", SMALL, "-m", SMALL], "twice"),
        (["compare", "-m", SMALL, "-m", QWEN], "prompt"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    emulator: LMStudioEmulator, args: Sequence[str], message: str
) -> None:
    code, out, err = run(*args)
    assert code == 2 and message in err and out == ""
    assert emulator.counters.inferences == 0
