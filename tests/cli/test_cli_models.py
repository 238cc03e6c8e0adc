"""``lmstrix scan`` / ``list`` / ``hosts`` through click, against emulated hosts over real HTTP,
into real registries (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from lmstrix import __version__
from lmstrix.cli import cli
from lmstrix.cli.model_table import UNCONFIGURED
from lmstrix.core.models import ModelRegistry
from lmstrix.testing.backend import EmulatedModel
from lmstrix.testing.emulator import LMStudioEmulator
from lmstrix.testing.pytest_plugin import EmulatorFactory

SMALL = EmulatedModel("acme/small-1b", size_bytes=800_000_000, max_context_length=8192)
MID = EmulatedModel("acme/mid-4b", size_bytes=2_500_000_000, max_context_length=32768)
BIG = EmulatedModel("acme/big-8b", size_bytes=5_000_000_000, max_context_length=131072, vision=True)

Invoke = Callable[..., Result]


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def requests(emu: LMStudioEmulator) -> int:
    return sum(emu.counters.requests_by_endpoint.values())


@pytest.fixture
def run(database_url: str, tmp_path: Path) -> Invoke:
    """``run(args, hosts=[(name, url)...])``: the lmstrix CLI with only these hosts and this
    database; no user config, token or data dir leaks in."""

    def invoke(args: Sequence[str], hosts: Sequence[tuple[str, str]] = ()) -> Result:
        env: dict[str, str | None] = {
            "LMSTRIX_HOSTS": ",".join(f"{n}={u}" for n, u in hosts) or None,
            "LMSTRIX_DATABASE_URL": database_url,
            "LMSTRIX_CONFIG": None,
            "LMSTRIX_BASE_URL": None,
            "LM_API_TOKEN": None,
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_DATA_HOME": str(tmp_path / "data"),
            "COLUMNS": "200",  # rich tables: room for whole model names
        }
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def hosts(make_emulator: EmulatorFactory) -> tuple[LMStudioEmulator, LMStudioEmulator]:
    return make_emulator([SMALL, MID]), make_emulator([BIG])


def named(a: LMStudioEmulator, b: LMStudioEmulator) -> list[tuple[str, str]]:
    return [("a", a.url), ("b", b.url)]


def listed(run: Invoke, *args: str) -> list[dict[str, Any]]:
    result = run(["list", "--json", *args])
    assert result.exit_code == 0, result.output
    data: list[dict[str, Any]] = json.loads(result.stdout)
    return data


# -- scan --------------------------------------------------------------------------------------


def test_scan_json_reports_each_host(run: Invoke, hosts: tuple[LMStudioEmulator, ...]) -> None:
    a, b = hosts
    result = run(["scan", "--json"], named(a, b))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # --json: no progress lines
    data = json.loads(result.stdout)
    assert [set(d) for d in data] == [
        {
            "host",
            "url",
            "ok",
            "api_generation",
            "seconds",
            "error",
            "auth_required",
            "capabilities",
            "counts",
            "added",
            "updated",
            "missing",
            "unchanged",
        }
    ] * 2
    da, db = data
    assert (da["host"], da["url"], da["ok"], da["api_generation"], da["error"]) == (
        "a",
        a.url,
        True,
        "v1",
        None,
    )
    assert da["counts"] == {"added": 2, "updated": 0, "missing": 0, "unchanged": 0}
    assert da["added"] == ["acme/mid-4b", "acme/small-1b"]
    assert db["counts"] == {"added": 1, "updated": 0, "missing": 0, "unchanged": 0}
    assert isinstance(da["seconds"], float) and da["seconds"] >= 0

    a.remove_model("acme/mid-4b")
    again = json.loads(run(["scan", "--json"], named(a, b)).stdout)
    assert again[0]["counts"] == {"added": 0, "updated": 0, "missing": 1, "unchanged": 1}
    assert (again[0]["missing"], again[0]["unchanged"]) == (["acme/mid-4b"], ["acme/small-1b"])
    assert again[1]["counts"]["unchanged"] == 1


def test_scan_prints_one_progress_line_per_host_and_a_summary(
    run: Invoke, hosts: tuple[LMStudioEmulator, ...]
) -> None:
    a, b = hosts
    dead = closed_port_url()
    result = run(["scan"], [*named(a, b), ("c", dead)])
    assert result.exit_code == 0, result.output  # some hosts answered
    lines = result.stderr.splitlines()
    assert len(lines) == 3  # never wrapped, whatever the error text's length
    by_host = {line.split(" ", 1)[0]: line for line in lines}
    assert "2 added, 0 updated, 0 missing, 0 unchanged" in by_host["a"]
    assert "1 added" in by_host["b"]
    assert "unreachable" in by_host["c"] and dead in by_host["c"]
    assert result.stdout.strip() == "registry: 3 model(s), 0 tested, 0 missing"


def test_scan_with_no_host_answering_exits_4_with_one_line(run: Invoke) -> None:
    dead1, dead2 = closed_port_url(), closed_port_url()
    result = run(["scan", "--json"], [("x", dead1), ("y", dead2)])
    assert result.exit_code == 4
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: ") and dead1 in result.stderr
    assert dead2 in result.stderr
    data = json.loads(result.stdout)  # scripts still get the per-host report
    assert [(d["ok"], d["url"]) for d in data] == [(False, dead1), (False, dead2)]
    assert all(d["error"] for d in data)

    text = run(["scan"], [("x", dead1)])
    assert text.exit_code == 4
    assert text.stderr.splitlines()[-1].startswith("error: ")
    assert dead1 in text.stderr.splitlines()[-1]
    assert "Traceback" not in text.output


def test_scan_host_option_scans_only_that_url(
    run: Invoke, hosts: tuple[LMStudioEmulator, ...]
) -> None:
    a, b = hosts
    result = run(["scan", "--json", "--host", b.url], named(a, b))
    assert result.exit_code == 0, result.output
    assert [d["host"] for d in json.loads(result.stdout)] == ["b"]
    assert requests(a) == 0


# -- list --------------------------------------------------------------------------------------


def test_list_json_fields_and_it_does_not_contact_lm_studio(
    run: Invoke, hosts: tuple[LMStudioEmulator, ...]
) -> None:
    a, b = hosts
    assert listed(run) == []
    assert run(["scan", "--json"], named(a, b)).exit_code == 0
    a.reset_counters()
    b.reset_counters()

    models = listed(run)
    assert (requests(a), requests(b)) == (0, 0)
    assert [(m["host"], m["id"]) for m in models] == [
        ("b", "acme/big-8b"),
        ("a", "acme/mid-4b"),
        ("a", "acme/small-1b"),
    ]  # default sort: by id
    big = models[0]
    for field in (
        "id",
        "host",
        "host_url",
        "size_bytes",
        "size_mb",
        "declared_context",
        "tested_context",
        "last_known_good_context",
        "last_known_bad_context",
        "test_status",
        "tokens_per_second",
        "capabilities",
        "present",
        "qualified_id",
    ):
        assert field in big, field
    assert (big["host_url"], big["declared_context"], big["size_bytes"]) == (
        b.url,
        131072,
        5_000_000_000,
    )
    assert (big["capabilities"], big["test_status"], big["present"]) == (
        ["vision"],
        "untested",
        True,
    )
    assert big["qualified_id"] == "b/acme/big-8b"

    # The table reads the registry too.
    table = run(["list"], named(a, b))
    assert table.exit_code == 0 and "acme/big-8b" in table.stdout and "3 model(s)" in table.stdout
    assert (requests(a), requests(b)) == (0, 0)


def test_list_marks_the_models_of_hosts_no_longer_configured(
    run: Invoke, hosts: tuple[LMStudioEmulator, ...]
) -> None:
    a, b = hosts
    assert run(["scan"], named(a, b)).exit_code == 0
    # both configured, or none at all (nothing to judge by): nothing is marked
    for configured in (named(a, b), []):
        models = json.loads(run(["list", "--json"], configured).stdout)
        assert [m["host_configured"] for m in models] == [True, True, True]
        table = run(["list"], configured)
        assert UNCONFIGURED not in table.stdout and "no longer configured" not in table.stderr
    # b dropped from the configuration: its model is marked, in the table, under it and in JSON
    only_a = [("a", a.url)]
    models = json.loads(run(["list", "--json"], only_a).stdout)
    assert {m["id"]: m["host_configured"] for m in models} == {
        "acme/big-8b": False,
        "acme/mid-4b": True,
        "acme/small-1b": True,
    }
    table = run(["list"], only_a)
    assert table.exit_code == 0, table.output
    (marked,) = [line for line in table.stdout.splitlines() if UNCONFIGURED in line]
    assert "acme/big-8b" in marked
    assert "in the registry but no longer configured: b " in table.stderr
    assert "lmstrix hosts forget NAME" in table.stderr
    hosts_run = run(["hosts"], only_a)
    assert "in the registry but no longer configured: b " in hosts_run.stderr


def test_list_scan_rescans_first(run: Invoke, hosts: tuple[LMStudioEmulator, ...]) -> None:
    a, b = hosts
    assert listed(run) == []  # no hosts configured: nothing contacted
    result = run(["list", "--json", "--scan"], named(a, b))
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 3
    assert requests(a) > 0 and requests(b) > 0


def test_list_sort_filter_host_and_missing(
    run: Invoke, hosts: tuple[LMStudioEmulator, ...], database_url: str
) -> None:
    a, b = hosts
    assert run(["scan", "--json"], named(a, b)).exit_code == 0
    reg = ModelRegistry(database_url)
    reg.update_model("acme/mid-4b", {"tested_context": 20000, "test_status": "tested"})
    reg.update_model("acme/big-8b", {"tested_context": 60000, "test_status": "tested"})
    a.remove_model("acme/small-1b")
    assert run(["scan", "--json"], named(a, b)).exit_code == 0

    def ids(*args: str) -> list[str]:
        return [m["id"] for m in listed(run, *args)]

    assert ids("--sort", "size", "--desc") == ["acme/big-8b", "acme/mid-4b", "acme/small-1b"]
    assert ids("--sort", "size") == ["acme/small-1b", "acme/mid-4b", "acme/big-8b"]
    assert ids("--sort", "ctx", "--desc") == ["acme/big-8b", "acme/mid-4b", "acme/small-1b"]
    assert ids("--sort", "ctx") == ["acme/mid-4b", "acme/big-8b", "acme/small-1b"]  # None last
    assert ids("--filter", "status=tested", "--sort", "ctx") == ["acme/mid-4b", "acme/big-8b"]
    assert ids("--filter", "status=untested") == ["acme/small-1b"]
    assert ids("--filter", "status=tested", "--filter", "min_context=30000") == ["acme/big-8b"]
    assert ids("--filter", "capability=vision") == ["acme/big-8b"]
    assert ids("--host", "a") == ["acme/mid-4b", "acme/small-1b"]
    assert ids("--host", "a", "--no-missing") == ["acme/mid-4b"]
    assert ids("--no-missing") == ["acme/big-8b", "acme/mid-4b"]
    assert [m["present"] for m in listed(run, "--host", "a")] == [True, False]

    table = run(["list", "--host", "a"])
    assert "acme/small-1b (missing)" in table.stdout
    none = run(["list", "--filter", "status=failed"])
    assert none.exit_code == 0 and "No model matches" in none.stderr


@pytest.mark.parametrize(
    "bad",
    ["status", "colour=red", "status=", "status=done", "min_context=big", "capability=flying"],
)
def test_list_bad_filter_exits_2_naming_the_option(run: Invoke, bad: str) -> None:
    result = run(["list", "--filter", bad])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "--filter" in result.stderr
    assert result.stdout == ""


# -- hosts -------------------------------------------------------------------------------------


def test_hosts_json(run: Invoke, make_emulator: EmulatorFactory) -> None:
    new = make_emulator([SMALL, MID])
    old = make_emulator([BIG], api_generation="0.3")
    new.load("acme/mid-4b", 4096)
    dead = closed_port_url()
    result = run(["hosts", "--json"], [("new", new.url), ("old", old.url), ("dead", dead)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data) == ["new", "old", "dead"]
    assert {k: data["new"][k] for k in ("url", "reachable", "api_generation", "models")} == {
        "url": new.url,
        "reachable": True,
        "api_generation": "v1",
        "models": 2,
    }
    assert data["new"]["loaded_instances"] == 1 and data["new"]["latency_ms"] >= 0
    assert (data["old"]["api_generation"], data["old"]["models"]) == ("v0", 1)
    assert data["dead"]["reachable"] is False and dead in data["dead"]["error"]

    table = run(["hosts"], [("new", new.url), ("dead", dead)])
    assert table.exit_code == 0 and "new" in table.stdout and "dead" in table.stdout


def test_hosts_with_none_reachable_exits_4(run: Invoke) -> None:
    dead = closed_port_url()
    result = run(["hosts", "--json"], [("x", dead)])
    assert result.exit_code == 4
    assert json.loads(result.stdout)["x"]["reachable"] is False
    assert result.stderr.count("\n") == 1 and dead in result.stderr


# -- the group ---------------------------------------------------------------------------------


def test_version_and_help(run: Invoke) -> None:
    version = run(["--version"])
    assert version.exit_code == 0 and __version__ in version.stdout
    assert version.stdout.startswith("lmstrix")
    helped = run(["--help"])
    assert helped.exit_code == 0
    commands = helped.stdout.split("Commands:", 1)[1]
    listed_names = {line.split()[0] for line in commands.splitlines() if line.strip()}
    assert {"scan", "list", "hosts", "emulator", "registry", "db"} <= listed_names
    for command in ("scan", "list", "hosts"):
        sub = run([command, "--help"])
        assert sub.exit_code == 0 and "--json" in sub.stdout


# -- auth and host identity --------------------------------------------------------------------


def test_auth_required_exits_5_from_scan_and_hosts(
    run: Invoke, make_emulator: EmulatorFactory
) -> None:
    locked = make_emulator([SMALL], require_auth=True, api_tokens=["sk-right"])
    scan = run(["scan"], [("locked", locked.url)])
    assert scan.exit_code == 5, scan.output
    assert "locked" in scan.stderr and "auth required" in scan.stderr
    assert "LM_API_TOKEN" in scan.stderr.splitlines()[-1]
    probe = run(["hosts"], [("locked", locked.url)])
    assert probe.exit_code == 5 and "auth required" in probe.stdout
    data = json.loads(run(["hosts", "--json"], [("locked", locked.url)]).stdout)
    assert data["locked"]["auth_required"] is True and data["locked"]["reachable"] is True


def test_a_url_that_is_no_llm_server_is_one_line(
    run: Invoke, make_emulator: EmulatorFactory
) -> None:
    emu = make_emulator([SMALL])
    emu.configure(api_generation="openai")
    for path in ("/v1/models",):  # now every model list is missing: a 404 everywhere
        emu.fail_next(404, "<html>not here</html>", content_type="text/html", path=path)
    result = run(["scan"], [("web", emu.url)])
    assert result.exit_code == 4
    line = next(x for x in result.stderr.splitlines() if x.startswith("web"))
    assert "no LLM server: tried GET /api/v1/models" in line and "/v1/models (HTTP 404" in line


def test_the_same_server_under_two_names_is_one_host(
    run: Invoke, make_emulator: EmulatorFactory
) -> None:
    emu = make_emulator([SMALL, MID])
    assert run(["scan"], [("local", emu.url)]).exit_code == 0
    # the same server, spelled differently, under the name the user gives it later
    other_spelling = emu.url.replace("127.0.0.1", "localhost") + "/v1/"
    assert run(["scan"], [("studio", other_spelling)]).exit_code == 0
    models = listed(run)
    assert sorted((m["host"], m["id"]) for m in models) == [
        ("studio", "acme/mid-4b"),
        ("studio", "acme/small-1b"),
    ]


def test_repointing_a_name_keeps_results_with_their_server(
    run: Invoke, make_emulator: EmulatorFactory, database_url: str
) -> None:
    first, second = make_emulator([SMALL]), make_emulator([MID])
    assert run(["scan"], [("local", first.url)]).exit_code == 0
    ModelRegistry(database_url).update_model("acme/small-1b", {"tested_context": 4096})
    assert run(["scan"], [("local", second.url)]).exit_code == 0
    models = {m["id"]: m for m in listed(run, "--missing")}
    assert models["acme/mid-4b"]["host"] == "local" and models["acme/mid-4b"]["present"]
    old = models["acme/small-1b"]
    assert old["host"] == f"local@http://localhost:{first.port}"
    assert old["tested_context"] == 4096
    hosts_run = run(["hosts"], [("local", second.url)])
    assert "no longer configured: local@" in hosts_run.stderr

    asked = run(["hosts", "forget", old["host"]], [("local", second.url)])  # no terminal
    assert asked.exit_code == 2 and "--yes" in asked.stderr
    forgot = run(["hosts", "forget", old["host"], "--yes"], [("local", second.url)])
    assert forgot.exit_code == 0, forgot.output
    assert [m["id"] for m in listed(run, "--missing")] == ["acme/mid-4b"]
    unknown = run(["hosts", "forget", "nope", "--yes"], [("local", second.url)])
    assert unknown.exit_code == 2 and "nope" in unknown.stderr
