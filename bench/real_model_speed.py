"""How fast the real model (SmolLM2-135M on llama.cpp via xllamacpp) is on this machine.

Why: the issue asks for the real model's tokens/s measured directly, to compare with the figure
measured through lmstrix. Direct means ``xllamacpp.Server.handle_chat_completions`` with no HTTP,
emulator or queue in between; the numbers are llama.cpp's own ``timings``.

- generation: a 64-token answer (``ignore_eos`` so it is always exactly 64), best of 3;
- prompt: a ~700-token prompt with the prompt cache off (so every run evaluates all of it), best
  of 3;
- load: seconds to start a server at n_ctx 2048, best of 3.

Run: ``.venv/bin/python bench/real_model_speed.py [--threads 2] [--ctx 2048]``. The install time is
printed by ``scripts/install-real-model.sh``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from lmstrix.testing.llama_server import LlamaServer
from lmstrix.testing.real_model import real_model_unavailable_reason


def best_of(runs: int, fn: Callable[[], float]) -> float:
    return max(fn() for _ in range(runs))


def main() -> int:
    parser = argparse.ArgumentParser(description="Real-model speed, direct xllamacpp")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    reason = real_model_unavailable_reason()
    if reason is not None:
        print(f"real model not available: {reason}")
        return 0

    load_times = []
    for _ in range(args.runs):
        started = time.perf_counter()
        with LlamaServer(args.ctx, threads=args.threads):
            load_times.append(time.perf_counter() - started)

    with LlamaServer(args.ctx, threads=args.threads) as server:
        story = [{"role": "user", "content": "Write a long story about a dragon."}]

        def generation() -> float:
            result = server.chat_completions(
                {"messages": story, "max_tokens": 64, "ignore_eos": True, "temperature": 0}
            )
            timings = result["timings"]
            assert timings["predicted_n"] == 64, timings
            return float(timings["predicted_per_second"])

        text = " ".join(f"Item {i} is a small fact about the number {i}." for i in range(45))
        long_prompt = [{"role": "user", "content": text + " Which item mentions 7?"}]
        prompt_tokens = len(server.tokenize(server.apply_template(long_prompt)))

        def prompt_eval() -> float:
            result = server.chat_completions(
                {"messages": long_prompt, "max_tokens": 1, "cache_prompt": False}
            )
            timings = result["timings"]
            assert timings["prompt_n"] == prompt_tokens, timings
            return float(timings["prompt_per_second"])

        server.chat_completions({"messages": story, "max_tokens": 4})  # warm the page cache
        gen = best_of(args.runs, generation)
        prompt = best_of(args.runs, prompt_eval)

    print(f"SmolLM2-135M-Instruct Q4_1, xllamacpp direct, {args.threads} threads, n_ctx {args.ctx}")
    print(f"load (server start to ready): best {min(load_times):.2f} s of {args.runs}")
    print(f"generation: {gen:.1f} tok/s (64-token answer, best of {args.runs})")
    print(f"prompt eval: {prompt:.1f} tok/s ({prompt_tokens}-token prompt, best of {args.runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
