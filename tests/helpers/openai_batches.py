"""The files and batches flow through the ``openai`` SDK, shared by the embedded and the
distributed tests of ``lmstrix serve``."""

from __future__ import annotations

import json
from typing import Any

import openai
from openai.types import Batch

from helpers.waiting import wait_for

FINAL = {"completed", "failed", "expired", "cancelled"}


def chat_line(custom_id: str, prompt: str, model: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": prompt}], **body},
    }


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def upload(client: openai.OpenAI, lines: list[dict[str, Any]], name: str = "in.jsonl") -> str:
    return client.files.create(file=(name, jsonl(lines)), purpose="batch").id


def start(client: openai.OpenAI, file_id: str, endpoint: str = "/v1/chat/completions") -> Batch:
    return client.batches.create(
        input_file_id=file_id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
    )


def until_final(client: openai.OpenAI, batch_id: str, timeout: float = 120) -> Batch:
    """Poll the batch as an SDK user would, until it ends."""
    seen: list[Batch] = []

    def ended() -> bool:
        seen.append(client.batches.retrieve(batch_id))
        return seen[-1].status in FINAL

    wait_for(ended, timeout, f"batch {batch_id} to end", interval=0.2)
    return seen[-1]


def file_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    text = client.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines()]


def answer(line: dict[str, Any]) -> str:
    body = line["response"]["body"]
    choice = body["choices"][0]
    return str(choice["message"]["content"] if "message" in choice else choice["text"])
