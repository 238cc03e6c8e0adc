"""``LMStudioEmulator``: a real HTTP server that behaves like LM Studio, for tests and demos.

    with LMStudioEmulator(jit=False, require_auth=True, api_tokens={"sk-lm-a:b"}) as lms:
        httpx.get(f"{lms.url}/api/v1/models", headers={"Authorization": "Bearer sk-lm-a:b"})
        lms.configure(api_generation="0.3")       # flip behaviour at runtime
        assert lms.counters.max_in_flight <= 1

Settings are the fields of :class:`EmulatorSettings`, given as keyword arguments at construction
or to :meth:`LMStudioEmulator.configure` later (``emulator.settings`` is the live object, too).
Test-side controls bypass HTTP: :meth:`load`, :meth:`unload`, :meth:`advance_clock`,
:meth:`release_hangs`, :meth:`fail_next`, :meth:`fail_next_load`, :meth:`wait_for`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from lmstrix.testing.app import EmulatorApp
from lmstrix.testing.backend import EmulatedModel, ModelBackend
from lmstrix.testing.catalog import DEFAULT_MODELS
from lmstrix.testing.counters import Counters
from lmstrix.testing.rules import RuleBackend
from lmstrix.testing.server import HTTPServerThread
from lmstrix.testing.settings import EmulatorSettings
from lmstrix.testing.state import EmulatorState, Instance, UnknownModel


class LMStudioEmulator:
    def __init__(
        self,
        models: Sequence[EmulatedModel] | None = None,
        *,
        backend: ModelBackend | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        **settings: Any,
    ) -> None:
        self.settings = EmulatorSettings()
        self.settings.update(settings)
        self.state = EmulatorState(
            DEFAULT_MODELS if models is None else models,
            backend if backend is not None else RuleBackend(),
            self.settings,
        )
        self.app = EmulatorApp(self.state)
        self._host, self._port = host, port
        self._http: HTTPServerThread | None = None
        self._lifecycle = threading.Lock()

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> LMStudioEmulator:
        with self._lifecycle:
            if self._http is None:
                if self.state.stopping:
                    raise RuntimeError("a stopped emulator cannot be restarted; make a new one")
                self._http = HTTPServerThread(self.app, self._host, self._port)
                self._http.start()
                self._host, self._port = self._http.address
        return self

    def stop(self) -> None:
        """Stop answering (hung requests are dropped), unload everything, close the backend."""
        with self._lifecycle:
            http, self._http = self._http, None
            if self.state.stopping:
                return
            self.state.stop()
            if http is not None:
                http.stop()

    def __enter__(self) -> LMStudioEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._http is not None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._http is None and self._port == 0:
            raise RuntimeError("the emulator is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- settings -------------------------------------------------------------------------

    def configure(self, **changes: Any) -> None:
        """Change settings at runtime (validated; unknown names raise ``TypeError``)."""
        with self.state.lock:
            self.settings.update(changes)

    # --- models and instances -------------------------------------------------------------

    @property
    def models(self) -> list[EmulatedModel]:
        with self.state.lock:
            return list(self.state.models.values())

    def add_model(self, model: EmulatedModel) -> None:
        """A model appears among the downloaded ones (e.g. ``lms get`` finished)."""
        with self.state.lock:
            self.state.models[model.key] = model

    def remove_model(self, key: str) -> None:
        """A model is deleted from disk (its loaded instances stay, as in LM Studio)."""
        with self.state.lock:
            self.state.models.pop(key, None)

    def loaded_instances(self) -> dict[str, int]:
        """``{instance_id: applied context}`` of every loaded instance (TTL applied first)."""
        self.state.expire_idle()
        return {i.id: i.context_length or 0 for i in self.state.loaded()}

    def instance(self, instance_id: str) -> Instance | None:
        with self.state.lock:
            return self.state.instances.get(instance_id)

    def load(
        self,
        key: str,
        context_length: int | None = None,
        *,
        jit: bool = False,
        ttl: float | None = None,
    ) -> str:
        """Load as ``lms load`` would (counted like any load); returns the instance id."""
        try:
            return self.state.load(key, context_length, jit=jit, ttl=ttl).id
        except UnknownModel:
            raise KeyError(key) from None

    def unload(self, instance_id: str) -> None:
        self.state.unload(instance_id, "direct")

    def unload_on_next_chat(self, key: str) -> None:
        """Act as another client (a chat UI, an IDE plugin) that unloads ``key`` just as the
        next chat request for it arrives; that request fails with "Model was unloaded."."""
        self.state.unload_on_next_chat(key)

    def unload_all(self) -> None:
        for instance_id in list(self.loaded_instances()):
            self.state.unload(instance_id, "direct")

    # --- clock, counters, faults ----------------------------------------------------------

    @property
    def simulated_seconds(self) -> float:
        """Total seconds of model work (loads, prompts, generation) the requests would cost."""
        return self.state.clock.spent

    def advance_clock(self, seconds: float) -> None:
        """Let idle time pass (TTL expiry is evaluated at the next request)."""
        self.state.clock.advance(seconds)

    @property
    def counters(self) -> Counters:
        """A consistent snapshot (copy) of the counters."""
        return self.state.counters.snapshot()

    def reset_counters(self) -> None:
        self.state.counters.reset()

    @property
    def connections_opened(self) -> int:
        """TCP connections clients opened since the emulator started (keep-alive reuse shows
        as fewer connections than requests)."""
        return 0 if self._http is None else self._http.accepted

    @property
    def hanging(self) -> int:
        """How many requests or loads are blocked right now (``hang_*`` settings)."""
        return self.state.hanging

    def release_hangs(self) -> None:
        """Unblock every request and load hung so far (new ones hang again if still enabled)."""
        self.state.release_hangs()

    def fail_next(
        self,
        status: int,
        body: Any = None,
        *,
        content_type: str | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next request (or the next one to ``path``) with ``status`` and ``body``;
        ``bytes``/``str`` bodies go out verbatim (non-JSON), others as JSON."""
        self.app.fail_next(status, body, content_type=content_type, path=path)

    def fail_next_load(
        self, reason: str = "Error loading model.", model: str | None = None
    ) -> None:
        """Make the next load (of ``model`` if given) fail with this LM Studio reason text."""
        self.state.fail_next_load(reason, model)

    def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``condition()`` holds (tests: no sleeps with fixed guesses)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time")
            time.sleep(0.002)


def serve(
    host: str = "127.0.0.1",
    port: int = 1234,
    *,
    models: Sequence[EmulatedModel] | None = None,
    backend: ModelBackend | None = None,
    echo: Callable[[str], object] = print,
    stop: threading.Event | None = None,
    **settings: Any,
) -> None:
    """Run an emulator in the foreground until Ctrl-C (the ``lmstrix emulator`` command).

    ``stop`` lets a caller (a test of the CLI) end it without a signal.
    """
    emulator = LMStudioEmulator(models, backend=backend, host=host, port=port, **settings)
    emulator.start()
    echo(f"LM Studio emulator listening on {emulator.url} (Ctrl-C to stop)")
    stop = stop or threading.Event()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        echo("LM Studio emulator stopped")
