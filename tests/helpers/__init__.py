"""Shared test helpers (importable as ``helpers.*``: pytest puts ``tests/`` on the path).

- :mod:`helpers.waiting`: wait on a condition with a deadline, never a bare sleep;
- :mod:`helpers.configs`: a ``Config`` for emulated hosts, with quick retries;
- :mod:`helpers.dramatiq_worker`: real ``dramatiq lmstrix.workers`` processes;
- :mod:`helpers.real_model_timing`: what llama.cpp's own slot says about a real generation.

Fixtures shared by every test (databases, isolation from the user's directories, stopping the
in-process workers) live in ``tests/conftest.py``.
"""
