"""``lmstrix serve`` in distributed mode, with the ``openai`` package as the client: the server
only queues and waits; a real `dramatiq lmstrix.workers` process runs the jobs; PostgreSQL holds
the rows and Redis carries doorbells, notifications and pieces.

Skips when Redis or PostgreSQL do not answer, except under CI=true, where it fails instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from helpers.dramatiq_worker import DramatiqWorkers, require_redis, worker_env
from helpers.openai_batches import answer, chat_line, file_lines, start, until_final, upload
from helpers.serve import ServerThread
from helpers.waiting import wait_for

from lmstrix.core.jobs import JobManager
from lmstrix.serve import create_app
from lmstrix.testing import LMStudioEmulator
from lmstrix.utils.config import Config

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

MODEL = "llama-3.2-1b-instruct"
CHAT_PATH = "/api/v0/chat/completions"
LONG = " ".join(f"word{i}" for i in range(300))


class Site:
    def __init__(self, tmp: Path, db_url: str, redis_url: str) -> None:
        self.host = f"sv{uuid.uuid4().hex[:6]}"
        self.db_url, self.redis_url = db_url, redis_url
        self.emu = LMStudioEmulator(clock="real", tokens_per_second=200.0, load_seconds=0.0)
        self.emu.start()
        self.config = self.config_for(self.host)
        env = worker_env(f"{self.host}={self.emu.url}", db_url, redis_url, tmp)
        self.workers = DramatiqWorkers(tmp, env)
        self.workers.start(self.host)
        with JobManager(self.config) as jobs:  # until it is alive, the server answers 503
            wait_for(lambda: jobs.workers(self.host), 60, "the dramatiq worker to register")
        self.server = ServerThread(create_app(self.config)).__enter__()

    def config_for(self, host: str) -> Config:
        return Config(
            {
                "hosts": [{"name": host, "url": self.emu.url}],
                "database": {"url": self.db_url},
                "redis": {"url": self.redis_url},
            }
        )

    def client(self, url: str | None = None) -> openai.OpenAI:
        base = (url or self.server.url) + "/v1"
        return openai.OpenAI(base_url=base, api_key="none", max_retries=0, timeout=60)

    def close(self) -> None:
        self.server.__exit__(None, None, None)
        self.workers.stop_all()
        self.emu.stop()


@pytest.fixture(scope="module")
def site(
    postgres_database_factory: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    s = Site(tmp_path_factory.mktemp("serve"), postgres_database_factory(), require_redis())
    yield s
    s.close()


def test_chat_plain_is_run_by_the_dramatiq_worker(site: Site) -> None:
    reply = site.client().chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "count to 6"}]
    )
    chat = reply.parse()
    assert chat.choices[0].message.content == "1 2 3 4 5 6"
    with JobManager(site.config) as jobs:
        job = jobs.get_job(reply.headers["x-lmstrix-job"])
        workers = {w["worker_id"]: w for w in jobs.workers(site.host)}
    assert job.status == "succeeded"
    assert workers[job.worker_id]["mode"] == "distributed"


def test_models_list_the_hosts_models(site: Site) -> None:
    site.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    entry = site.client().models.retrieve(MODEL).model_dump()
    assert entry["hosts"] == [site.host]
    assert entry["declared_context"] > 0


def test_chat_streamed_and_completions(site: Site) -> None:
    chunks = list(
        site.client().chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "count to 40"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.split() == [str(i) for i in range(1, 41)]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 40
    done = site.client().completions.create(model=MODEL, prompt="say distributed works")
    assert done.choices[0].text == "distributed works"


def test_errors_as_sdk_exceptions(site: Site) -> None:
    with pytest.raises(openai.NotFoundError):
        site.client().chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    # A second server whose only host no worker serves refuses at once with 503.
    idle = f"idle{uuid.uuid4().hex[:6]}"
    with (
        ServerThread(create_app(site.config_for(idle))) as other,
        pytest.raises(openai.InternalServerError) as unserved,
    ):
        site.client(other.url).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    assert unserved.value.status_code == 503
    assert unserved.value.code == "no_worker"
    assert f"lmstrix worker --host {idle}" in str(unserved.value)


def test_files_and_batches_run_by_the_dramatiq_worker(site: Site) -> None:
    client = site.client()
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    site.emu.fail_next(500, {"error": {"message": "engine crashed"}}, path=CHAT_PATH)
    lines = [chat_line("bad", "say one", MODEL)]
    lines += [chat_line(f"n{n}", f"count to {n}", MODEL) for n in (2, 4)]
    done = until_final(client, start(client, upload(client, lines)).id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)
    out = file_lines(client, done.output_file_id)
    assert [(line["custom_id"], answer(line)) for line in out] == [("n2", "1 2"), ("n4", "1 2 3 4")]
    assert [line["custom_id"] for line in file_lines(client, done.error_file_id)] == ["bad"]
    with JobManager(site.config) as jobs:
        job = jobs.get_job(out[0]["response"]["request_id"])
        workers = {w["worker_id"]: w for w in jobs.workers(site.host)}
    assert workers[job.worker_id]["mode"] == "distributed"


def test_a_batch_cancelled_while_the_worker_runs_it(site: Site) -> None:
    client = site.client()
    lines = [chat_line(f"long-{i}", f"repeat {LONG}", MODEL, max_tokens=400) for i in range(3)]
    batch = start(client, upload(client, lines))
    with JobManager(site.config) as jobs:
        wait_for(
            lambda: any(j.kind == "batch_item" for j in jobs.list_jobs(status=["running"])),
            60,
            "an item running",
        )
    client.batches.cancel(batch.id)
    done = until_final(client, batch.id)
    assert done.status == "cancelled"
    errors = file_lines(client, done.error_file_id)
    assert sorted(line["custom_id"] for line in errors) == ["long-0", "long-1", "long-2"]
    with pytest.raises(openai.BadRequestError) as purpose:
        client.files.create(file=("x.jsonl", b"{}\n"), purpose="assistants")
    assert purpose.value.param == "purpose"
