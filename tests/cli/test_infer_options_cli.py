"""``lmstrix infer`` with a template and with the sampling options, against the emulator over
HTTP (embedded mode, SQLite): what the host received is read from the emulator's record of each
request's sampling fields."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers.configs import CliEnv, config_for

from lmstrix.cli import cli
from lmstrix.core.inference_manager import InferenceManager
from lmstrix.domain.errors import ValidationError
from lmstrix.testing import DEFAULT_MODELS, LMStudioEmulator
from lmstrix.testing.backend import EmulatedModel

MODEL = "llama-3.2-1b-instruct"
EMBEDDER = EmulatedModel("acme/embed-small", type="embedding")
PROMPTS = """
[summary]
template = "say {{text}} in {{lang}}"

[greeting]
short = "say hello {{name}}"
"""


@pytest.fixture
def emulator(make_emulator: Callable[..., LMStudioEmulator]) -> LMStudioEmulator:
    return make_emulator([*DEFAULT_MODELS, EMBEDDER])


@pytest.fixture(autouse=True)
def env(emulator: LMStudioEmulator, tmp_path: Path, cli_env: CliEnv) -> dict[str, str]:
    return cli_env(emulator.url, f"sqlite:///{tmp_path / 'cli.db'}")


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.toml"
    path.write_text(PROMPTS, encoding="utf-8")
    return path


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=stdin, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def last_messages(emu: LMStudioEmulator) -> list[dict[str, Any]]:
    return emu.counters.received[-1]


def test_a_template_is_rendered_with_vars_and_text_file(
    emulator: LMStudioEmulator, prompts: Path, tmp_path: Path
) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text("banana bread", encoding="utf-8")
    args = ["--templates", str(prompts), "--template", "summary", "--var", "lang=French"]
    code, out, err = run("infer", "-m", MODEL, *args, "--text-file", str(doc))
    assert code == 0, err
    assert last_messages(emulator)[-1]["content"] == "say banana bread in French"
    assert out.strip() == "banana bread in French"
    code, out, err = run("infer", "-m", MODEL, *args, "--text", "pears", "--json")
    assert code == 0, err
    assert json.loads(out)["succeeded"] is True
    assert last_messages(emulator)[-1]["content"] == "say pears in French"


def test_a_nested_template_name_and_a_value_holding_equals_signs(
    emulator: LMStudioEmulator, prompts: Path
) -> None:
    code, _, err = run(
        "infer", "-m", MODEL, "--templates", str(prompts), "--template", "greeting.short",
        "--var", "name=a=b",
    )  # fmt: skip
    assert code == 0, err
    assert last_messages(emulator)[-1]["content"] == "say hello a=b"


def test_every_missing_variable_is_named_in_one_line(
    emulator: LMStudioEmulator, prompts: Path
) -> None:
    before = emulator.counters.inferences
    code, out, err = run("infer", "-m", MODEL, "--templates", str(prompts), "--template", "summary")
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "{{text}}" in lines[0] and "{{lang}}" in lines[0]
    assert "--var lang=VALUE" in lines[0] and "--text TEXT" in lines[0]
    assert emulator.counters.inferences == before  # nothing was sent


@pytest.mark.parametrize(
    ("args", "named", "exit_code"),
    [
        (["--template", "summary"], "--templates", 2),
        (["--var", "a=b", "say x"], "--var", 2),
        (["--text", "x", "say x"], "--text", 2),
        (["--templates", "{prompts}", "--template", "summary", "--var", "novalue"], "--var", 2),
        (["--templates", "{prompts}", "--template", "summary", "say x"], "not both", 2),
        # the file does not hold it, or is not there: a configuration error
        (["--templates", "{prompts}", "--template", "nope"], "nope", 3),
        (["--templates", "{prompts}.gone", "--template", "summary"], "not found", 3),
    ],
)
def test_template_mistakes_are_one_line_errors(
    args: list[str], named: str, exit_code: int, prompts: Path, emulator: LMStudioEmulator
) -> None:
    args = [a.replace("{prompts}", str(prompts)) for a in args]
    code, out, err = run("infer", "-m", MODEL, *args)
    assert code == exit_code, err
    assert out == ""
    assert len(err.splitlines()) == 1 and named in err, err
    assert emulator.counters.inferences == 0


def test_sampling_options_reach_the_host(emulator: LMStudioEmulator) -> None:
    code, _, err = run(
        "infer", "say one two three", "-m", MODEL, "--repeat-penalty", "1.1", "--stop", "END",
        "--stop", "\n\n", "--seed", "42", "--temperature", "0.2", "--top-k", "40",
    )  # fmt: skip
    assert code == 0, err
    sent = emulator.counters.sampling[-1]
    assert sent["repeat_penalty"] == 1.1
    assert sent["stop"] == ["END", "\n\n"]
    assert sent["seed"] == 42
    assert sent["temperature"] == 0.2 and sent["top_k"] == 40


def test_options_not_given_are_not_sent(emulator: LMStudioEmulator) -> None:
    code, _, err = run("infer", "say hi", "-m", MODEL)
    assert code == 0, err
    sent = emulator.counters.sampling[-1]
    assert not {"repeat_penalty", "min_p", "stop", "seed"} & set(sent)


def test_min_p_is_not_sent_to_chat_completions_and_a_warning_says_so(
    emulator: LMStudioEmulator,
) -> None:
    code, _, err = run("infer", "say hi", "-m", MODEL, "--min-p", "0.05", "--stream")
    assert code == 0, err
    assert "min_p" not in emulator.counters.sampling[-1]
    assert "does not take min_p" in err


def test_stop_ends_the_answer_before_the_stop_text(emulator: LMStudioEmulator) -> None:
    code, out, err = run("infer", "say alpha beta gamma", "-m", MODEL, "--stop", "gamma")
    assert code == 0, err
    assert "gamma" not in out and "alpha" in out


def test_streamed_and_submitted_jobs_carry_the_options(emulator: LMStudioEmulator) -> None:
    code, _, err = run("infer", "say hi", "-m", MODEL, "--stream", "--seed", "7", "--stop", "x")
    assert code == 0, err
    assert emulator.counters.sampling[-1]["seed"] == 7
    code, out, err = run("submit", "infer", "say hi", "-m", MODEL, "--seed", "8", "--json")
    assert code == 0, err
    job_id = json.loads(out)["job_id"]
    code, out, err = run("jobs", "show", job_id, "--json")
    assert code == 0, err
    request = json.loads(out)["request"]
    assert request["seed"] == 8 and request["stop"] is None


@pytest.mark.parametrize(
    ("option", "value", "field"),
    [
        ("--repeat-penalty", "0", "repeat_penalty"),
        ("--min-p", "1.5", "min_p"),
        ("--seed", "-2", "seed"),
        ("--stop", "", "stop"),
    ],
)
def test_out_of_range_options_are_refused_naming_the_field(
    option: str, value: str, field: str, emulator: LMStudioEmulator
) -> None:
    code, _, err = run("infer", "say hi", "-m", MODEL, option, value)
    assert code == 2
    assert len(err.splitlines()) == 1 and field in err, err
    assert emulator.counters.inferences == 0


def test_an_embedding_model_is_refused_before_anything_is_sent(
    emulator: LMStudioEmulator,
) -> None:
    code, _, err = run("infer", "say hi", "-m", EMBEDDER.key)
    assert code == 2
    assert len(err.splitlines()) == 1 and "embedding model" in err, err
    assert emulator.counters.inferences == 0
    assert not emulator.counters.received


def test_the_python_api_takes_the_options_by_keyword(
    emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    config = config_for(emulator)
    with InferenceManager(config=config, database_url=f"sqlite:///{tmp_path / 'a.db'}") as m:
        result = m.infer(MODEL, "say one", max_tokens=20, repeat_penalty=1.3, seed=5, stop="two")
        assert result["succeeded"], result["error"]
        sent = emulator.counters.sampling[-1]
        assert sent["repeat_penalty"] == 1.3 and sent["seed"] == 5 and sent["stop"] == ["two"]
        with m.stream(MODEL, "say one", seed=6, stop=["a", "b"]) as pieces:
            "".join(pieces)
        assert emulator.counters.sampling[-1]["seed"] == 6
        with pytest.raises(ValidationError) as err:
            m.infer(MODEL, "say one", seed="5")  # type: ignore[typeddict-item]
        assert err.value.field == "seed"
        with pytest.raises(ValidationError) as err:
            m.infer(MODEL, "say one", stop=["ok", 3])  # type: ignore[list-item]
        assert err.value.field == "stop"


def batch_line(custom_id: str, **body: Any) -> str:
    return json.dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": "say a b"}], **body},
        }
    )


def test_batch_lines_carry_stop_seed_and_repeat_penalty(
    emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    path = tmp_path / "in.jsonl"
    lines = [
        batch_line("one", stop="b", seed=3),
        batch_line("two", stop=["x", "y"], repeat_penalty=1.2),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, _, err = run("batch", str(path), "--wait", "-o", str(tmp_path / "out.jsonl"))
    assert code == 0, err
    sent = sorted(emulator.counters.sampling, key=lambda s: "seed" not in s)
    assert sent[0]["seed"] == 3 and sent[0]["stop"] == ["b"]
    assert sent[1]["stop"] == ["x", "y"] and sent[1]["repeat_penalty"] == 1.2


def test_bad_batch_options_are_refused_with_their_line_and_field(
    emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    path = tmp_path / "in.jsonl"
    lines = [batch_line("one", stop=[1]), batch_line("two", seed="3"), batch_line("3", min_p=2)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, _, err = run("batch", str(path), "--wait")
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert "line 1: body.stop" in err and "line 2: body.seed" in err
    assert emulator.counters.inferences == 0
