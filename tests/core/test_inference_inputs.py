"""Bad input to infer() and submit_inference(): a typed error naming the field, and no job row.
``context_data``: named blocks before the prompt, as the host receives them, in the budget."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from helpers.configs import config_for

from lmstrix.api.exceptions import ContextLimitExceededError, ValidationError
from lmstrix.core.batch_processor import BatchProcessor
from lmstrix.core.inference_manager import AsyncInferenceManager, InferenceManager
from lmstrix.domain.requests import InferenceOptions
from lmstrix.testing import LMStudioEmulator
from lmstrix.testing.rules import fact_sentence, question

MODEL = "llama-3.2-1b-instruct"


@pytest.fixture
def manager(lmstudio_emulator: LMStudioEmulator, database_url: str) -> InferenceManager:
    m = InferenceManager(
        timeout=30, config=config_for(lmstudio_emulator.url), database_url=database_url
    )
    m.service.rescan()  # the registry knows the model: a refusal is about the value alone
    yield m  # type: ignore[misc]
    m.close()


BAD_VALUES: list[tuple[dict[str, Any], str, str]] = [
    ({"system_prompt": 123}, "system_prompt", "must be a string, not int"),
    ({"context_data": {"a": object()}}, "context_data['a']", "text (str) or a file path"),
    ({"context_data": {"a": b"bytes"}}, "context_data['a']", "not bytes"),
    ({"context_data": "just text"}, "context_data", "must be a dict of block names"),
    ({"context_data": {"": "x"}}, "context_data", "non-empty strings on one line"),
    ({"context_data": {1: "x"}}, "context_data", "non-empty strings on one line"),
    ({"top_k": "5"}, "top_k", "pass the number itself (5 without quotes)"),
    ({"top_k": True}, "top_k", "a bool is not accepted"),
    ({"top_k": 5.0}, "top_k", "must be an integer, not float"),
    ({"temperature": "0.5"}, "temperature", "must be a number, not str"),
    ({"temperature": False}, "temperature", "a bool is not accepted"),
    ({"temperature": float("nan")}, "temperature", "finite number"),
    ({"top_p": "1"}, "top_p", "must be a number, not str"),
    ({"top_p": 0}, "top_p", "greater than 0"),
    ({"max_tokens": "10"}, "max_tokens", "must be an integer, not str"),
    ({"max_tokens": True}, "max_tokens", "a bool is not accepted"),
    ({"out_ctx": True}, "out_ctx", "positive integer"),
    ({"out_ctx": 1.5}, "out_ctx", "positive integer"),
]


@pytest.mark.parametrize(("options", "field", "fix"), BAD_VALUES)
def test_bad_values_raise_a_typed_error_and_store_nothing(
    manager: InferenceManager,
    lmstudio_emulator: LMStudioEmulator,
    options: dict[str, Any],
    field: str,
    fix: str,
) -> None:
    with pytest.raises(ValidationError) as err:
        manager.infer(MODEL, "hello", **options)
    assert err.value.field == field
    assert fix in err.value.reason
    assert str(err.value).startswith(f"invalid {field}=")
    # the same through the queue's own entry point
    with pytest.raises(ValidationError) as err:
        manager.service.submit_inference(MODEL, "hello", InferenceOptions.of(**options))
    assert err.value.field == field
    assert manager.service.store.list_jobs() == []
    assert lmstudio_emulator.counters.received == []


def test_bad_arguments_of_submit_inference(manager: InferenceManager) -> None:
    service = manager.service
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model_id": 123, "prompt": "hi"}, "model_id"),
        ({"model_id": MODEL, "prompt": 5}, "prompt"),
        ({"model_id": MODEL, "prompt": "hi", "options": {"top_k": 5}}, "options"),
        ({"model_id": MODEL, "prompt": "hi", "priority": "1"}, "priority"),
    ]
    for kwargs, field in cases:
        with pytest.raises(ValidationError) as err:
            service.submit_inference(**kwargs)
        assert err.value.field == field, kwargs
    # a path is read by the facade; the queue takes text only
    with pytest.raises(ValidationError) as err:
        service.submit_inference(MODEL, "hi", InferenceOptions(context_data={"d": Path("x.md")}))
    assert err.value.field == "context_data['d']" and "is a file path" in err.value.reason
    with pytest.raises(ValidationError, match="is not an option of infer"):
        InferenceOptions.of(temprature=0.5)
    assert service.store.list_jobs() == []


def test_async_bad_values_are_typed_too(
    lmstudio_emulator: LMStudioEmulator, database_url: str
) -> None:
    config = config_for(lmstudio_emulator.url)

    async def main() -> list[str]:
        manager = AsyncInferenceManager(timeout=30, config=config, database_url=database_url)
        fields = []
        try:
            for args, kwargs in (
                ((123, "hi"), {}),
                ((MODEL, 5), {}),
                ((MODEL, "hi"), {"system_prompt": 123}),
                ((MODEL, "hi"), {"top_k": "5"}),
            ):
                with pytest.raises(ValidationError) as err:
                    await manager.infer(*args, **kwargs)
                fields.append(err.value.field)
            assert manager.sync.service.store.list_jobs() == []
        finally:
            await manager.aclose()
        return fields

    assert asyncio.run(main()) == ["model_id", "prompt", "system_prompt", "top_k"]


def test_numbers_of_the_right_type_are_accepted(manager: InferenceManager) -> None:
    result = manager.infer(MODEL, "2+3=", temperature=1, top_p=1, top_k=40, max_tokens=8)
    assert result.succeeded and result.response == "5"
    request = manager.service.store.get(result.job_id).request
    assert request is not None and request["temperature"] == 1.0 and request["top_k"] == 40


# -- context_data ---------------------------------------------------------------------------


def sent_prompt(emulator: LMStudioEmulator) -> str:
    """The user message of the last completion the host received."""
    (message,) = [m for m in emulator.counters.received[-1] if m["role"] == "user"]
    return str(message["content"])


def test_blocks_arrive_before_the_prompt_under_headers(
    manager: InferenceManager, lmstudio_emulator: LMStudioEmulator
) -> None:
    result = manager.infer(
        MODEL,
        question("secret word"),
        system_prompt="Answer from the document.",
        context_data={
            "document": "A story.\n" + fact_sentence("secret word", "avocado") + "\n",
            "notes": "Keep it short.",
        },
        max_tokens=32,
    )
    expected = (
        "## document\n\nA story.\nThe secret word is avocado.\n\n"
        "## notes\n\nKeep it short.\n\n"
        "---\n\nWhat is the secret word?"
    )
    assert sent_prompt(lmstudio_emulator) == expected
    system = [m for m in lmstudio_emulator.counters.received[-1] if m["role"] == "system"]
    assert [m["content"] for m in system] == ["Answer from the document."]
    # the model saw the block: it answers from it
    assert result.succeeded and result.response == "The secret word is avocado."
    # the job's row stores what was sent
    request = manager.service.store.get(result.job_id).request
    assert request is not None and request["prompt"] == expected
    assert "context_data" not in request


def test_blocks_keep_the_order_given(
    manager: InferenceManager, lmstudio_emulator: LMStudioEmulator
) -> None:
    manager.infer(MODEL, "go", context_data={"zeta": "last?", "alpha": "first?"}, max_tokens=4)
    sent = sent_prompt(lmstudio_emulator)
    assert sent.index("## zeta") < sent.index("## alpha") < sent.index("---\n\ngo")


def test_a_path_block_is_read_by_the_facade(
    manager: InferenceManager, lmstudio_emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n" + fact_sentence("code name", "heron") + "\n", encoding="utf-8")
    result = manager.infer(
        MODEL, question("code name"), context_data={"notes": notes}, max_tokens=32
    )
    assert sent_prompt(lmstudio_emulator).startswith("## notes\n\n# Notes\nThe code name is heron.")
    assert result.response == "The code name is heron."
    with pytest.raises(ValidationError) as err:
        manager.infer(MODEL, "hi", context_data={"missing": tmp_path / "nope.md"})
    assert err.value.field == "context_data['missing']" and "no such file" in err.value.reason
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00\x01" * 10)
    with pytest.raises(ValidationError) as err:
        manager.infer(MODEL, "hi", context_data={"blob": binary})
    assert err.value.field == "context_data['blob']" and "blob.bin': not valid utf-8" in str(
        err.value
    )
    assert "ContextLoader().load_text_file(path, encoding='auto')" in err.value.reason
    assert len(manager.service.store.list_jobs()) == 1  # only the call that succeeded


def test_blocks_count_in_the_token_budget(
    manager: InferenceManager, lmstudio_emulator: LMStudioEmulator
) -> None:
    manager.infer(MODEL, "hello", max_tokens=8)  # the prompt alone fits
    before = len(manager.service.store.list_jobs())
    with pytest.raises(ContextLimitExceededError) as err:
        manager.infer(MODEL, "hello", context_data={"document": "word " * 200_000}, out_ctx=100)
    assert err.value.prompt_tokens is not None and err.value.prompt_tokens > 100_000
    with pytest.raises(ContextLimitExceededError):
        manager.infer(MODEL, "hello", context_data={"document": "word " * 200_000})
    assert len(manager.service.store.list_jobs()) == before  # nothing queued
    assert len(lmstudio_emulator.counters.received) == 1


def test_async_and_batch_take_context_data_too(
    lmstudio_emulator: LMStudioEmulator, database_url: str, tmp_path: Path
) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text(fact_sentence("password", "swordfish"), encoding="utf-8")
    config = config_for(lmstudio_emulator.url)

    async def main() -> str:
        manager = AsyncInferenceManager(timeout=30, config=config, database_url=database_url)
        try:
            result = await manager.infer(
                MODEL, question("password"), context_data={"doc": doc}, max_tokens=16
            )
            return result.response
        finally:
            await manager.aclose()

    assert asyncio.run(main()) == "The password is swordfish."
    with BatchProcessor(MODEL, config=config, database_url=database_url, timeout=60) as bp:
        results = bp.process_batch(
            [question("password"), "2+2="], context_data={"doc": doc}, max_tokens=16
        )
        assert [r.response for r in results] == ["The password is swordfish.", "4"]
        with pytest.raises(ValidationError, match="context_data"):
            bp.process_batch(["x"], context_data={"doc": 3})
