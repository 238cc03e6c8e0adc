"""``[queue]``: the job queue's timing and limits (leases, reaping, lingering, retries, the
scheduler's bounds, how long an interactive caller may go unheard).

They are operational knobs of the worker processes rather than preferences of one caller, and
tests shorten them to keep crash-recovery tests fast. Like every other section they come from
the config file or ``LMSTRIX_QUEUE__<KEY>`` and are validated there; the jobs layer receives the
resulting value and never reads the environment itself.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, field_validator

from lmstrix.domain.config_section import ConfigSection
from lmstrix.domain.heartbeats import DEFAULT_WAITER_GRACE, MIN_WAITER_GRACE
from lmstrix.domain.scheduler import SchedulerPolicy


class QueueSettings(ConfigSection):
    """The queue's tunables; every field is a key of the ``[queue]`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lease_seconds: float = Field(
        30.0,
        gt=0,
        description="how long a claim holds without renewal: a worker killed mid-job is "
        "noticed this long after its last renewal",
    )
    reaper_interval: float | None = Field(
        None,
        gt=0,
        description="seconds between rings of the hosts whose jobs have been queued that "
        "long, in case a doorbell was lost (unset: half the lease); workers that went silent "
        "are looked for every second regardless",
    )
    linger_seconds: float = Field(
        5.0,
        ge=0,
        description="how long a worker keeps listening for new work after its queue ran dry",
    )
    max_attempts: int = Field(
        3, ge=1, description="claims a job gets before a lost worker fails it for good"
    )
    retry_delays: tuple[float, ...] = Field(
        (1.0, 2.0, 4.0, 8.0, 16.0),
        description="waits between retries of a job whose host refused the connection (LM "
        "Studio restarting); other failures are never retried",
    )
    job_deadline: float = Field(
        1800.0,
        gt=0,
        description="seconds one job may take from when a worker takes it, retries included: "
        "a retry is only made when it could still run a whole request (lmstudio.timeout) "
        "before then; otherwise the job fails with JobDeadlineError",
    )
    host_down_grace: float = Field(
        10.0,
        ge=0,
        description="when a job failed because its host did not answer and a probe got no "
        "answer either: how long the host's queued jobs wait for it (probed every second) "
        "before they all fail together with HostDownError; 0: at once",
    )
    max_wait: float = Field(
        300.0,
        gt=0,
        description="seconds a job of another model may wait before it is served next (the "
        "worker otherwise prefers jobs for the model already loaded)",
    )
    max_run: int = Field(
        100, ge=1, description="jobs in a row on the loaded model before others get a turn"
    )
    max_parallel: int | None = Field(
        None,
        ge=1,
        description="jobs of one loaded model a host's worker runs at once, at most (its "
        "parallel slots; a host's own max_parallel goes first); unset: as many as the host "
        "reports, 1 where it reports none; 1: one job at a time",
    )
    waiter_grace: float = Field(
        DEFAULT_WAITER_GRACE,
        ge=MIN_WAITER_GRACE,
        description="seconds an interactive call (infer) may go unheard before its job counts "
        "as abandoned: it is then cancelled, never run again (its caller beats every 2 s)",
    )

    @field_validator("retry_delays", mode="before")
    @classmethod
    def _comma_separated(cls, v: Any) -> Any:
        # An environment variable can only say "1,2,4"; the file says [1, 2, 4].
        if isinstance(v, str):
            return tuple(part.strip() for part in v.split(",") if part.strip())
        return v

    @field_validator("retry_delays")
    @classmethod
    def _not_negative(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(d < 0 for d in v):
            raise ValueError("retry delays must not be negative")
        return v

    @property
    def reap_every(self) -> float:
        """Seconds between the reaper's rings of long-queued hosts: ``reaper_interval``, or half
        the lease."""
        return self.reaper_interval if self.reaper_interval is not None else self.lease_seconds / 2

    def for_host(self, max_parallel: int | None) -> QueueSettings:
        """These settings for a host whose own ``max_parallel`` (when set) replaces the
        queue's."""
        if max_parallel is None:
            return self
        return self.model_copy(update={"max_parallel": max_parallel})

    @property
    def policy(self) -> SchedulerPolicy:
        return SchedulerPolicy(max_wait=self.max_wait, max_run=self.max_run)
