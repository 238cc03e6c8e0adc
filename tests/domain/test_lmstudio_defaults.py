"""The pure part of ``lmstrix apply``: the JSON edit, the file path, ``--limit``, which models."""

from __future__ import annotations

import copy
import json
from pathlib import PurePosixPath
from typing import Any

import pytest

from lmstrix.domain.errors import ConfigurationError, ValidationError
from lmstrix.domain.lmstudio_defaults import (
    CONTEXT_LENGTH_KEY,
    ContextCap,
    context_length_of,
    default_config_path,
    empty_config,
    on_this_machine,
    refusal,
    with_context_length,
)
from lmstrix.domain.model import Model

# A file as LM Studio writes it after a user changed a few settings, plus a key of a newer version.
EXISTING: dict[str, Any] = {
    "preset": "@local:coding",
    "operation": {"fields": [{"key": "llm.prediction.temperature", "value": 0.3}]},
    "load": {
        "fields": [
            {"key": "llm.load.llama.flashAttention", "value": True},
            {"key": CONTEXT_LENGTH_KEY, "value": 4096},
            {"key": "llm.load.gpuOffload", "value": {"ratio": 0.5, "mainGpu": 0}},
        ],
        "note": "kept",
    },
    "futureKey": [1, 2, 3],
}


def test_a_new_document_is_lm_studios_empty_config_with_the_field() -> None:
    new = with_context_length(None, 12000)
    assert new == {
        "preset": "",
        "operation": {"fields": []},
        "load": {"fields": [{"key": CONTEXT_LENGTH_KEY, "value": 12000}]},
    }
    assert empty_config()["load"]["fields"] == []  # a fresh skeleton each time


def test_an_existing_entry_is_replaced_in_place_and_nothing_else_changes() -> None:
    before = copy.deepcopy(EXISTING)
    new = with_context_length(EXISTING, 12000)
    assert before == EXISTING  # the input is not changed
    expected = copy.deepcopy(EXISTING)
    expected["load"]["fields"][1]["value"] = 12000
    assert new == expected
    # the same keys in the same order, so the file's diff is one line
    assert json.dumps(new, indent=2).splitlines() == [
        line.replace('"value": 4096', '"value": 12000')
        for line in json.dumps(EXISTING, indent=2).splitlines()
    ]
    assert context_length_of(EXISTING) == 4096 and context_length_of(new) == 12000


def test_a_missing_entry_is_appended_after_the_other_fields() -> None:
    doc = copy.deepcopy(EXISTING)
    del doc["load"]["fields"][1]
    new = with_context_length(doc, 8192)
    assert new["load"]["fields"][:2] == doc["load"]["fields"]
    assert new["load"]["fields"][2] == {"key": CONTEXT_LENGTH_KEY, "value": 8192}
    assert context_length_of(doc) is None


@pytest.mark.parametrize(
    "doc",
    [{}, {"preset": "x"}, {"load": {}}, {"load": {"fields": []}}, {"load": None}],
)
def test_missing_load_or_fields_are_added(doc: dict[str, Any]) -> None:
    new = with_context_length(doc, 2048)
    assert context_length_of(new) == 2048
    assert {k: v for k, v in new.items() if k != "load"} == {
        k: v for k, v in doc.items() if k != "load"
    }


def test_every_entry_with_the_key_is_set_and_odd_entries_are_kept() -> None:
    doc = {"load": {"fields": ["odd", {"key": CONTEXT_LENGTH_KEY}, {"key": CONTEXT_LENGTH_KEY}]}}
    new = with_context_length(doc, 100)
    assert new["load"]["fields"] == [
        "odd",
        {"key": CONTEXT_LENGTH_KEY, "value": 100},
        {"key": CONTEXT_LENGTH_KEY, "value": 100},
    ]


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ([1, 2], "top level is a JSON list"),
        ("text", "top level is a JSON string"),
        ({"load": "fast"}, '"load" is a JSON string'),
        ({"load": {"fields": {"key": "x"}}}, '"load.fields" is a JSON object'),
        ({"load": {"fields": 3}}, '"load.fields" is a JSON number'),
    ],
)
def test_a_document_of_another_shape_is_refused_naming_the_source(doc: Any, problem: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        with_context_length(doc, 4096, source="/lms/x.gguf.json")
    assert str(err.value).startswith("/lms/x.gguf.json is not an LM Studio default config")
    assert problem in str(err.value) and "\n" not in str(err.value)
    assert err.value.source == "/lms/x.gguf.json"


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "4096"])
def test_the_value_must_be_a_positive_whole_number(value: Any) -> None:
    with pytest.raises(ValidationError):
        with_context_length({}, value)


