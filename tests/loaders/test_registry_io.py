"""Import of the original lmstrix registry file and JSON export, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lmstrix.api.exceptions import ValidationError
from lmstrix.core.models import ModelRegistry
from lmstrix.loaders.registry_io import export_registry, import_upstream

UPSTREAM: dict[str, Any] = {
    "llms": {
        "lmstudio-community/Meta-Llama-3-8B-Instruct-GGUF/Meta-Llama-3-8B-Instruct-Q4_K_M.gguf": {
            "id": "meta-llama-3-8b-instruct",
            "path": "lmstudio-community/Meta-Llama-3-8B-Instruct-GGUF/"
            "Meta-Llama-3-8B-Instruct-Q4_K_M.gguf",
            "size_bytes": 4920734272,
            "ctx_in": 8192,
            "ctx_out": 4096,
            "has_tools": False,
            "has_vision": False,
            "capabilities": {"vision": False, "trained_for_tool_use": True},
            "tested_max_context": 8192,
            "context_test_status": "completed",
            "context_test_date": "2025-08-01 12:00:00.123456",
            "ttft_seconds": 0.31,
            "tps": 41.5,
            "last_known_good_context": 8192,
            "last_known_bad_context": None,
            "short_id": "Meta-Llama-3-8B-Instruct-Q4_K_M",
            "keywords": ["arch-gguf", "outp-chat"],
            "description": "A chat model.",
        },
        "qwen/qwen3-4b": {
            "id": "qwen/qwen3-4b",
            "path": "qwen/qwen3-4b",
            "size_bytes": 2500000000,
            "ctx_in": 40960,
            "capabilities": {
                "vision": False,
                "trained_for_tool_use": True,
                "reasoning": {"allowed_options": ["on", "off"], "default": "on"},
            },
            "tested_max_context": 31744,
            "context_test_status": "testing",
            "last_known_good_context": 31744,
            "last_known_bad_context": 40960,
            "loadable_max_context": 40960,
        },
        "x/never-tested.gguf": {
            "id": "never-tested",
            "size_bytes": 100,
            "ctx_in": 2048,
            "context_test_status": "untested",
            "tested_max_context": None,
        },
    },
    "path": "/home/u/.cache/lm-studio",
}


def _write(tmp_path: Path, data: Any, name: str = "lmstrix.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def test_import_keeps_test_results(database_url: str, tmp_path: Path) -> None:
    summary = import_upstream(
        _write(tmp_path, UPSTREAM), host="local", host_url="http://x", database_url=database_url
    )
    assert summary.to_dict()["added"] == 3 and summary.to_dict()["updated"] == 0
    registry = ModelRegistry(database_url)
    llama = registry.get_model("meta-llama-3-8b-instruct")
    assert (llama.tested_context, llama.test_status, llama.declared_context) == (
        8192,
        "tested",
        8192,
    )
    assert llama.last_tested == datetime(2025, 8, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert (llama.time_to_first_token, llama.tokens_per_second) == (0.31, 41.5)
    assert llama.capabilities == ["tools"] and llama.tags == ["arch-gguf", "outp-chat"]
    assert llama.extra["ctx_out"] == 4096 and llama.extra["short_id"].endswith("Q4_K_M")
    assert llama.path is not None and llama.path.endswith(".gguf")
    # Lookup by the original's file path works too.
    assert registry.get_model(llama.path).id == "meta-llama-3-8b-instruct"
    qwen = registry.get_model("qwen3-4b")
    assert qwen.test_status == "tested"  # an interrupted "testing" with a result
    assert qwen.last_known_bad_context == 40960
    assert qwen.capability_details["reasoning"]["allowed_options"] == ["on", "off"]
    assert "reasoning" in qwen.capabilities
    assert registry.get_model("never-tested").test_status == "untested"


def test_import_twice_updates_and_keeps_scanned_metadata(database_url: str, tmp_path: Path) -> None:
    registry = ModelRegistry(database_url)
    registry.add_model(
        {"id": "never-tested", "host": "local", "host_url": "http://x", "quantization": "Q8_0"}
    )
    file = _write(tmp_path, UPSTREAM)
    first = import_upstream(file, host="local", database_url=database_url)
    assert (len(first.added), first.updated) == (2, ["never-tested"])
    second = import_upstream(file, host="local", database_url=database_url)
    assert len(second.updated) == 3 and second.added == []
    assert registry.get_model("never-tested").quantization == "Q8_0"
    assert len(registry.list_models()) == 3


def test_malformed_json_names_the_line(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "llms": {\n    "a": {"id": "a",}\n  }\n}\n', encoding="utf-8")
    with pytest.raises(ValidationError, match="line 3") as info:
        import_upstream(path, host="local", database_url=database_url)
    assert str(path) in str(info.value)


def test_json_nested_thousands_deep_names_the_line(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{\n  "llms": ' + "[" * 5000 + "]" * 5000 + "\n}\n", encoding="utf-8")
    with pytest.raises(ValidationError) as info:
        import_upstream(path, host="local", database_url=database_url)
    assert f"{path}:2:" in str(info.value) and "nested more than 64 levels" in str(info.value)


def test_bad_field_names_field_and_line_and_imports_nothing(
    database_url: str, tmp_path: Path
) -> None:
    data = json.loads(json.dumps(UPSTREAM))
    data["llms"]["qwen/qwen3-4b"]["tested_max_context"] = "lots"
    path = _write(tmp_path, data)
    with pytest.raises(ValidationError) as info:
        import_upstream(path, host="local", database_url=database_url)
    assert info.value.field == "llms['qwen/qwen3-4b'].tested_max_context"
    line = next(
        n for n, text in enumerate(path.read_text().splitlines(), 1) if '"qwen/qwen3-4b": {' in text
    )
    assert f"{path}:{line}" in str(info.value)
    assert ModelRegistry(database_url).list_models() == []  # all or nothing


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([1, 2], "llms"),
        ({"models": {}}, "llms"),
        ({"llms": {"a": 5}}, "llms['a']"),
        ({"llms": {"a": {"path": "a"}}}, "llms['a'].id"),
        (
            {"llms": {"a": {"id": "a", "context_test_status": "done"}}},
            "llms['a'].context_test_status",
        ),
        ({"llms": {"a": {"id": "a", "capabilities": []}}}, "llms['a'].capabilities"),
    ],
)
def test_structural_errors_name_the_field(
    tmp_path: Path, data: Any, field: str, database_url: str
) -> None:
    with pytest.raises(ValidationError) as info:
        import_upstream(_write(tmp_path, data), host="local", database_url=database_url)
    assert info.value.field == field


def test_missing_file(tmp_path: Path, database_url: str) -> None:
    with pytest.raises(ValidationError, match="does not exist"):
        import_upstream(tmp_path / "nope.json", database_url=database_url)


def test_export_is_json_and_round_trips_ids(database_url: str, tmp_path: Path) -> None:
    import_upstream(_write(tmp_path, UPSTREAM), host="local", database_url=database_url)
    exported = export_registry(database_url=database_url)
    assert json.loads(json.dumps(exported)) == exported
    assert [m["id"] for m in exported] == [
        "meta-llama-3-8b-instruct",
        "never-tested",
        "qwen/qwen3-4b",
    ]
    assert exported[0]["last_tested"] == "2025-08-01T12:00:00.123456Z"
    assert export_registry(database_url=database_url, host="elsewhere") == []
