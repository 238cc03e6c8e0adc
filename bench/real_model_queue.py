"""The real model's tokens/s and time to first token through lmstrix, next to llama.cpp direct.

Why: issue 6 asks for SmolLM2's speed measured through lmstrix and directly. Through lmstrix is
``InferenceManager.infer()`` in embedded mode (SQLite job row, in-process worker, the client's
streamed call to the LM Studio emulator, which streams the real model live); its figures are
what ``infer()`` returns. Direct is the same model and context with nothing in between:

- ``xllamacpp`` in-process (``handle_chat_completions``): llama.cpp's own ``timings``
  (``prompt_ms`` is its time to first token, without HTTP);
- llama.cpp's HTTP stream (``/v1/chat/completions``, ``"stream": true``): time to the first
  piece and tokens/s measured at the client the way lmstrix's client measures them.

Every run asks for a 64-token story (SmolLM2 runs on for hundreds of tokens, so each answer is
64 long) with a different opening line, so each run evaluates its prompt; best of 3 (highest
tokens/s, lowest time to first token), after one warm-up run per path.

Run: ``.venv/bin/python bench/real_model_queue.py [--runs 3] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from lmstrix.core.config import Config
from lmstrix.core.inference_manager import InferenceManager
from lmstrix.jobs import embedded
from lmstrix.testing.emulator import LMStudioEmulator
from lmstrix.testing.llama_server import LlamaServer
from lmstrix.testing.real_model import (
    SMOLLM2_KEY,
    RealModelBackend,
    real_model_unavailable_reason,
    smollm2_model,
)

TOKENS = 64


def prompt(run: int) -> str:
    return f"Story number {run}. Write a long story about a dragon."


@dataclass
class Run:
    tokens_per_second: float
    first_token: float
    tokens: int


def best(runs: list[Run]) -> tuple[float, float]:
    return max(r.tokens_per_second for r in runs), min(r.first_token for r in runs)


def through_lmstrix(runs: int, threads: int) -> tuple[list[Run], int]:
    """Embedded ``infer()`` against the emulator with the real model; returns the runs and the
    context lmstrix loaded the model at."""
    backend = RealModelBackend(threads=threads)
    emulator = LMStudioEmulator([smollm2_model()], backend=backend).start()
    os.environ.pop("LMSTRIX_REDIS_URL", None)  # embedded mode
    results: list[Run] = []
    context = 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Config(
                {
                    "hosts": [{"name": "emu", "url": emulator.url}],
                    "database": {"url": f"sqlite:///{Path(tmp) / 'bench.db'}"},
                }
            )
            with InferenceManager(timeout=120, config=config) as manager:
                for run in range(runs + 1):
                    r = manager.infer(SMOLLM2_KEY, prompt(run), max_tokens=TOKENS, temperature=0)
                    if not r.succeeded:
                        raise RuntimeError(f"infer() failed: {r.error}")
                    context = int(r.model_info["context_length"])
                    if run == 0:
                        continue  # warm-up (includes the load)
                    assert r.tokens_per_second is not None and r.time_to_first_token is not None
                    results.append(
                        Run(r.tokens_per_second, r.time_to_first_token, r.response_tokens)
                    )
            embedded.stop_all()
    finally:
        emulator.stop()
    return results, context


def direct(runs: int, threads: int, context: int) -> tuple[list[Run], list[Run]]:
    """The same requests straight to llama.cpp: in-process timings, and its HTTP stream."""
    in_process: list[Run] = []
    streamed: list[Run] = []
    with (
        LlamaServer(context, threads=threads) as server,
        # no keep-alive: llama.cpp closes the connection after each streamed answer
        httpx.Client(
            base_url=server.url,
            timeout=120,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as http,
    ):
        for run in range(runs + 1):
            messages = [{"role": "user", "content": prompt(run)}]
            body = {"messages": messages, "max_tokens": TOKENS, "temperature": 0}
            result = server.chat_completions(body)
            t = result["timings"]
            if run:
                in_process.append(
                    Run(float(t["predicted_per_second"]), t["prompt_ms"] / 1000, t["predicted_n"])
                )
        for run in range(runs + 1):
            # another opening line: the in-process pass above cached these prompts
            messages = [{"role": "user", "content": "Again. " + prompt(run)}]
            body = {"messages": messages, "max_tokens": TOKENS, "temperature": 0, "stream": True}
            body["stream_options"] = {"include_usage": True}
            started = time.perf_counter()
            first: float | None = None
            tokens = 0
            with http.stream("POST", "/v1/chat/completions", json=body) as reply:
                for line in reply.iter_lines():
                    if not line.startswith("data:") or line.endswith("[DONE]"):
                        continue
                    chunk = json.loads(line[len("data:") :])
                    choices = chunk.get("choices") or [{}]
                    if first is None and choices[0].get("delta", {}).get("content"):
                        first = time.perf_counter() - started
                    if chunk.get("usage"):
                        tokens = int(chunk["usage"]["completion_tokens"])
            wall = time.perf_counter() - started
            if run and first is not None:
                streamed.append(Run(tokens / (wall - first), first, tokens))
    return in_process, streamed


def main() -> int:
    parser = argparse.ArgumentParser(description="SmolLM2 through lmstrix vs llama.cpp direct")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    reason = real_model_unavailable_reason()
    if reason is not None:
        print(f"real model not available: {reason}")
        return 0
    queued, context = through_lmstrix(args.runs, args.threads)
    in_process, streamed = direct(args.runs, args.threads, context)
    print(
        f"SmolLM2-135M-Instruct Q4_1, {args.threads} threads, n_ctx {context}, "
        f"{TOKENS}-token answers, best of {args.runs}"
    )
    print(f"{'path':<44} {'tok/s':>7} {'first token':>12}")
    rows = [
        ("xllamacpp in-process (llama.cpp timings)", in_process),
        ("llama.cpp HTTP stream (client-measured)", streamed),
        ("lmstrix infer(), embedded queue", queued),
    ]
    for name, runs in rows:
        tps, ttft = best(runs)
        print(f"{name:<44} {tps:>7.1f} {ttft * 1000:>9.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
