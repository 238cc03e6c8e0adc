"""ModelRegistry on SQLite and PostgreSQL: the documented API, id resolution, scans."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lmstrix.api.exceptions import ModelNotFoundError, ValidationError
from lmstrix.core.models import Model, ModelRegistry
from lmstrix.db import model_store as models_mod
from lmstrix.domain.host_types import Capabilities, ModelRecord
from lmstrix.loaders.model_loader import load_model_registry

MIB = 1024 * 1024


@pytest.fixture
def registry(database_url: str) -> ModelRegistry:
    return ModelRegistry(database_url)


def _record(key: str, **kw: object) -> ModelRecord:
    defaults: dict[str, object] = {
        "display_name": key.rsplit("/", 1)[-1].title(),
        "size_bytes": 2000 * MIB,
        "max_context_length": 32768,
        "architecture": "llama",
        "format": "gguf",
        "quantization": "Q4_K_M",
    }
    defaults.update(kw)
    return ModelRecord(key=key, **defaults)  # type: ignore[arg-type]


def _scan(registry: ModelRegistry, *records: ModelRecord, host: str = "local"):  # type: ignore[no-untyped-def]
    return registry.upsert_from_scan(host, f"http://{host}:1234", list(records), "v1")


def test_doc_example_add_update_remove(registry: ModelRegistry) -> None:
    added = registry.add_model(
        {"id": "custom-model", "name": "Custom Model", "size_mb": 3500, "parameters": "3.5B"}
    )
    assert added.size_mb == 3500.0 and added.parameters == "3.5B" and added.host == "local"
    updated = registry.update_model(
        "custom-model",
        {"tested_context": 32768, "test_status": "tested", "last_tested": "2024-01-15T10:30:00Z"},
    )
    assert updated.last_tested == datetime(2024, 1, 15, 10, 30, tzinfo=UTC)
    info = registry.get_model_info("custom-model")
    assert (info["size_mb"], info["tested_context"], info["test_status"]) == (
        3500.0,
        32768,
        "tested",
    )
    assert info["last_tested"] == "2024-01-15T10:30:00Z"
    registry.save()
    registry.reload()
    assert registry.has_model("custom-model")
    registry.remove_model("custom-model")
    assert not registry.has_model("custom-model")
    assert registry.list_models() == []


def test_records_work_as_objects_and_as_dicts(registry: ModelRegistry) -> None:
    _scan(registry, _record("lmstudio-community/llama-3.2-3b-instruct"))
    registry.update_model(
        "llama-3.2-3b-instruct", {"tested_context": 8192, "test_status": "tested"}
    )
    models = registry.list_models()
    # The notebook example of the documented API:
    tested_models = [m for m in models if m["test_status"] == "tested"]
    contexts = [m["tested_context"] for m in tested_models]
    names = [m["name"] for m in tested_models]
    assert contexts == [8192] and names == ["Llama-3.2-3B-Instruct"]
    m = tested_models[0]
    assert m.id == "lmstudio-community/llama-3.2-3b-instruct"
    assert dict(m)["size_mb"] == 2000.0
    assert m.get("nope", 1) == 1 and "tested_context" in m
    with pytest.raises(KeyError):
        m["nope"]
    assert m.to_dict()["qualified_id"] == "local/lmstudio-community/llama-3.2-3b-instruct"
    assert isinstance(registry.get_model(m.qualified_id), Model)


def test_a_second_registry_sees_every_write_at_once(database_url: str) -> None:
    a, b = ModelRegistry(database_url), load_model_registry(database_url=database_url)
    a.add_model({"id": "m", "host": "local", "host_url": "http://x"})
    assert b.get_model("m").id == "m"
    b.update_model("m", {"tokens_per_second": 42.5})
    assert a.get_model("m").tokens_per_second == 42.5


def test_id_resolution_order(registry: ModelRegistry) -> None:
    _scan(
        registry,
        _record("lmstudio-community/llama-3.2-3b-instruct"),
        _record("qwen/qwen3-4b"),
        _record("qwen3-8b@q4_k_m"),
        _record("qwen3-8b@q8_0"),
    )
    _scan(registry, _record("qwen/qwen3-4b"), host="gpu")
    assert registry.get_model("llama-3.2-3b-instruct").id.endswith("/llama-3.2-3b-instruct")
    assert registry.get_model("LMSTUDIO-COMMUNITY/Llama-3.2-3B-Instruct").host == "local"
    assert registry.get_model("gpu/qwen/qwen3-4b").host == "gpu"
    assert registry.get_model("qwen3-4b", host="gpu").host == "gpu"
    assert registry.get_model("qwen3-8b@q8_0").id == "qwen3-8b@q8_0"
    with pytest.raises(ValidationError, match=r"gpu/qwen/qwen3-4b.*local/qwen/qwen3-4b"):
        registry.get_model("qwen/qwen3-4b")  # same key on two hosts
    with pytest.raises(ValidationError, match="several models"):
        registry.get_model("qwen3-8b")  # two variants
    assert not registry.has_model("qwen3-8b")


def test_unknown_id_names_close_matches(registry: ModelRegistry) -> None:
    _scan(registry, _record("qwen/qwen3-4b"), _record("mistral-7b-instruct"))
    with pytest.raises(ModelNotFoundError) as info:
        registry.get_model("mistral-7b-instruc")
    assert "mistral-7b-instruct" in info.value.suggestions
    assert "mistral-7b-instruct" in str(info.value)
    with pytest.raises(ModelNotFoundError):
        registry.update_model("nothing-like-it", {"tested_context": 1})


def test_missing_models_prefer_present_on_ambiguity(registry: ModelRegistry) -> None:
    _scan(registry, _record("qwen/qwen3-4b"), host="a")
    _scan(registry, _record("qwen/qwen3-4b"), host="b")
    _scan(registry, host="a")  # vanished from a
    assert registry.get_model("qwen/qwen3-4b").host == "b"


def test_filter_models(registry: ModelRegistry) -> None:
    _scan(
        registry,
        _record("small", size_bytes=1000 * MIB, capabilities=Capabilities(tool_use=True)),
        _record("mid", size_bytes=6000 * MIB, capabilities=Capabilities(vision=True)),
        _record("big", size_bytes=30000 * MIB),
        _record("embed", type="embedding", size_bytes=100 * MIB),
    )
    _scan(registry, _record("remote"), host="gpu")
    registry.update_model("mid", {"tested_context": 16384, "test_status": "tested"})
    registry.update_model("big", {"test_status": "failed"})
    ids = lambda ms: sorted(m.id for m in ms)  # noqa: E731
    assert ids(registry.filter_models(status="tested")) == ["mid"]
    assert ids(registry.filter_models(status=["tested", "failed"])) == ["big", "mid"]
    assert ids(registry.filter_models(size_range=(5000, 20000))) == ["mid"]
    assert ids(registry.filter_models(size_range=(None, 1000))) == ["embed", "small"]
    assert ids(registry.filter_models(host="gpu")) == ["remote"]
    assert ids(registry.filter_models(type="embedding")) == ["embed"]
    assert ids(registry.filter_models(min_context=10000)) == ["mid"]
    assert ids(registry.filter_models(capability="tools")) == ["small"]
    assert ids(registry.filter_models(capability="vision", status="tested")) == ["mid"]
    with pytest.raises(ValidationError, match="status"):
        registry.filter_models(status="done")
    with pytest.raises(ValidationError, match="size_range"):
        registry.filter_models(size_range=(20000, 5000))


def test_update_model_validates_and_changes_nothing_on_error(registry: ModelRegistry) -> None:
    registry.add_model({"id": "m", "tested_context": 4096})
    with pytest.raises(ValidationError) as info:
        registry.update_model("m", {"tested_context": 8192, "colour": "red"})
    assert info.value.field == "colour"
    with pytest.raises(ValidationError, match="untested, testing, tested, failed"):
        registry.update_model("m", {"tested_context": 8192, "test_status": "done"})
    with pytest.raises(ValidationError) as info:
        registry.update_model("m", {"tested_context": -5})
    assert info.value.field == "tested_context"
    with pytest.raises(ValidationError, match="ISO-8601"):
        registry.update_model("m", {"last_tested": "yesterday"})
    with pytest.raises(ValidationError, match="cannot be changed"):
        registry.update_model("m", {"id": "other"})
    assert registry.get_model("m").tested_context == 4096


def test_add_model_refuses_duplicates_and_bad_input(registry: ModelRegistry) -> None:
    registry.add_model({"id": "m", "host": "local", "host_url": "http://x"})
    with pytest.raises(ValidationError, match="already in the registry"):
        registry.add_model({"id": "m", "host": "local"})
    with pytest.raises(ValidationError, match="id"):
        registry.add_model({"name": "no id"})
    with pytest.raises(ValidationError) as info:
        registry.add_model({"id": "n", "size_mb": "big"})
    assert info.value.field == "size_mb"
    assert [m.id for m in registry.list_models()] == ["m"]


def test_statistics(registry: ModelRegistry) -> None:
    assert registry.get_statistics()["total"] == 0
    _scan(
        registry,
        _record("a", size_bytes=1024 * MIB, max_context_length=8192),
        _record("b", size_bytes=2048 * MIB, max_context_length=32768),
        _record("c", size_bytes=None, max_context_length=None),
    )
    registry.update_model("a", {"tested_context": 4096, "test_status": "tested"})
    registry.update_model("b", {"tested_context": 16384, "test_status": "tested"})
    registry.update_model("c", {"test_status": "failed"})
    _scan(registry, _record("d"), host="gpu")
    _scan(registry, host="gpu")
    stats = registry.get_statistics()
    assert stats["total"] == 4 and stats["tested"] == 2 and stats["failed"] == 1
    assert stats["untested"] == 1 and stats["testing"] == 0
    assert stats["avg_context"] == 10240
    assert stats["avg_declared_context"] == round((8192 + 32768 + 32768) / 3)
    assert stats["total_size_mb"] == 1024 + 2048 + 2000
    assert stats["hosts"] == 2 and stats["by_host"] == {"gpu": 1, "local": 3}
    assert stats["missing"] == 1
    assert len(registry) == 4 and "a" in registry


def test_scan_adds_refreshes_keeps_tests_and_marks_missing(registry: ModelRegistry) -> None:
    first = _scan(registry, _record("a"), _record("b"), _record("c"))
    assert first.added == ["a", "b", "c"] and first.counts()["updated"] == 0
    registry.update_model(
        "a", {"tested_context": 8192, "test_status": "tested", "last_known_bad_context": 9000}
    )
    second = _scan(
        registry,
        _record("a", size_bytes=2100 * MIB, capabilities=Capabilities(vision=True)),
        _record("b"),
        _record("d"),
    )
    assert (second.added, second.updated, second.missing, second.unchanged) == (
        ["d"],
        ["a"],
        ["c"],
        ["b"],
    )
    a = registry.get_model("a")
    assert a.size_mb == 2100.0 and a.capabilities == ["vision"]
    assert (a.tested_context, a.test_status, a.last_known_bad_context) == (8192, "tested", 9000)
    c = registry.get_model("c")
    assert not c.present and c.missing_since is not None
    assert [m.id for m in registry.list_models(include_missing=False)] == ["a", "b", "d"]
    vision = Capabilities(vision=True)
    third = _scan(
        registry,
        _record("a", size_bytes=2100 * MIB, capabilities=vision),
        _record("b"),
        _record("c"),
    )
    assert third.updated == ["c"] and third.missing == ["d"]
    assert registry.get_model("c").present and registry.get_model("c").missing_since is None
    hosts = registry.list_hosts()
    assert hosts[0]["name"] == "local" and hosts[0]["api_generation"] == "v1"


def test_scan_does_not_erase_what_a_poorer_api_did_not_report(registry: ModelRegistry) -> None:
    _scan(registry, _record("a", params_string="3B"))
    summary = _scan(
        registry, ModelRecord(key="a", size_bytes=2000 * MIB, display_name="A")
    )  # e.g. the OpenAI-compatible listing knows almost nothing
    m = registry.get_model("a")
    assert m.parameters == "3B" and m.declared_context == 32768 and m.quantization == "Q4_K_M"
    assert summary.updated == []


def test_a_failed_scan_changes_nothing(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = models_mod.merge_scan

    def merge_then_fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        real(*args, **kwargs)
        raise RuntimeError("connection lost mid-scan")

    monkeypatch.setattr(models_mod, "merge_scan", merge_then_fail)
    with pytest.raises(RuntimeError):
        _scan(registry, _record("a"), host="new-host")
    assert registry.list_models() == [] and registry.list_hosts() == []


def test_reset_test_data(registry: ModelRegistry) -> None:
    registry.add_model({"id": "m", "tested_context": 4096, "test_status": "tested", "tps": 9.0})
    m = registry.reset_test_data("m")
    assert (m.tested_context, m.test_status, m.tokens_per_second) == (None, "untested", None)


def test_upstream_field_aliases_are_accepted(registry: ModelRegistry) -> None:
    registry.add_model({"id": "m", "ctx_in": 8192})
    m = registry.update_model(
        "m",
        {"tested_max_context": 4096, "context_test_status": "completed", "ttft_seconds": 0.25},
    )
    assert (m.declared_context, m.tested_context, m.test_status) == (8192, 4096, "tested")
    assert m.time_to_first_token == 0.25
