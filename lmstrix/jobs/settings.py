"""Tunables of the queue, read from the environment so workers and tests can change them.

They live here rather than in the config file because they are operational knobs of the worker
processes (and tests shorten them to keep crash-recovery tests fast), not user preferences:

- ``LMSTRIX_JOB_LEASE_SECONDS`` (30): how long a claim holds without renewal. A worker killed
  mid-job is noticed by the reaper this long after its last renewal.
- ``LMSTRIX_REAPER_INTERVAL`` (lease / 2): how often each worker looks for expired leases.
- ``LMSTRIX_WORKER_LINGER`` (5): how long a worker keeps listening for new work after its queue
  ran dry, so a busy host picks up the next job without waiting for the broker's poll.
- ``LMSTRIX_SCHED_MAX_WAIT`` (300) and ``LMSTRIX_SCHED_MAX_RUN`` (100): the scheduler bounds.
- ``LMSTRIX_JOB_MAX_ATTEMPTS`` (3): claims a job gets before a lost worker fails it for good.
- ``LMSTRIX_JOB_RETRY_DELAYS`` (``1,2,4,8,16``): waits between retries of a job whose host
  refused the connection (LM Studio restarting); other failures are never retried.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from lmstrix.domain.scheduler import SchedulerPolicy


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


def _floats(name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return tuple(float(x) for x in raw.split(",") if x.strip())


@dataclass(frozen=True, slots=True)
class QueueSettings:
    lease_seconds: float = 30.0
    reaper_interval: float = 15.0
    linger_seconds: float = 5.0
    max_attempts: int = 3
    policy: SchedulerPolicy = field(default_factory=SchedulerPolicy)
    retry_delays: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)

    @classmethod
    def from_env(cls) -> QueueSettings:
        lease = _float("LMSTRIX_JOB_LEASE_SECONDS", 30.0)
        return cls(
            lease_seconds=lease,
            reaper_interval=_float("LMSTRIX_REAPER_INTERVAL", lease / 2),
            linger_seconds=_float("LMSTRIX_WORKER_LINGER", 5.0),
            max_attempts=_int("LMSTRIX_JOB_MAX_ATTEMPTS", 3),
            retry_delays=_floats("LMSTRIX_JOB_RETRY_DELAYS", (1.0, 2.0, 4.0, 8.0, 16.0)),
            policy=SchedulerPolicy(
                max_wait=_float("LMSTRIX_SCHED_MAX_WAIT", 300.0),
                max_run=_int("LMSTRIX_SCHED_MAX_RUN", 100),
            ),
        )
