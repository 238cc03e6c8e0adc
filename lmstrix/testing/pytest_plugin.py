"""pytest fixtures for the LM Studio emulator.

Enable with ``pytest_plugins = ["lmstrix.testing.pytest_plugin"]`` in a ``conftest.py``.

- ``lmstudio_emulator``: a started emulator with the default models and settings, stopped after
  the test.
- ``make_emulator(models=None, *, backend=None, **settings)``: start any number of emulators
  (several hosts); all are stopped after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from lmstrix.testing.backend import EmulatedModel, ModelBackend
from lmstrix.testing.emulator import LMStudioEmulator

EmulatorFactory = Callable[..., LMStudioEmulator]


@pytest.fixture
def make_emulator() -> Iterator[EmulatorFactory]:
    started: list[LMStudioEmulator] = []

    def factory(
        models: Sequence[EmulatedModel] | None = None,
        *,
        backend: ModelBackend | None = None,
        **settings: Any,
    ) -> LMStudioEmulator:
        emulator = LMStudioEmulator(models, backend=backend, **settings)
        started.append(emulator)
        return emulator.start()

    yield factory
    for emulator in reversed(started):
        emulator.stop()


@pytest.fixture
def lmstudio_emulator(make_emulator: EmulatorFactory) -> LMStudioEmulator:
    return make_emulator()
