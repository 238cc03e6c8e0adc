"""Files and batches through ``lmstrix serve`` in embedded mode, with the official ``openai``
package as the client: upload, create, poll, download the output and error files, cancel, list,
and the refusals as the SDK's exception types. The host is the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from helpers.configs import config_for
from helpers.openai_batches import (
    answer,
    chat_line,
    file_lines,
    jsonl,
    start,
    until_final,
    upload,
)
from helpers.serve import ServerThread
from helpers.waiting import wait_for

from lmstrix.core.jobs import JobManager
from lmstrix.serve import create_app
from lmstrix.testing import LMStudioEmulator
from lmstrix.utils.config import Config

MODEL = "llama-3.2-1b-instruct"
CHAT_PATH = "/api/v0/chat/completions"
LONG = " ".join(f"word{i}" for i in range(300))


@pytest.fixture
def host() -> Iterator[LMStudioEmulator]:
    emu = LMStudioEmulator(clock="real", tokens_per_second=200.0, load_seconds=0.0).start()
    yield emu
    emu.stop()


def _config(emu: LMStudioEmulator, tmp: Path, **serve: object) -> Config:
    return config_for(emu, database={"url": f"sqlite:///{tmp / 'lmstrix.db'}"}, serve=dict(serve))


@pytest.fixture
def config(host: LMStudioEmulator, tmp_path: Path) -> Config:
    return _config(host, tmp_path)


@pytest.fixture
def client(config: Config) -> Iterator[openai.OpenAI]:
    with ServerThread(create_app(config)) as server:
        yield openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=60)


def test_upload_then_read_the_file_back(client: openai.OpenAI) -> None:
    lines = [chat_line("a", "say hi", MODEL)]
    made = client.files.create(file=("mine.jsonl", jsonl(lines)), purpose="batch")
    assert made.id.startswith("file-") and made.purpose == "batch"
    assert made.filename == "mine.jsonl" and made.bytes == len(jsonl(lines))
    assert client.files.retrieve(made.id).bytes == made.bytes
    assert client.files.content(made.id).content == jsonl(lines)
    assert made.id in [f.id for f in client.files.list()]


def test_a_batch_runs_to_completion_and_its_output_file_holds_the_answers(
    client: openai.OpenAI, config: Config
) -> None:
    lines = [chat_line(f"req-{n}", f"count to {n}", MODEL, max_tokens=20) for n in (3, 5, 2)]
    file_id = upload(client, lines)
    batch = start(client, file_id)
    assert batch.input_file_id == file_id and batch.endpoint == "/v1/chat/completions"
    assert batch.request_counts is not None and batch.request_counts.total == 3
    done = until_final(client, batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None and done.request_counts.completed == 3
    assert done.error_file_id is None
    with pytest.raises(openai.BadRequestError):  # a completed batch cannot be cancelled
        client.batches.cancel(batch.id)
    out = file_lines(client, done.output_file_id)
    assert [line["custom_id"] for line in out] == ["req-3", "req-5", "req-2"]
    assert [answer(line) for line in out] == ["1 2 3", "1 2 3 4 5", "1 2"]
    assert all(line["response"]["status_code"] == 200 for line in out)
    output = client.files.retrieve(str(done.output_file_id))
    assert output.purpose == "batch_output"
    assert output.bytes == len(client.files.content(output.id).content)
    with JobManager(config) as jobs:  # the items were queue jobs like any other
        job = jobs.get_job(out[0]["response"]["request_id"])
    assert job.kind == "batch_item" and job.status == "succeeded"


def test_a_failing_line_goes_to_the_error_file(
    client: openai.OpenAI, host: LMStudioEmulator
) -> None:
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    host.fail_next(500, {"error": {"message": "engine crashed"}}, path=CHAT_PATH)
    lines = [chat_line("bad", "say one", MODEL), chat_line("good", "say two", MODEL)]
    done = until_final(client, start(client, upload(client, lines)).id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 1)
    assert [
        (line["custom_id"], answer(line)) for line in file_lines(client, done.output_file_id)
    ] == [("good", "two")]
    errors = file_lines(client, done.error_file_id)
    assert [line["custom_id"] for line in errors] == ["bad"]
    assert errors[0]["error"] is not None and errors[0]["response"]["status_code"] >= 500


def test_completions_batches_answer_with_text_completions(client: openai.OpenAI) -> None:
    lines = [
        {
            "custom_id": "c1",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": MODEL, "prompt": "say done"},
        }
    ]
    done = until_final(client, start(client, upload(client, lines), "/v1/completions").id)
    (line,) = file_lines(client, done.output_file_id)
    assert line["response"]["body"]["object"] == "text_completion"
    assert answer(line) == "done"


def test_cancel_stops_the_batch_and_its_lines_end_in_the_error_file(
    client: openai.OpenAI, config: Config
) -> None:
    lines = [chat_line(f"long-{i}", f"repeat {LONG}", MODEL, max_tokens=400) for i in range(3)]
    batch = start(client, upload(client, lines))
    with JobManager(config) as jobs:
        wait_for(
            lambda: any(j.status == "running" for j in jobs.list_jobs(status=["running"])),
            what="the first item running",
        )
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    done = until_final(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at is not None
    errors = file_lines(client, done.error_file_id)
    assert sorted(line["custom_id"] for line in errors) == ["long-0", "long-1", "long-2"]
    assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}
    assert client.batches.cancel(batch.id).status == "cancelled"  # asking again is harmless


def test_batches_list_pages_newest_first(client: openai.OpenAI) -> None:
    ids = [start(client, upload(client, [chat_line("x", f"say {i}", MODEL)])).id for i in range(3)]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[::-1][:2] and first.has_more
    assert [b.id for b in client.batches.list(limit=2, after=ids[1]).data] == [ids[0]]
    assert [b.id for b in client.batches.list(limit=1)][: len(ids)] == ids[::-1]  # auto-paging
    for batch_id in ids:
        until_final(client, batch_id)


def test_refusals_arrive_as_the_sdks_exception_types(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as purpose:
        client.files.create(file=("x.jsonl", b"{}\n"), purpose="fine-tune")
    assert purpose.value.param == "purpose"
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-nosuchfile")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nosuchbatch")
    with pytest.raises(openai.NotFoundError):
        start(client, "file-nosuchfile")
    good = upload(client, [chat_line("a", "say hi", MODEL)])
    with pytest.raises(openai.BadRequestError) as endpoint:
        start(client, good, "/v1/embeddings")
    assert endpoint.value.param == "endpoint"
    with pytest.raises(openai.BadRequestError) as window:
        client.batches.create(
            input_file_id=good,
            endpoint="/v1/chat/completions",
            completion_window="1h",  # type: ignore[arg-type]
        )
    assert window.value.param == "completion_window"
    unknown = upload(client, [chat_line("a", "say hi", MODEL), chat_line("b", "hi", "nope-x")])
    with pytest.raises(openai.BadRequestError) as model:
        start(client, unknown)
    assert "line 2" in str(model.value) and "nope-x" in str(model.value)
    broken = upload(client, [chat_line("a", "say hi", MODEL), {"custom_id": "b"}])
    with pytest.raises(openai.BadRequestError) as form:
        start(client, broken)
    assert "line 2: method must be 'POST'" in str(form.value)
    assert client.batches.list().data == []  # nothing was queued


def test_an_upload_over_the_bound_is_refused_with_413(
    host: LMStudioEmulator, tmp_path: Path
) -> None:
    config = _config(host, tmp_path, max_file_bytes=1000)
    line = chat_line("a", "say hi", MODEL)
    with ServerThread(create_app(config)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as big:
            client.files.create(file=("big.jsonl", jsonl([line] * 2000)), purpose="batch")
        assert big.value.status_code == 413
        assert "max_file_bytes" in str(big.value)
        assert client.files.list().data == []
        assert upload(client, [line]).startswith("file-")
