"""``Scanner`` over real HTTP against emulated LM Studio hosts, into real registries
(SQLite and PostgreSQL through the ``database_url`` fixture)."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import replace

import pytest

from lmstrix.api.exceptions import RegistryError
from lmstrix.core.models import Model
from lmstrix.core.scanner import HostScan, Scanner
from lmstrix.testing.backend import EmulatedModel
from lmstrix.testing.emulator import LMStudioEmulator
from lmstrix.testing.pytest_plugin import EmulatorFactory
from lmstrix.utils.config import Config

SMALL = EmulatedModel("acme/small-1b", size_bytes=800_000_000, max_context_length=8192)
BIG = EmulatedModel(
    "acme/big-8b", type="vlm", size_bytes=5_000_000_000, max_context_length=32768, vision=True
)
SHARED = EmulatedModel("qwen/qwen3-4b", size_bytes=2_500_000_000, tool_use=True)
SORTED_A = ["acme/small-1b", "qwen/qwen3-4b"]


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (the port was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def scanner_for(database_url: str, hosts: Sequence[tuple[str, str]], **kw: object) -> Scanner:
    config = Config({"hosts": [{"name": n, "url": u} for n, u in hosts]})
    return Scanner(config=config, database_url=database_url, **kw)  # type: ignore[arg-type]


def keys(models: Sequence[Model]) -> list[tuple[str, str]]:
    return [(m.host, m.id) for m in models]


def requests(emu: LMStudioEmulator) -> int:
    return sum(emu.counters.requests_by_endpoint.values())


@pytest.fixture
def two_hosts(make_emulator: EmulatorFactory) -> tuple[LMStudioEmulator, LMStudioEmulator]:
    return make_emulator([SMALL, SHARED]), make_emulator([BIG, SHARED])


def test_scanning_two_hosts_adds_each_hosts_models(
    database_url: str, two_hosts: tuple[LMStudioEmulator, LMStudioEmulator]
) -> None:
    a, b = two_hosts
    scanner = scanner_for(database_url, [("a", a.url), ("b", b.url)])
    seen: list[str] = []
    results = scanner.scan_hosts(on_host=lambda r: seen.append(r.host))

    assert sorted(seen) == ["a", "b"]
    assert [(r.host, r.url, r.ok, r.api_generation) for r in results] == [
        ("a", a.url, True, "v1"),
        ("b", b.url, True, "v1"),
    ]
    assert scanner.last_scan == results
    assert results[0].summary is not None and results[1].summary is not None
    assert results[0].summary.added == ["acme/small-1b", "qwen/qwen3-4b"]
    assert results[1].summary.added == ["acme/big-8b", "qwen/qwen3-4b"]
    assert results[0].to_dict()["counts"] == {
        "added": 2,
        "updated": 0,
        "missing": 0,
        "unchanged": 0,
    }

    models = scanner.registry.list_models()
    assert keys(models) == [
        ("a", "acme/small-1b"),
        ("a", "qwen/qwen3-4b"),
        ("b", "acme/big-8b"),
        ("b", "qwen/qwen3-4b"),
    ]
    big = scanner.registry.get_model("acme/big-8b")
    assert (big.host_url, big.type, big.declared_context, big.size_bytes) == (
        b.url,
        "llm",  # LM Studio's v1 API calls a vision model an llm with the vision capability
        32768,
        5_000_000_000,
    )
    assert big.capabilities == ["vision"] and big.present and big.test_status == "untested"
    assert scanner.registry.get_model("qwen/qwen3-4b", host="a").capabilities == ["tools"]
    hosts = {h["name"]: h for h in scanner.registry.list_hosts()}
    assert set(hosts) == {"a", "b"}


def test_rescan_without_change_reports_everything_unchanged(
    database_url: str, two_hosts: tuple[LMStudioEmulator, LMStudioEmulator]
) -> None:
    a, b = two_hosts
    scanner = scanner_for(database_url, [("a", a.url), ("b", b.url)])
    scanner.scan_hosts()
    before = {m.qualified_id: m for m in scanner.registry.list_models()}
    again = scanner.scan_hosts()
    for r in again:
        assert r.to_dict()["counts"] == {"added": 0, "updated": 0, "missing": 0, "unchanged": 2}
        assert r.to_dict()["added"] == r.to_dict()["updated"] == r.to_dict()["missing"] == []
    after = {m.qualified_id: m for m in scanner.registry.list_models()}
    assert set(after) == set(before)
    for qid, m in after.items():
        assert m.first_seen == before[qid].first_seen
        assert m.declared_context == before[qid].declared_context


def test_changed_declared_context_is_updated_and_test_data_kept(
    database_url: str, make_emulator: EmulatorFactory
) -> None:
    a = make_emulator([SMALL, SHARED])
    scanner = scanner_for(database_url, [("a", a.url)])
    scanner.scan_hosts()
    scanner.registry.update_model(
        "acme/small-1b", {"tested_context": 6000, "test_status": "tested"}, host="a"
    )
    a.add_model(replace(SMALL, max_context_length=16384))  # same key: the card changed

    (result,) = scanner.scan_hosts()
    assert result.summary is not None
    assert (result.summary.updated, result.summary.unchanged) == (
        ["acme/small-1b"],
        ["qwen/qwen3-4b"],
    )
    m = scanner.registry.get_model("acme/small-1b")
    assert (m.declared_context, m.tested_context, m.test_status) == (16384, 6000, "tested")


def test_removed_model_is_marked_missing_keeps_its_tests_and_comes_back_as_updated(
    database_url: str, two_hosts: tuple[LMStudioEmulator, LMStudioEmulator]
) -> None:
    a, b = two_hosts
    scanner = scanner_for(database_url, [("a", a.url), ("b", b.url)])
    scanner.scan_hosts()
    reg = scanner.registry
    reg.update_model(
        "qwen/qwen3-4b",
        {"tested_context": 12000, "test_status": "tested", "tokens_per_second": 42.5},
        host="a",
    )
    a.remove_model("qwen/qwen3-4b")

    ra, rb = scanner.scan_hosts()
    assert ra.summary is not None and rb.summary is not None
    assert (ra.summary.missing, ra.summary.unchanged) == (["qwen/qwen3-4b"], ["acme/small-1b"])
    assert rb.summary.missing == []  # the same key on the other host is untouched
    gone = reg.get_model("qwen/qwen3-4b", host="a")
    assert not gone.present and gone.missing_since is not None
    assert (gone.tested_context, gone.test_status, gone.tokens_per_second) == (
        12000,
        "tested",
        42.5,
    )
    assert reg.get_model("qwen/qwen3-4b", host="b").present
    assert ("a", "qwen/qwen3-4b") in keys(reg.list_models())
    assert ("a", "qwen/qwen3-4b") not in keys(reg.list_models(include_missing=False))
    assert reg.get_statistics()["missing"] == 1

    # Still gone: not reported as newly missing again, and not unchanged either.
    ra, _ = scanner.scan_hosts()
    assert ra.to_dict()["counts"] == {"added": 0, "updated": 0, "missing": 0, "unchanged": 1}

    a.add_model(SHARED)
    ra, _ = scanner.scan_hosts()
    assert ra.summary is not None
    assert (ra.summary.added, ra.summary.updated) == ([], ["qwen/qwen3-4b"])
    back = reg.get_model("qwen/qwen3-4b", host="a")
    assert back.present and back.missing_since is None
    assert (back.tested_context, back.test_status) == (12000, "tested")
    assert back.first_seen == gone.first_seen


def test_unreachable_host_reports_an_error_and_keeps_its_models(
    database_url: str, two_hosts: tuple[LMStudioEmulator, LMStudioEmulator]
) -> None:
    a, b = two_hosts
    scanner = scanner_for(database_url, [("a", a.url), ("b", b.url)])
    scanner.scan_hosts()
    b.stop()

    ra, rb = scanner.scan_hosts()
    assert ra.ok and ra.summary is not None and ra.summary.unchanged == SORTED_A
    assert not rb.ok and rb.summary is None and rb.api_generation is None
    assert rb.error is not None and b.url in rb.error
    # Reported on the refusal itself, not after waiting out a timeout.
    assert "connection refused" in rb.error and "timeout" not in rb.error
    d = rb.to_dict()
    assert d["ok"] is False and d["error"] == rb.error
    assert d["counts"] == {"added": 0, "updated": 0, "missing": 0, "unchanged": 0}
    assert d["added"] == d["updated"] == d["missing"] == d["unchanged"] == []
    on_b = scanner.registry.list_models(host="b")
    assert keys(on_b) == [("b", "acme/big-8b"), ("b", "qwen/qwen3-4b")]
    assert all(m.present for m in on_b)
    assert scanner.registry.get_statistics()["missing"] == 0


def test_a_never_reached_host_adds_nothing_and_the_others_still_scan(
    database_url: str, make_emulator: EmulatorFactory
) -> None:
    a = make_emulator([SMALL])
    dead = closed_port_url()
    scanner = scanner_for(database_url, [("dead", dead), ("a", a.url)])
    rd, ra = scanner.scan_hosts()
    assert not rd.ok and rd.error is not None and dead in rd.error
    assert ra.ok and ra.summary is not None and ra.summary.added == ["acme/small-1b"]
    assert keys(scanner.registry.list_models()) == [("a", "acme/small-1b")]


def test_scan_models_without_refresh_does_not_contact_hosts(
    database_url: str, two_hosts: tuple[LMStudioEmulator, LMStudioEmulator]
) -> None:
    a, b = two_hosts
    scanner = scanner_for(database_url, [("a", a.url), ("b", b.url)])
    assert scanner.scan_models(refresh=False) == []
    assert requests(a) == requests(b) == 0

    refreshed = scanner.scan_models()
    assert len(refreshed) == 4 and requests(a) > 0 and requests(b) > 0
    a.add_model(BIG)
    counts = requests(a), requests(b)
    cached = scanner.scan_models(refresh=False)
    assert (requests(a), requests(b)) == counts
    assert keys(cached) == keys(refreshed)  # BIG on a is not seen without a refresh
    assert ("a", "acme/big-8b") in keys(scanner.scan_models(refresh=True))


def test_base_url_scans_only_that_url_under_its_configured_name(
    database_url: str, two_hosts: tuple[LMStudioEmulator, LMStudioEmulator]
) -> None:
    a, b = two_hosts
    scanner = scanner_for(database_url, [("a", a.url), ("b", b.url)], base_url=b.url)
    (result,) = scanner.scan_hosts()
    assert result.host == "b" and requests(a) == 0
    assert {m.host for m in scanner.registry.list_models()} == {"b"}

    other = scanner_for(database_url, [("a", a.url)], base_url=b.url)
    (adhoc,) = other.scan_hosts()
    assert adhoc.ok and adhoc.host == f"127.0.0.1_{b.port}"


def test_check_health_reports_every_host(database_url: str, make_emulator: EmulatorFactory) -> None:
    new = make_emulator([SMALL, BIG])
    old = make_emulator([SHARED], api_generation="0.3")
    new.load("acme/small-1b", 4096)
    dead = closed_port_url()
    scanner = scanner_for(database_url, [("new", new.url), ("old", old.url), ("dead", dead)])

    health = scanner.check_health()
    assert list(health) == ["new", "old", "dead"]
    fields = {
        "url",
        "reachable",
        "is_lmstudio",
        "api_generation",
        "models",
        "loaded_instances",
        "latency_ms",
        "error",
        "auth_required",
        "capabilities",
    }
    assert all(set(h) == fields for h in health.values())
    assert health["new"]["capabilities"]["load_control"] is True
    assert health["new"]["capabilities"]["parallel"] == 4  # LM Studio 0.4's default slots
    assert health["old"]["capabilities"]["load_control"] is False
    assert health["dead"]["capabilities"] is None and not health["dead"]["auth_required"]
    n, o, d = health["new"], health["old"], health["dead"]
    assert (n["url"], n["reachable"], n["api_generation"], n["models"], n["loaded_instances"]) == (
        new.url,
        True,
        "v1",
        2,
        1,
    )
    assert (o["reachable"], o["api_generation"], o["models"], o["loaded_instances"]) == (
        True,
        "v0",
        1,
        0,
    )
    for h in (n, o):
        assert h["is_lmstudio"] is True and h["error"] is None
        assert isinstance(h["latency_ms"], float) and h["latency_ms"] > 0  # measured
    assert (d["reachable"], d["api_generation"], d["models"], d["latency_ms"]) == (
        False,
        None,
        0,
        None,
    )
    assert dead in d["error"]
    # Probing is read-only: nothing lands in the registry.
    assert scanner.registry.list_models() == []


def test_a_v0_host_scans_too(database_url: str, make_emulator: EmulatorFactory) -> None:
    old = make_emulator([SMALL], api_generation="0.3")
    (result,) = scanner_for(database_url, [("old", old.url)]).scan_hosts()
    assert isinstance(result, HostScan)
    assert (result.ok, result.api_generation) == (True, "v0")
    assert result.summary is not None and result.summary.added == ["acme/small-1b"]


def test_a_registry_failure_is_raised_not_reported_as_an_unreachable_host(
    database_url: str, make_emulator: EmulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = make_emulator([SMALL])
    scanner = scanner_for(database_url, [("a", a.url)])

    def broken(*args: object, **kwargs: object) -> None:
        raise RegistryError("database is locked", database="x")

    monkeypatch.setattr(scanner.registry, "upsert_from_scan", broken)
    with pytest.raises(RegistryError, match="locked"):
        scanner.scan_hosts()
