"""Plain dramatiq with its Redis results backend (``PEER_REDIS_URL``)."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from peer_apps.chat_call import chat as _chat

REDIS_URL = os.environ["PEER_REDIS_URL"]
broker = RedisBroker(url=REDIS_URL)
broker.add_middleware(Results(backend=RedisBackend(url=REDIS_URL)))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True, queue_name="peers", max_retries=0)
def chat(url: str, model: str, prompt: str, max_tokens: int) -> str:
    return _chat(url, model, prompt, max_tokens)
