"""The files API's pure shapes: the batch-create body, pages, purposes, and the completions
endpoint of the batch format."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lmstrix.domain.errors import ValidationError
from lmstrix.domain.openai_batch import (
    COMPLETIONS_URL,
    BatchItem,
    BatchValidationError,
    output_line,
    parse_lines,
)
from lmstrix.domain.openai_files import check_upload, page, page_limit, parse_batch_create

BODY = {"input_file_id": "file-1", "endpoint": "/v1/chat/completions", "completion_window": "24h"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"input_file_id": ""}, "input_file_id"),
        ({"endpoint": "/v1/embeddings"}, "endpoint"),
        ({"completion_window": "1h"}, "completion_window"),
        ({"metadata": {"k": 3}}, "metadata.k"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ],
)
def test_a_bad_batch_body_names_its_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as bad:
        parse_batch_create({**BODY, **change})
    assert bad.value.field == field


def test_a_good_batch_body() -> None:
    call = parse_batch_create({**BODY, "metadata": {"team": "a"}})
    assert (call.input_file_id, call.metadata) == ("file-1", {"team": "a"})


def test_uploads_take_only_the_batch_purpose() -> None:
    assert check_upload("batch", " in.jsonl ") == ("batch", "in.jsonl")
    assert check_upload("batch", None) == ("batch", "upload.jsonl")
    with pytest.raises(ValidationError) as bad:
        check_upload("fine-tune", "x")
    assert bad.value.field == "purpose"


def test_pages_and_limits() -> None:
    assert page([{"id": "a"}, {"id": "b"}], True) == {
        "object": "list",
        "data": [{"id": "a"}, {"id": "b"}],
        "first_id": "a",
        "last_id": "b",
        "has_more": True,
    }
    assert page([], False)["last_id"] is None
    assert page_limit(None) == 20 and page_limit("7") == 7
    for bad in ("0", "101", "x"):
        with pytest.raises(ValidationError):
            page_limit(bad)


def test_completions_lines_take_a_prompt_and_answer_as_text_completions() -> None:
    line = {"custom_id": "a", "method": "POST", "url": COMPLETIONS_URL}
    (parsed,) = parse_lines(
        [{**line, "body": {"model": "m", "prompt": ["say x"]}}], endpoint=COMPLETIONS_URL
    )
    assert (parsed.prompt, parsed.system_prompt) == ("say x", None)
    with pytest.raises(BatchValidationError) as bad:
        parse_lines([{**line, "body": {"model": "m", "messages": []}}], endpoint=COMPLETIONS_URL)
    assert "body.messages is not supported" in str(bad.value)
    with pytest.raises(BatchValidationError) as wrong_url:
        parse_lines([{**line, "body": {"model": "m", "prompt": "x"}}])
    assert "is not the batch's endpoint /v1/chat/completions" in str(wrong_url.value)
    item = BatchItem(
        "0-1",
        "a",
        "m",
        "succeeded",
        {"response": "x", "finish_reason": "stop"},
        None,
        None,
        datetime(2026, 1, 1, tzinfo=UTC),
    )
    body = output_line(item, COMPLETIONS_URL)["response"]["body"]
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "x"
