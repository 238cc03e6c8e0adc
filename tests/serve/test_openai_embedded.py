"""``lmstrix serve`` in embedded mode, with the official ``openai`` package as the client: the
server's own worker threads run the jobs on a SQLite file, the host is the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from helpers.configs import config_for
from helpers.serve import ServerThread
from helpers.waiting import wait_for

from lmstrix.core.jobs import JobManager
from lmstrix.serve import create_app
from lmstrix.testing import LMStudioEmulator
from lmstrix.utils.config import Config

MODEL = "llama-3.2-1b-instruct"
OTHER = "qwen/qwen3-4b"
LONG = " ".join(f"word{i}" for i in range(300))


def _config(emu: LMStudioEmulator, tmp: Path, **serve: object) -> Config:
    return config_for(emu, database={"url": f"sqlite:///{tmp / 'lmstrix.db'}"}, serve=dict(serve))


@pytest.fixture
def host() -> Iterator[LMStudioEmulator]:
    emu = LMStudioEmulator(clock="real", tokens_per_second=200.0, load_seconds=0.0).start()
    yield emu
    emu.stop()


@pytest.fixture
def config(host: LMStudioEmulator, tmp_path: Path) -> Config:
    return _config(host, tmp_path)


@pytest.fixture
def server(config: Config) -> Iterator[ServerThread]:
    with ServerThread(create_app(config)) as s:
        yield s


def _client(server: ServerThread, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60)


def test_models_lists_the_registry_with_lmstrix_fields(server: ServerThread) -> None:
    # The registry is filled by the first request's rescan; a chat makes sure it ran.
    client = _client(server)
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert MODEL in ids and "qwen/qwen3-4b" in ids
    entry = next(m for m in models.data if m.id == MODEL).model_dump()
    assert entry["object"] == "model"
    assert entry["hosts"] == ["h1"]
    assert entry["declared_context"] and entry["declared_context"] > 0
    assert "tested_context" in entry
    assert client.models.retrieve(MODEL).id == MODEL


def test_chat_plain_goes_through_the_queue(server: ServerThread, config: Config) -> None:
    client = _client(server)
    reply = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "count to 5"},
        ],
        max_tokens=20,
    )
    job_id = reply.headers["x-lmstrix-job"]
    chat = reply.parse()
    assert chat.choices[0].message.content == "1 2 3 4 5"
    assert chat.choices[0].finish_reason == "stop"
    assert chat.usage is not None and chat.usage.completion_tokens == 5
    assert chat.id == f"chatcmpl-{job_id}"
    with JobManager(config) as jobs:
        job = jobs.get_job(job_id)
    assert job.status == "succeeded" and job.kind == "inference"
    assert job.request is not None and job.request["system_prompt"] == "Be brief."


def test_earlier_turns_reach_the_model(server: ServerThread) -> None:
    client = _client(server)
    chat = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "The secret word is banana."},
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": "What is the secret word?"},
        ],
    )
    assert chat.choices[0].message.content == "The secret word is banana."


def test_chat_streamed_in_openai_chunks_with_usage(server: ServerThread) -> None:
    client = _client(server)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "count to 30"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.split() == [str(i) for i in range(1, 31)]
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 5
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 30
    assert len({c.id for c in chunks}) == 1


def test_raw_stream_ends_with_done(server: ServerThread) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "count to 3"}],
        "stream": True,
    }
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    assert '"usage"' not in "".join(events)  # only when stream_options asks for it


def test_completions_plain_and_streamed(server: ServerThread) -> None:
    client = _client(server)
    done = client.completions.create(model=MODEL, prompt="count to 4", max_tokens=3)
    assert done.object == "text_completion"
    assert done.choices[0].text == "1 2 3"
    assert done.choices[0].finish_reason == "length"
    parts = list(client.completions.create(model=MODEL, prompt="say hello there", stream=True))
    assert "".join(p.choices[0].text for p in parts if p.choices) == "hello there"


def test_errors_arrive_as_the_sdks_exception_types(server: ServerThread) -> None:
    client = _client(server)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "word " * 200_000}],
        )
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], temperature=7
        )
    assert "temperature" in str(bad.value)
    with pytest.raises(openai.BadRequestError) as streamed_bad:
        client.chat.completions.create(model="no-such-model", messages=[], stream=True)
    assert "messages" in str(streamed_bad.value)


def test_a_client_that_goes_away_cancels_its_streamed_job(
    server: ServerThread, config: Config
) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"repeat {LONG}"}],
        "stream": True,
        "max_tokens": 400,
    }
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as r:
        job_id = r.headers["x-lmstrix-job"]
        lines = r.iter_lines()
        next(line for line in lines if "word3" in line)  # the answer is flowing
    with JobManager(config) as jobs:
        wait_for(lambda: jobs.get_job(job_id).status == "cancelled", what="the job cancelled")
        assert len(jobs.get_job(job_id).result["response"].split()) < 300


def test_a_client_that_goes_away_cancels_its_plain_job(
    server: ServerThread, config: Config, host: LMStudioEmulator
) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"repeat {LONG}"}]}
    with JobManager(config) as jobs:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + "/v1/chat/completions", json=body, timeout=0.5)
        wait_for(lambda: bool(jobs.list_jobs()), what="the job queued")
        job_id = jobs.list_jobs()[0].id
        wait_for(lambda: jobs.get_job(job_id).status == "cancelled", what="the job cancelled")


def test_api_keys_are_required_when_configured(host: LMStudioEmulator, tmp_path: Path) -> None:
    config = _config(host, tmp_path, api_keys=["sk-right-one"])
    assert "sk-right-one" not in repr(config.settings)
    with ServerThread(create_app(config)) as server:
        with pytest.raises(openai.AuthenticationError) as refused:
            _client(server, "sk-wrong").models.list()
        assert refused.value.code == "invalid_api_key"
        assert "sk-wrong" not in str(refused.value)
        assert _client(server, "sk-right-one").models.list().object == "list"


def test_queue_bound_gives_429(host: LMStudioEmulator, tmp_path: Path) -> None:
    config = _config(host, tmp_path, max_queued=1)
    with ServerThread(create_app(config)) as server:
        client = _client(server)
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        # One job runs for a while and one waits behind it: the next is refused.
        with JobManager(config) as jobs:
            from lmstrix.core.inference_manager import InferenceManager

            with InferenceManager(config=config) as manager:
                running = manager.submit(MODEL, f"repeat {LONG}", max_tokens=400)
                wait_for(lambda: jobs.get_job(running.id).status == "running")
                # another model: it waits for the running job (the same one would join it)
                waiting = manager.submit(OTHER, "hi", start_worker=False)
                with pytest.raises(openai.RateLimitError) as full:
                    client.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": "hi"}]
                    )
                assert full.value.code == "queue_full"
                jobs.cancel_job(running.id)
                jobs.cancel_job(waiting.id)


def test_a_host_that_is_down_gives_503(tmp_path: Path) -> None:
    emu = LMStudioEmulator().start()
    url = emu.url
    config = _config(emu, tmp_path)
    with ServerThread(create_app(config)) as server:
        client = _client(server)
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        emu.stop()
        with pytest.raises(openai.InternalServerError) as down:
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi again"}]
            )
        assert down.value.status_code == 503
        assert url.split("//")[1] in str(down.value) or "h1" in str(down.value)
