"""Every kind of host a user points lmstrix at, over HTTP: LM Studio 0.4, LM Studio 0.3 serving by
JIT only, a plain OpenAI-compatible server (the emulator's OpenAI-only mode) and llama.cpp's own
server with a real model. For each: scan, ``infer()``, a batch and a context test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.configs import config_for

from lmstrix.core.batch_processor import BatchProcessor
from lmstrix.core.context_tester import ContextTester
from lmstrix.core.inference_manager import InferenceManager
from lmstrix.core.scanner import Scanner
from lmstrix.testing import EmulatedModel, LMStudioEmulator
from lmstrix.testing.pytest_plugin import EmulatorFactory
from lmstrix.testing.real_model import real_model_unavailable_reason

EMULATED = EmulatedModel(
    key="acme/m-1b", max_context_length=16384, loadable_limit=12288, usable_limit=6000
)
SMOLLM2 = "smollm2-135m-instruct"


@dataclass
class HostKind:
    url: str
    model: str
    api: str
    load_control: bool
    emulator: LMStudioEmulator | None = None


@pytest.fixture(scope="module")
def llama_url() -> Iterator[str]:
    reason = real_model_unavailable_reason()
    if reason:
        pytest.skip(reason)
    from lmstrix.testing.llama_server import LlamaServer

    with LlamaServer(1024) as server:
        yield server.url


@pytest.fixture(
    params=[
        "lmstudio-0.4",
        "lmstudio-0.3-jit",
        "openai-only",
        pytest.param("llama.cpp", marks=[pytest.mark.real_model, pytest.mark.slow]),
    ]
)
def host(request: pytest.FixtureRequest, make_emulator: EmulatorFactory) -> HostKind:
    if request.param == "llama.cpp":
        url = request.getfixturevalue("llama_url")
        return HostKind(url, SMOLLM2, "openai", False)
    generation, api = {
        "lmstudio-0.4": ("0.4", "v1"),
        "lmstudio-0.3-jit": ("0.3", "v0"),
        "openai-only": ("openai", "openai"),
    }[request.param]
    emu = make_emulator([EMULATED], api_generation=generation, default_context_length=8192)
    return HostKind(emu.url, EMULATED.key, api, generation == "0.4", emu)


def _loads_and_unloads(kind: HostKind) -> list[int]:
    """Load and unload requests the emulator received over HTTP."""
    assert kind.emulator is not None
    by_endpoint = kind.emulator.counters.requests_by_endpoint
    return [by_endpoint["POST /api/v1/models/load"], by_endpoint["POST /api/v1/models/unload"]]


def test_scan_infer_batch_and_context_test(host: HostKind, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'lmstrix.db'}"
    config = config_for(("h", host.url), lmstudio={"max_retries": 0})

    (scan,) = Scanner(config=config, database_url=db_url).scan_hosts()
    assert scan.ok, scan.error
    assert scan.api_generation == host.api
    assert scan.capabilities is not None
    assert scan.capabilities["load_control"] is host.load_control

    with InferenceManager(config=config, database_url=db_url, timeout=300) as manager:
        result = manager.infer(host.model, "Say hello.", out_ctx=16, temperature=0.0)
    assert result.succeeded, result.error
    assert result.response.strip() and result.response_tokens > 0
    if host.api != "openai" or host.emulator is None:  # LM Studio and llama.cpp say the context
        assert result.model_info["context_length"] is not None

    with BatchProcessor(host.model, config=config, database_url=db_url, timeout=300) as bp:
        batch = bp.process_batch(["Say one.", "Say two.", "Say three."], max_tokens=8)
    assert [r["succeeded"] for r in batch] == [True] * 3, [r["error"] for r in batch]

    with ContextTester(config=config, database_url=db_url, min_context=256) as tester:
        tested = tester.test_model_context(host.model, threshold=4096)
        job = tester.service.store.get(tester.last_job_id or "")
    assert job.status == "succeeded", job.error_message
    assert tested["error"] is None and tested["iterations"] > 0
    assert job.result is not None
    uses = [p for p in tested["test_points"] if p["phase"] == "use"]
    assert uses
    if host.load_control:
        assert "note" not in job.result
    else:
        assert "loadable limit could not be searched" in job.result["note"]
        served = max(p["applied_context"] or 0 for p in tested["test_points"])
        assert all(p["context_size"] <= served for p in uses)
    if host.emulator is not None:
        assert host.emulator.counters.max_in_flight == 1  # one thing at a time per host
        if not host.load_control:
            assert _loads_and_unloads(host) == [0, 0]  # never loaded or unloaded over HTTP
