"""``lmstrix demo``: the quick start's main job on the embedded defaults.

It scans the LM Studio host into the registry, lists it, and runs one real ``infer()`` through the
in-process queue. When no LM Studio answers at the configured URL it says so and starts the
built-in emulator instead (with a real SmolLM2 model behind it when that optional extra is
installed), keeping the emulator's models in a registry of their own so they never mix with
the real registry.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click
from rich.console import Console

from lmstrix.cli.errors import AUTH_REFUSED, handle_errors
from lmstrix.cli.model_table import models_table
from lmstrix.cli.models import auth_refused, run_scan
from lmstrix.core.config import Config, default_data_dir
from lmstrix.core.inference_manager import InferenceManager
from lmstrix.core.scanner import Scanner, lmstudio_answers

DEMO_PROMPT = "What is the capital of France? Answer in one sentence."


@dataclass
class Target:
    config: Config
    model: str | None
    emulated: bool
    real_model: bool


@contextmanager
def demo_target(config: Config, err: Console, *, force_emulator: bool = False) -> Iterator[Target]:
    """The configured LM Studio if it answers, else a started emulator (said out loud)."""
    host = config.hosts[0]
    if not force_emulator and lmstudio_answers(host, config.settings.lmstudio):
        err.print(f"LM Studio answers at {host.url}: using it.")
        yield Target(config, None, emulated=False, real_model=False)
        return

    from lmstrix.testing.emulator import LMStudioEmulator
    from lmstrix.testing.real_model import (
        RealModelBackend,
        real_model_unavailable_reason,
        smollm2_model,
    )

    reason = real_model_unavailable_reason()
    if reason is None:
        models, backend, model = [smollm2_model()], RealModelBackend(), smollm2_model().key
        what = "with a real SmolLM2-135M model (llama.cpp)"
    else:
        models, backend, model = None, None, "qwen/qwen3-4b"
        what = "with its rule-based model (install the real model: scripts/install-real-model.sh)"
    emulator = LMStudioEmulator(models, backend=backend)
    emulator.start()
    if not force_emulator:
        err.print(f"[yellow]No LM Studio answers at {host.url}.[/]")
    err.print(f"Started the LM Studio emulator at {emulator.url} {what}.")
    db_path = default_data_dir() / "emulator-demo.db"
    db_path.parent.mkdir(parents=True, exist_ok=True)
    err.print(f"Its models go to a registry of their own: {db_path}")
    demo_config = Config(
        {
            "hosts": [{"name": "emulator", "url": emulator.url}],
            "database": {"url": f"sqlite:///{Path(db_path)}"},
            "lmstudio": config.as_dict()["lmstudio"] | {"base_url": emulator.url},
            "queue": config.as_dict()["queue"],
        }
    )
    try:
        yield Target(demo_config, model, emulated=True, real_model=reason is None)
    finally:
        emulator.stop()


def pick_model(scanner: Scanner) -> str | None:
    """The smallest present LLM: quickest to load on a real LM Studio."""
    llms = [m for m in scanner.registry.list_models() if m.present and m.type != "embedding"]
    llms.sort(key=lambda m: m.size_bytes or 0)
    return llms[0].qualified_id if llms else None


def run_demo(model: str | None, prompt: str, force_emulator: bool) -> None:
    started = time.perf_counter()
    out, err = Console(), Console(stderr=True)
    with demo_target(Config.load(), err, force_emulator=force_emulator) as target:
        scanner = Scanner(config=target.config)
        results = run_scan(scanner, quiet=False)
        refused = [(r.host, r.url) for r in results if r.auth_required]
        if refused and not any(r.ok for r in results):
            err.print(auth_refused(refused), highlight=False, markup=False, soft_wrap=True)
            raise SystemExit(AUTH_REFUSED)
        if not any(r.ok for r in results):
            raise click.ClickException("no LM Studio host answered the scan")
        out.print(models_table(scanner.registry.list_models()))
        chosen = model or target.model or pick_model(scanner)
        if chosen is None:
            raise click.ClickException("no language model is downloaded on the host")
        err.print(f"Running infer() through the in-process queue on {chosen!r}…")
        with InferenceManager(config=target.config, timeout=120) as manager:
            result = manager.infer(chosen, prompt, out_ctx=64, temperature=0.0)
        out.print(f"\n[bold]Q:[/] {prompt}")
        if result["succeeded"]:
            out.print(f"[bold]A:[/] {result['response'].strip()}")
        else:
            out.print(f"[red]failed:[/] {result['error']}")
        tps = result["tokens_per_second"]
        ttft = result["time_to_first_token"]
        err.print(
            f"job {result.job_id}: {result['prompt_tokens']} prompt + "
            f"{result['response_tokens']} response tokens, "
            f"{result['inference_time']:.2f}s"
            + (f", {tps:.1f} tok/s" if tps else "")
            + (f", first token after {ttft:.3f}s" if ttft is not None else "")
            + f", stop: {result['stop_reason']}"
        )
    err.print(f"demo finished in {time.perf_counter() - started:.1f}s")
    if not result["succeeded"]:
        raise SystemExit(1)


@click.command()
@click.option("-m", "--model", help="Model to ask (default: the smallest LLM on the host).")
@click.option("--prompt", default=None, help="What to ask.")
@click.option(
    "--emulator",
    "force_emulator",
    is_flag=True,
    help="Use the built-in emulator even if LM Studio answers.",
)
@handle_errors
def demo(model: str | None, prompt: str | None, force_emulator: bool) -> None:
    """Scan, list and run one infer() through the queue (the quick start's main job).

    Uses LM Studio at the configured URL when it answers, else starts the built-in emulator.
    """
    run_demo(model, prompt or DEMO_PROMPT, force_emulator)


__all__ = ["DEMO_PROMPT", "demo", "run_demo"]
