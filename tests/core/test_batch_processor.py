"""BatchProcessor over the queue: embedded workers, the emulator over HTTP, SQLite, PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers.configs import config_for
from helpers.dramatiq_worker import DramatiqWorkers, require_redis, worker_env
from helpers.slots import assert_host_discipline
from helpers.waiting import wait_for
from sqlalchemy import select, update

from lmstrix.api.exceptions import InferenceTimeoutError, ModelNotFoundError, ValidationError
from lmstrix.core.batch_processor import BatchNotFound, BatchProcessor, BatchValidationError
from lmstrix.core.inference_manager import RESULT_KEYS, InferenceManager
from lmstrix.db import Batch, Job, read_session, utcnow, write_session
from lmstrix.domain.openai_batch import Counts, next_status, parse_lines
from lmstrix.domain.scheduler import PRIORITY_BATCH
from lmstrix.jobs import batch_store
from lmstrix.testing import DEFAULT_MODELS, EmulatedModel, LMStudioEmulator
from lmstrix.utils.config import Config

MODEL = "llama-3.2-1b-instruct"
# Loads above 10 000 tokens fail ("insufficient resources"): a long prompt fails at run time
# while short ones load at the default 8192.
SMALL = EmulatedModel(key="small-model", max_context_length=32768, loadable_limit=10_000)


def request_line(custom_id: str, text: str, **body: Any) -> str:
    return json.dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": MODEL,
                "messages": [
                    {"role": "system", "content": "Be terse."},
                    {"role": "user", "content": text},
                ],
                **body,
            },
        }
    )


def jobs_of(db_url: str, batch_id: str) -> list[Any]:
    with read_session(db_url) as s:
        return list(
            s.execute(
                select(Job.custom_id, Job.kind, Job.priority, Job.status, Job.started_at)
                .where(Job.batch_id == batch_id)
                .order_by(Job.created_at)
            ).all()
        )


# -- process_batch --------------------------------------------------------------------------


def test_process_batch_keeps_order_and_infer_keys(
    make_emulator: Callable[..., LMStudioEmulator], database_url: str
) -> None:
    emu = make_emulator()
    prompts = [f"say answer {i}" for i in range(12)]
    with BatchProcessor(
        MODEL, batch_size=4, config=config_for(emu), database_url=database_url
    ) as bp:
        results = bp.process_batch(prompts, max_tokens=16)
        assert [tuple(r) for r in results] == [RESULT_KEYS] * 12
        assert [r["response"] for r in results] == [f"answer {i}" for i in range(12)]
        assert all(r["succeeded"] and r["error"] is None for r in results)
        (batch,) = bp.list_batches()
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 12, "completed": 12, "failed": 0}
    rows = jobs_of(database_url, batch["id"])
    assert {(r.kind, r.priority) for r in rows} == {("batch_item", PRIORITY_BATCH)}
    assert [r.custom_id for r in rows] == [f"prompt-{i}" for i in range(12)]
    assert_host_discipline(emu.counters)


def test_one_failing_prompt_does_not_fail_the_others(
    make_emulator: Callable[..., LMStudioEmulator], tmp_path: Path
) -> None:
    emu = make_emulator([SMALL])
    db_url = f"sqlite:///{tmp_path / 'b.db'}"
    prompts = ["say first", "", "say " + "word " * 12_000, "say last"]
    with BatchProcessor(SMALL.key, config=config_for(emu), database_url=db_url) as bp:
        results = bp.process_batch(prompts, max_tokens=16)
        batch = bp.list_batches()[0]
    assert [r["succeeded"] for r in results] == [True, False, False, True]
    assert [r["response"] for r in results] == ["first", "", "", "last"]
    assert "prompt" in results[1]["error"]  # refused before queueing: no job
    assert results[1]["job_id"] is None
    assert "load" in results[2]["error"].lower()  # failed on the host, as a job
    assert results[2]["job_id"]
    # only the three queued prompts are in the batch; the load failure counts as failed
    assert batch["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    assert batch["status"] == "completed"


def test_bad_options_or_unknown_model_raise_before_queueing(
    lmstudio_emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'b.db'}"
    config = config_for(lmstudio_emulator)
    with BatchProcessor(MODEL, config=config, database_url=db_url) as bp:
        with pytest.raises(ValidationError) as err:
            bp.process_batch(["say a", "say b"], temperature=7.0)
        assert err.value.field == "temperature"
        assert bp.process_batch([]) == []
        assert bp.list_batches() == []
    with (
        BatchProcessor("no-such-model", config=config, database_url=db_url) as bp,
        pytest.raises(ModelNotFoundError),
    ):
        bp.process_batch(["say a"])
    with pytest.raises(ValidationError):
        BatchProcessor(MODEL, max_workers=0, config=config, database_url=db_url)


def test_max_workers_is_how_many_hosts_a_batch_uses(
    make_emulator: Callable[..., LMStudioEmulator], tmp_path: Path
) -> None:
    a, b = make_emulator(), make_emulator()
    db_url = f"sqlite:///{tmp_path / 'b.db'}"
    for workers, hosts in ((2, {"h1", "h2"}), (1, None)):
        with BatchProcessor(
            MODEL, max_workers=workers, batch_size=8, config=config_for(a, b), database_url=db_url
        ) as bp:
            results = bp.process_batch([f"say {i}" for i in range(8)], max_tokens=8)
        used = {r["model_info"]["host"] for r in results}
        assert all(r["succeeded"] for r in results)
        if hosts is None:
            assert len(used) == 1
        else:
            assert used == hosts


def test_process_batch_timeout_cancels_the_rest(
    make_emulator: Callable[..., LMStudioEmulator], tmp_path: Path
) -> None:
    emu = make_emulator()
    db_url = f"sqlite:///{tmp_path / 'b.db'}"
    with BatchProcessor(MODEL, config=config_for(emu), database_url=db_url, timeout=0.5) as bp:
        bp.service.rescan()
        emu.configure(hang_requests=True)
        try:
            with pytest.raises(InferenceTimeoutError) as err:
                bp.process_batch(["say a", "say b", "say c"])
            assert "was cancelled" in str(err.value)
            (batch,) = bp.list_batches()
            assert batch["status"] in ("cancelling", "cancelled")
            assert {r.status for r in jobs_of(db_url, batch["id"])[1:]} == {"cancelled"}
        finally:
            emu.configure(hang_requests=False)
            emu.release_hangs()
        assert bp.wait_batch(batch["id"], timeout=30)["status"] == "cancelled"


# -- priority ---------------------------------------------------------------------------------


def test_interactive_call_overtakes_queued_batch_items(
    make_emulator: Callable[..., LMStudioEmulator], database_url: str
) -> None:
    emu = make_emulator()
    config = config_for(emu)
    manager = InferenceManager(timeout=30, config=config, database_url=database_url)
    bp = BatchProcessor(config=config, database_url=database_url)
    try:
        manager.service.rescan()
        emu.configure(hang_requests=True)  # the first batch item blocks on the host
        batch_id = bp.submit_jsonl([request_line(f"r{i}", f"say batch {i}") for i in range(5)])
        store = manager.service.store
        wait_for(lambda: emu.hanging >= 1 and store.counts().get("running") == 1)
        urgent = manager.submit(MODEL, "say urgent", max_tokens=8)
        emu.configure(hang_requests=False)
        emu.release_hangs()
        assert manager.wait(urgent.id).response == "urgent"
        final = bp.wait_batch(batch_id, timeout=30)
        started = store.get(urgent.id).started_at
    finally:
        manager.close()
        bp.close()
    assert final["status"] == "completed"
    rows = jobs_of(database_url, batch_id)
    assert started is not None and all(r.started_at is not None for r in rows)
    # the item already running finished first; every other queued item waited for the call
    assert rows[0].started_at < started
    assert all(started < r.started_at for r in rows[1:])


# -- OpenAI batch files -----------------------------------------------------------------------


def test_jsonl_batch_status_and_results(
    lmstudio_emulator: LMStudioEmulator, database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "in.jsonl"
    lines = [request_line(f"req-{i}", f"say reply {i}", max_tokens=16) for i in range(4)]
    lines.insert(2, "")  # blank lines are allowed
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with BatchProcessor(config=config_for(lmstudio_emulator), database_url=database_url) as bp:
        batch_id = bp.submit_jsonl(path, metadata={"job": "nightly"})
        assert batch_id.startswith("batch_")
        progress: list[dict[str, Any]] = []
        final = bp.wait_batch(batch_id, timeout=30, on_progress=progress.append)
        results = list(bp.batch_results(batch_id))
        assert bp.batch_status(batch_id) == final
    assert final["object"] == "batch" and final["endpoint"] == "/v1/chat/completions"
    assert final["status"] == "completed" and final["model"] == MODEL
    assert final["request_counts"] == {"total": 4, "completed": 4, "failed": 0}
    assert final["metadata"] == {"job": "nightly"} and final["input_file_id"] == str(path)
    assert final["created_at"] <= final["in_progress_at"] <= final["completed_at"]
    assert final["expires_at"] == final["created_at"] + 24 * 3600
    assert progress[-1]["request_counts"]["completed"] == 4
    assert [r["custom_id"] for r in results] == [f"req-{i}" for i in range(4)]
    for i, line in enumerate(results):
        assert set(line) == {"id", "custom_id", "response", "error"}
        assert line["id"].startswith("batch_req_") and line["error"] is None
        response = line["response"]
        assert response["status_code"] == 200 and response["request_id"]
        body = response["body"]
        assert body["object"] == "chat.completion" and body["model"] == MODEL
        assert body["choices"][0]["message"] == {"role": "assistant", "content": f"reply {i}"}
        usage = body["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert json.loads(json.dumps(results)) == results  # JSON lines, as written to a file


def test_jsonl_validation_is_all_or_nothing(
    lmstudio_emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'b.db'}"
    lines = [
        request_line("ok-1", "say fine"),
        '{"custom_id": "broken", ',
        request_line("bad-param", "say x", presence_penalty=0.5),
        request_line("ok-1", "say again"),
        json.dumps({"custom_id": "u", "method": "POST", "url": "/v1/embeddings", "body": {}}),
        json.dumps(
            {
                "custom_id": "chat",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": MODEL,
                    "messages": [
                        {"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "hello"},
                        {"role": "user", "content": "more"},
                    ],
                },
            }
        ),
        request_line("model", "say x").replace(MODEL, "no-such-model"),
        request_line("temp", "say x", temperature=9),
        "",
    ]
    with BatchProcessor(config=config_for(lmstudio_emulator), database_url=db_url) as bp:
        with pytest.raises(BatchValidationError) as err:
            bp.submit_jsonl("\n".join(lines[:7]))  # format problems first: lines 2-6
        assert [e.line for e in err.value.errors] == [2, 3, 4, 5, 6]
        codes = [e.code for e in err.value.errors]
        assert codes == [
            "invalid_json",
            "unsupported_parameter",
            "duplicate_custom_id",
            "invalid_url",
            "unsupported_value",
        ]
        msg = str(err.value)
        assert "5 problems, nothing was queued" in msg and "line 4: custom_id 'ok-1'" in msg
        assert "first on line 1" in msg
        # well-formed lines are then checked against the models and limits
        with pytest.raises(BatchValidationError) as err:
            bp.submit_jsonl([lines[0], lines[6], lines[7]])
        assert [(e.line, e.code) for e in err.value.errors] == [
            (2, "model_not_found"),
            (3, "invalid_value"),
        ]
        assert err.value.errors[1].param == "temperature"
        with pytest.raises(ValidationError, match="no such file"):
            bp.submit_jsonl(tmp_path / "missing.jsonl")
        with pytest.raises(BatchValidationError, match="no requests"):
            bp.submit_jsonl([""])
        assert bp.list_batches() == []
    with read_session(db_url) as s:
        assert s.scalars(select(Job.id)).all() == []


def test_cancel_batch(make_emulator: Callable[..., LMStudioEmulator], database_url: str) -> None:
    emu = make_emulator()
    with BatchProcessor(config=config_for(emu), database_url=database_url) as bp:
        bp.service.rescan()
        emu.configure(hang_requests=True)
        batch_id = bp.submit_jsonl([request_line(f"c{i}", f"say {i}") for i in range(4)])
        wait_for(lambda: emu.hanging >= 1 and bp.service.store.counts().get("running") == 1)
        cancelling = bp.cancel_batch(batch_id)
        assert cancelling["status"] == "cancelling" and cancelling["cancelling_at"]
        assert cancelling["request_counts"] == {"total": 4, "completed": 0, "failed": 3}
        emu.configure(hang_requests=False)
        emu.release_hangs()
        final = bp.wait_batch(batch_id, timeout=30)
        assert final["status"] == "cancelled" and final["cancelled_at"]
        assert bp.cancel_batch(batch_id)["status"] == "cancelled"  # idempotent
        results = list(bp.batch_results(batch_id))
    assert final["request_counts"]["total"] == 4
    assert final["request_counts"]["failed"] >= 3
    codes = [r["error"]["code"] for r in results if r["error"]]
    assert codes.count("batch_cancelled") >= 3


def test_expired_batch_and_unknown_ids(
    lmstudio_emulator: LMStudioEmulator, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_store, "PAGE", 2)  # results are read in pages: cross a boundary
    with BatchProcessor(config=config_for(lmstudio_emulator), database_url=database_url) as bp:
        # no worker runs these (as after `lmstrix submit batch` in embedded mode)
        batch_id = bp.submit_jsonl(
            [request_line(f"e{i}", "say x") for i in range(3)], start_worker=False
        )
        assert bp.batch_status(batch_id)["status"] == "in_progress"
        with write_session(database_url) as s:
            s.execute(
                update(Batch)
                .where(Batch.id == batch_id)
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
        status = bp.batch_status(batch_id)
        assert status["status"] == "expired" and status["expired_at"]
        assert status["request_counts"] == {"total": 3, "completed": 0, "failed": 3}
        results = list(bp.batch_results(batch_id))
        assert [r["error"]["code"] for r in results] == ["batch_expired"] * 3
        assert [r["custom_id"] for r in results] == ["e0", "e1", "e2"]
        with pytest.raises(ValidationError, match="is expired"):
            bp.cancel_batch(batch_id)
        for call in (bp.batch_status, bp.batch_results, bp.cancel_batch):
            with pytest.raises(BatchNotFound) as err:
                call("batch_nope")
            assert "batch_nope" in str(err.value)
    assert {r.status for r in jobs_of(database_url, batch_id)} == {"expired"}


def test_default_models_are_what_the_tests_assume() -> None:
    assert MODEL in {m.key for m in DEFAULT_MODELS}


# -- the format, without a queue --------------------------------------------------------------


def test_parse_lines_accepts_openai_variants() -> None:
    raw = {
        "custom_id": "x",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "Be "}]},
                {"role": "system", "content": "brief."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}],
                },
            ],
            "max_completion_tokens": 5,
            "stream": False,
            "n": 1,
            "user": "someone",
        },
    }
    (bl,) = parse_lines([raw], default_model="m")
    assert (bl.model, bl.prompt, bl.system_prompt) == ("m", "hi there", "Be \n\nbrief.")
    assert bl.params() == {"max_tokens": 5}
    bad = json.loads(json.dumps(raw))
    bad["body"].update(stream=True, n=2, model="")
    bad["body"]["messages"][2]["content"] = [{"type": "image_url", "image_url": {}}]
    with pytest.raises(BatchValidationError) as err:
        parse_lines([bad, "[1]"])
    assert [(e.line, e.param) for e in err.value.errors] == [
        (1, "stream"),
        (1, "n"),
        (1, "model"),
        (1, "body.messages[2].content"),
        (2, None),
    ]
    assert err.value.details["errors"][0]["code"] == "unsupported_value"


def test_next_status_transitions() -> None:
    now = utcnow()
    later = now + timedelta(hours=1)
    running = Counts(running=1, succeeded=2)
    done = Counts(succeeded=2, failed=1)
    assert next_status("in_progress", 3, running, now, later) == "in_progress"
    assert next_status("in_progress", 3, done, now, later) == "completed"
    assert next_status("in_progress", 4, done, now, later) == "in_progress"  # items to come
    assert next_status("in_progress", 3, running, later, now) == "expired"
    assert next_status("cancelling", 3, running, now, later) == "cancelling"
    assert next_status("cancelling", 3, Counts(cancelled=3), now, later) == "cancelled"
    assert next_status("completed", 3, running, later, now) == "completed"
    assert (done.completed, done.not_succeeded) == (2, 1)


# -- distributed mode: dramatiq worker processes, Redis, PostgreSQL ----------------------------


@pytest.fixture
def cluster(
    make_emulator: Callable[..., LMStudioEmulator],
    postgres_database_factory: Callable[[], str],
    tmp_path: Path,
) -> Iterator[Config]:
    """Two emulated hosts, each served by a real `dramatiq lmstrix.workers` process."""
    redis_url = require_redis()
    db_url = postgres_database_factory()
    tag = uuid.uuid4().hex[:6]
    hosts = {f"ba{tag}": make_emulator(), f"bb{tag}": make_emulator()}
    hosts_env = ",".join(f"{name}={emu.url}" for name, emu in hosts.items())
    with DramatiqWorkers(tmp_path, worker_env(hosts_env, db_url, redis_url, tmp_path)) as workers:
        for name in hosts:
            workers.start(name, f"worker-{name}.log")
        yield Config(
            {
                "hosts": [{"name": n, "url": e.url} for n, e in hosts.items()],
                "database": {"url": db_url},
                "redis": {"url": redis_url},
                "queue": {"retry_delays": [0.01]},
            }
        )


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
def test_batches_on_dramatiq_workers(cluster: Config) -> None:
    with BatchProcessor(MODEL, max_workers=2, batch_size=6, config=cluster, timeout=120) as bp:
        assert bp.service.distributed
        results = bp.process_batch([f"say d{i}" for i in range(12)], max_tokens=8)
        assert [r["response"] for r in results] == [f"d{i}" for i in range(12)]
        assert len({r["model_info"]["host"] for r in results}) == 2
        batch_id = bp.submit_jsonl([request_line(f"j{i}", f"say j{i}") for i in range(6)])
        final = bp.wait_batch(batch_id, timeout=120)
        lines = list(bp.batch_results(batch_id))
    assert final["status"] == "completed"
    assert final["request_counts"] == {"total": 6, "completed": 6, "failed": 0}
    contents = [x["response"]["body"]["choices"][0]["message"]["content"] for x in lines]
    assert contents == [f"j{i}" for i in range(6)]
