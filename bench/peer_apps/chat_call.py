"""The one piece of work every peer does: a chat request, its answer's text."""

from __future__ import annotations

import httpx


def chat(url: str, model: str, prompt: str, max_tokens: int) -> str:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
    }
    resp = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    resp.raise_for_status()
    return str(resp.json()["choices"][0]["message"]["content"])
