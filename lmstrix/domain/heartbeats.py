"""Heartbeats and when they count as stopped: an interactive caller's, and a worker's.

An interactive call (``infer()``, ``lmstrix infer``) owns its job: it beats on the row
(``waiter_seen_at``) while it waits, and a job whose caller has not been heard from for
``waiter_grace`` seconds is abandoned, so it is cancelled and never run (again). A job submitted
to be fetched later has no waiter (the column stays NULL) and is never treated so.

A worker beats on its row of the ``workers`` table; a host none of whose workers was heard from
within :data:`WORKER_LIVE_WITHIN` seconds has nobody serving it, and a caller waiting there is
told how to start one. The same silence tells the reaper that a worker died (or froze): the job
it was running goes back to the queue then, seconds after the kill, without waiting for its
lease to run out.

Pure rules only: the rows are read and written in :mod:`lmstrix.jobs`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

#: Seconds between a waiting caller's beats on its job's row.
WAITER_BEAT_SECONDS = 2.0
#: Seconds a caller may go unheard before its job counts as abandoned (several beats).
DEFAULT_WAITER_GRACE = 10.0
#: The shortest grace allowed: two beats, so one late beat never cancels a live caller's job.
MIN_WAITER_GRACE = 2 * WAITER_BEAT_SECONDS

#: Seconds between a worker's beats on its ``workers`` row.
WORKER_BEAT_SECONDS = 2.0
#: A worker heard from within this many seconds is live (a few beats).
WORKER_LIVE_WITHIN = 3 * WORKER_BEAT_SECONDS + 1.0
#: Seconds between the reaper's looks for jobs whose worker went silent: with the worker's
#: silence limit above, a killed worker's job is queued again within about eight seconds.
DEAD_WORKER_SWEEP_SECONDS = 1.0
#: Rows of workers not heard from for this long are deleted when another worker registers.
WORKER_FORGET_AFTER = timedelta(days=1)

#: How long a job may sit queued before its waiter checks that some worker serves its host.
NO_WORKER_NOTICE_AFTER = 2.0


def cutoff(now: datetime, seconds: float) -> datetime:
    """The oldest heartbeat that still counts at ``now`` for a grace of ``seconds``."""
    return now - timedelta(seconds=seconds)


def waiter_gone(seen_at: datetime | None, now: datetime, grace: float) -> bool:
    """Whether a job's caller stopped waiting: it had one (``seen_at`` set) and it has not been
    heard from for more than ``grace`` seconds."""
    return seen_at is not None and seen_at < cutoff(now, grace)


def worker_live(seen_at: datetime, now: datetime, within: float = WORKER_LIVE_WITHIN) -> bool:
    """Whether a worker last heard from at ``seen_at`` still counts as serving its host."""
    return seen_at >= cutoff(now, within)


def start_worker_command(host: str) -> str:
    """The command that serves ``host`` (a dramatiq worker with Redis, the queue here without)."""
    return f"lmstrix worker --host {host}"


def no_worker_hint(host: str) -> str:
    """What a caller waiting on ``host`` is told when no live worker serves it."""
    return (
        f"no worker serves host {host}, so its queued jobs wait; start one with "
        f"`{start_worker_command(host)}`"
    )


__all__ = [
    "DEAD_WORKER_SWEEP_SECONDS",
    "DEFAULT_WAITER_GRACE",
    "MIN_WAITER_GRACE",
    "NO_WORKER_NOTICE_AFTER",
    "WAITER_BEAT_SECONDS",
    "WORKER_BEAT_SECONDS",
    "WORKER_FORGET_AFTER",
    "WORKER_LIVE_WITHIN",
    "cutoff",
    "no_worker_hint",
    "start_worker_command",
    "waiter_gone",
    "worker_live",
]
