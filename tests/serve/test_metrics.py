"""``GET /metrics``: Prometheus text, parsed with prometheus-client's own parser, whose figures
follow the jobs the server ran (embedded mode, the emulator as the host)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from helpers.configs import config_for
from helpers.serve import ServerThread
from helpers.waiting import wait_for
from prometheus_client.parser import text_string_to_metric_families

from lmstrix.core.inference_manager import InferenceManager
from lmstrix.core.jobs import JobManager
from lmstrix.serve import create_app
from lmstrix.testing import LMStudioEmulator
from lmstrix.utils.config import Config

MODEL = "llama-3.2-1b-instruct"
OTHER = "qwen/qwen3-4b"
LONG = " ".join(f"word{i}" for i in range(300))


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Config]:
    emu = LMStudioEmulator(clock="real", tokens_per_second=200.0, load_seconds=0.0).start()
    yield config_for(emu, database={"url": f"sqlite:///{tmp_path / 'lmstrix.db'}"})
    emu.stop()


def _samples(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = httpx.get(url + "/metrics", timeout=30).text
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _value(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    return sum(
        v for ls, v in samples.get(name, []) if all(ls.get(k) == x for k, x in labels.items())
    )


def test_metrics_follow_the_jobs_run(config: Config) -> None:
    with ServerThread(create_app(config)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        for prompt in ("count to 3", "count to 4"):
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": prompt}]
            )
        client.chat.completions.create(model=OTHER, messages=[{"role": "user", "content": "hi"}])
        got = _samples(server.url)
        assert _value(got, "lmstrix_jobs", status="succeeded", host="h1", kind="inference") == 3
        assert _value(got, "lmstrix_job_latency_seconds_count", host="h1", kind="inference") == 3
        assert _value(got, "lmstrix_job_latency_seconds_bucket", host="h1", le="+Inf") == 3
        assert _value(got, "lmstrix_time_to_first_token_seconds_count", host="h1") == 3
        # MODEL was loaded once, then OTHER replaced it: two loads, one swap.
        assert _value(got, "lmstrix_model_loads", host="h1") == 2
        assert _value(got, "lmstrix_model_swaps", host="h1") == 1
        assert _value(got, "lmstrix_model_load_seconds_count", host="h1") == 2
        assert _value(got, "lmstrix_tokens_per_second", host="h1", model=MODEL) > 0
        assert _value(got, "lmstrix_workers", host="h1", mode="embedded") == 1
        assert _value(got, "lmstrix_queue_depth", host="h1") == 0

        with InferenceManager(config=config) as manager, JobManager(config) as jobs:
            running = manager.submit(MODEL, f"repeat {LONG}", max_tokens=400)
            wait_for(lambda: jobs.get_job(running.id).status == "running")
            waiting = manager.submit(OTHER, "hi", start_worker=False)
            got = _samples(server.url)
            assert _value(got, "lmstrix_queue_depth", host="h1", model=OTHER) == 1
            assert _value(got, "lmstrix_queue_oldest_wait_seconds", host="h1", model=OTHER) >= 0
            assert _value(got, "lmstrix_jobs", status="running", host="h1") == 1
            jobs.cancel_job(running.id)
            jobs.cancel_job(waiting.id)
