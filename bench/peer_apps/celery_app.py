"""Celery with Redis as broker and result backend (``PEER_REDIS_URL``)."""

from __future__ import annotations

import os

from celery import Celery

from peer_apps.chat_call import chat as _chat

REDIS_URL = os.environ["PEER_REDIS_URL"]
app = Celery("peers", broker=REDIS_URL, backend=REDIS_URL)
app.conf.task_default_queue = "peers"


@app.task(name="peers.chat")
def chat(url: str, model: str, prompt: str, max_tokens: int) -> str:
    return _chat(url, model, prompt, max_tokens)
