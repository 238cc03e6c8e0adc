"""The workers table: which worker serves which host, when it was last heard from, doing what.

Every :class:`~lmstrix.jobs.runner.JobRunner` keeps one row fresh through a
:class:`WorkerPresence`: registered when its lease keeper starts, beaten from that same thread
every couple of seconds (one small UPDATE), deleted on a clean stop. A worker that died simply
stops beating; :meth:`WorkerRegistry.live` leaves it out after a few missed beats, and its row is
deleted a day later, when another worker registers. Callers use it to tell whether anybody
serves a host (the no-worker notice) and ``lmstrix workers`` lists it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update

from lmstrix.db import ensure_schema, read_session, utcnow, write_session
from lmstrix.db.tables import WorkerRow
from lmstrix.domain.enums import WorkerMode
from lmstrix.domain.heartbeats import (
    WORKER_BEAT_SECONDS,
    WORKER_FORGET_AFTER,
    WORKER_LIVE_WITHIN,
    cutoff,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One worker's row, as callers see it."""

    worker_id: str
    host: str
    hostname: str
    pid: int
    mode: str
    started_at: datetime
    seen_at: datetime
    current_job: str | None
    loaded_model: str | None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """What a worker says about itself when it registers."""

    worker_id: str
    host: str
    mode: WorkerMode
    hostname: str
    pid: int

    @classmethod
    def here(cls, worker_id: str, host: str, mode: WorkerMode) -> WorkerInfo:
        """A worker of this process on this machine."""
        return cls(worker_id, host, mode, socket.gethostname(), os.getpid())


_COLUMNS = (
    WorkerRow.worker_id,
    WorkerRow.host,
    WorkerRow.hostname,
    WorkerRow.pid,
    WorkerRow.mode,
    WorkerRow.started_at,
    WorkerRow.seen_at,
    WorkerRow.current_job,
    WorkerRow.loaded_model,
)


class WorkerRegistry:
    """The ``workers`` rows of one database. Cheap to create; holds no connection."""

    def __init__(self, url: str) -> None:
        self.url = url

    def register(
        self, info: WorkerInfo, current_job: str | None = None, loaded_model: str | None = None
    ) -> None:
        """Write the worker's row (replacing one of the same id) and forget workers not heard
        from for a day."""
        ensure_schema(self.url)
        now = utcnow()
        with write_session(self.url) as s:
            s.execute(delete(WorkerRow).where(WorkerRow.seen_at < now - WORKER_FORGET_AFTER))
            s.execute(delete(WorkerRow).where(WorkerRow.worker_id == info.worker_id))
            s.execute(
                insert(WorkerRow).values(
                    worker_id=info.worker_id,
                    host=info.host,
                    hostname=info.hostname,
                    pid=info.pid,
                    mode=info.mode.value,
                    started_at=now,
                    seen_at=now,
                    current_job=current_job,
                    loaded_model=loaded_model,
                )
            )

    def beat(self, worker_id: str, current_job: str | None, loaded_model: str | None) -> bool:
        """The worker is alive, running ``current_job`` with ``loaded_model`` loaded; False
        when its row is gone (it should register again)."""
        with write_session(self.url) as s:
            res = s.execute(
                update(WorkerRow)
                .where(WorkerRow.worker_id == worker_id)
                .values(seen_at=utcnow(), current_job=current_job, loaded_model=loaded_model)
            )
        return bool(res.rowcount)  # type: ignore[attr-defined]

    def unregister(self, worker_id: str) -> None:
        with write_session(self.url) as s:
            s.execute(delete(WorkerRow).where(WorkerRow.worker_id == worker_id))

    def live(self, host: str | None = None, within: float = WORKER_LIVE_WITHIN) -> list[WorkerView]:
        """Workers heard from within ``within`` seconds (of ``host``, or all), by host and age."""
        return self.rows(host, within=within)

    def rows(self, host: str | None = None, *, within: float | None = None) -> list[WorkerView]:
        """Worker rows (of ``host``, or all; only those heard from within ``within`` seconds
        when given), by host, then the oldest first."""
        ensure_schema(self.url)
        q = select(*_COLUMNS).order_by(WorkerRow.host, WorkerRow.started_at)
        if host is not None:
            q = q.where(WorkerRow.host == host)
        if within is not None:
            q = q.where(WorkerRow.seen_at >= cutoff(utcnow(), within))
        with read_session(self.url) as s:
            return [WorkerView(**r._asdict()) for r in s.execute(q)]

    def serves(self, host: str, within: float = WORKER_LIVE_WITHIN) -> bool:
        """Whether some live worker serves ``host``."""
        ensure_schema(self.url)
        q = (
            select(WorkerRow.worker_id)
            .where(WorkerRow.host == host, WorkerRow.seen_at >= cutoff(utcnow(), within))
            .limit(1)
        )
        with read_session(self.url) as s:
            return s.execute(q).first() is not None


class WorkerPresence:
    """One worker's row kept fresh: :meth:`beat` registers it, then beats at most every
    ``interval`` seconds; :meth:`stop` deletes it. Never raises: a database hiccup is logged
    and the next beat tries again (the worker goes on serving either way).

    ``loaded_model`` says what the worker holds loaded now; it is asked at each beat."""

    def __init__(
        self,
        registry: WorkerRegistry,
        info: WorkerInfo,
        interval: float = WORKER_BEAT_SECONDS,
        loaded_model: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.registry = registry
        self.info = info
        self.interval = interval
        self.loaded_model = loaded_model
        self._registered = False
        self._stopped = False
        self._next = 0.0

    def beat(self, current_job: str | None, now: float | None = None) -> None:
        """Register, or beat, if the last one was ``interval`` seconds ago or more."""
        now = time.monotonic() if now is None else now
        if now < self._next or self._stopped:
            return
        self._next = now + self.interval
        try:
            loaded = self.loaded_model()
            if self._registered and self.registry.beat(self.info.worker_id, current_job, loaded):
                return
            self.registry.register(self.info, current_job, loaded)
            self._registered = True
        except Exception:
            log.warning(
                "worker %s: heartbeat failed; trying again in %ss",
                self.info.worker_id,
                self.interval,
                exc_info=True,
            )

    def stop(self) -> None:
        """Delete the row (a clean stop: the worker no longer serves its host); no beat after
        this one brings it back."""
        self._stopped = True
        if not self._registered:
            return
        self._registered = False
        try:
            self.registry.unregister(self.info.worker_id)
        except Exception:
            log.warning("worker %s: could not unregister", self.info.worker_id, exc_info=True)


__all__ = ["WorkerInfo", "WorkerPresence", "WorkerRegistry", "WorkerView"]
