"""What callers of InferenceManager see when the host hangs (embedded mode, SQLite, emulator):
typed errors that say what happened, a bounded wait, and no prompt sent twice."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.configs import config_for

from lmstrix.api.exceptions import (
    HostDownError,
    LMStudioConnectionError,
    LMStudioTimeoutError,
)
from lmstrix.core.inference_manager import InferenceManager
from lmstrix.testing import LMStudioEmulator
from lmstrix.utils.config import Config

MODEL = "llama-3.2-1b-instruct"
CHAT = "POST /api/v0/chat/completions"


def test_env_sets_the_job_deadline_and_the_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMSTRIX_QUEUE__JOB_DEADLINE", "120")
    monkeypatch.setenv("LMSTRIX_QUEUE__HOST_DOWN_GRACE", "0")
    queue = Config.load().settings.queue
    assert (queue.job_deadline, queue.host_down_grace) == (120.0, 0.0)


def test_callers_of_a_hung_host_get_typed_errors_at_once(
    lmstudio_emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    emu = lmstudio_emulator
    # one slot: with S slots, S requests are on their way before the first one times out
    config = config_for(emu, queue={"host_down_grace": 0, "max_parallel": 1})
    # the manager's timeout is also its host's lmstudio.timeout: 1 s per request
    manager = InferenceManager(
        timeout=1, config=config, database_url=f"sqlite:///{tmp_path / 'hung.db'}"
    )
    try:
        assert manager.infer(MODEL, "say warm", max_tokens=8).succeeded  # the model is loaded
        emu.reset_counters()
        emu.configure(hang_requests=True)
        jobs = [manager.submit(MODEL, f"say {i}", max_tokens=8) for i in range(4)]
        errors = []
        for job in jobs:
            with pytest.raises((LMStudioConnectionError, LMStudioTimeoutError)) as err:
                manager.wait(job.id, timeout=120)
            errors.append(err.value)
    finally:
        emu.configure(hang_requests=False)
        emu.release_hangs()
        manager.close()
    first, *rest = errors
    assert isinstance(first, LMStudioTimeoutError) and first.seconds == 1
    assert all(isinstance(e, HostDownError) for e in rest)
    assert emu.counters.requests_by_endpoint[CHAT] == 1