def test_the_file_lives_under_the_default_config_dir() -> None:
    assert default_config_path("lmstudio-community/Llama-3-GGUF/llama-3-Q4.gguf") == PurePosixPath(
        ".internal/user-concrete-model-default-config/lmstudio-community/Llama-3-GGUF/"
        "llama-3-Q4.gguf.json"
    )
    assert default_config_path("qwen\\qwen3-4b") == PurePosixPath(
        ".internal/user-concrete-model-default-config/qwen/qwen3-4b.json"
    )


@pytest.mark.parametrize("path", ["", "/etc/passwd", "a/../../b", "./a", "a//b", "C:/x", "a/"])
def test_a_path_that_would_leave_the_directory_is_refused(path: str) -> None:
    with pytest.raises(ValidationError) as err:
        default_config_path(path)
    assert err.value.field == "path"


@pytest.mark.parametrize(
    ("limit", "tested", "written"),
    [
        ("8000", 12000, 8000),
        (8000, 12000, 8000),
        ("20000", 12000, 12000),  # a cap above the tested context changes nothing
        ("50%", 12000, 6000),
        (" 75 % ", 12001, 9000),  # rounded down
        ("100%", 12000, 12000),
        ("1%", 50, 1),
    ],
)
def test_limit_caps_the_tested_context(limit: str | int, tested: int, written: int) -> None:
    cap = ContextCap.parse(limit)
    assert cap is not None and cap.applied_to(tested) == written


@pytest.mark.parametrize("limit", ["0", "0%", "101%", "-5", "abc", "1.5", "%", "", "5%%"])
def test_a_bad_limit_names_the_option(limit: str) -> None:
    with pytest.raises(ValidationError) as err:
        ContextCap.parse(limit, field="--limit")
    assert str(err.value).startswith("invalid --limit=") and "1% to 100%" in str(err.value)


def test_no_limit_is_none_and_caps_print_as_given() -> None:
    assert ContextCap.parse(None) is None
    assert [str(ContextCap.parse(v)) for v in ("75%", "4096")] == ["75%", "4096"]


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://localhost:1234", True),
        ("http://127.0.0.1:1234", True),
        ("http://127.8.9.10:1234", True),
        ("http://[::1]:1234", True),
        ("http://0.0.0.0:1234", True),
        ("http://lms.localhost:1234", True),
        ("http://Studio-Mac:1234", True),  # this machine's own name (given below)
        ("http://192.168.1.20:1234", False),
        ("http://studio.example:1234", False),
        (None, False),
    ],
)
def test_which_urls_are_this_machine(url: str | None, local: bool) -> None:
    assert on_this_machine(url, {"studio-mac"}) is local


def _model(**changes: Any) -> Model:
    base: dict[str, Any] = {
        "id": "acme/model-7b",
        "host": "h1",
        "host_url": "http://127.0.0.1:1234",
        "name": "Model 7B",
        "path": "acme/Model-7B-GGUF/model-7b-Q4.gguf",
        "tested_context": 12000,
        "test_status": "tested",
    }
    return Model(**{**base, **changes})


def test_an_applicable_model_has_no_refusal() -> None:
    assert refusal(_model()) is None


@pytest.mark.parametrize(
    ("changes", "kwargs", "reason"),
    [
        ({"tested_context": None, "test_status": "untested"}, {}, "never tested"),
        ({"present": False}, {}, "no longer on host 'h1'"),
        ({"type": "embedding"}, {}, "embedding model"),
        ({"host": "far", "host_url": "http://192.0.2.7:1234"}, {}, "--host far"),
        ({"path": None}, {}, "--path"),
    ],
)
def test_refusals_say_why_and_what_to_do(
    changes: dict[str, Any], kwargs: dict[str, Any], reason: str
) -> None:
    found = refusal(_model(**changes), **kwargs)
    assert found is not None and reason in found


def test_naming_the_host_or_giving_a_path_lifts_those_refusals() -> None:
    far = _model(host="far", host_url="http://192.0.2.7:1234")
    assert refusal(far, host_named=True) is None
    assert refusal(_model(path=None), path="acme/x.gguf") is None
    # but never the missing test: there is nothing to write
    assert "never tested" in (refusal(_model(tested_context=None), host_named=True) or "")
