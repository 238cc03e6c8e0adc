"""What a fault scenario must leave behind, counted the same way in every scenario: no job lost
(each one submitted has its row, in a final state), none doubled (no prompt answered twice by a
host), every job terminal."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from lmstrix.domain.enums import JobStatus
from lmstrix.jobs.store import JobStore, JobView
from lmstrix.testing import LMStudioEmulator

FINAL = {JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value}


@dataclass
class Ledger:
    submitted: int
    statuses: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)  # no row, or a row that never ended
    doubled: list[str] = field(default_factory=list)  # prompts a host answered more than once
    views: dict[str, JobView] = field(default_factory=dict)

    @property
    def succeeded(self) -> int:
        return self.statuses[JobStatus.SUCCEEDED.value]

    def assert_clean(self) -> None:
        assert self.lost == [], f"lost jobs: {self.lost} ({dict(self.statuses)})"
        assert self.doubled == [], f"prompts answered twice: {self.doubled}"
        assert sum(self.statuses.values()) == self.submitted
        assert set(self.statuses) <= FINAL, dict(self.statuses)


def ledger(store: JobStore, job_ids: Sequence[str], hosts: Iterable[LMStudioEmulator]) -> Ledger:
    """Count what became of ``job_ids`` and of their prompts at ``hosts``."""
    out = Ledger(submitted=len(job_ids))
    for job_id in job_ids:
        try:
            view = store.get(job_id)
        except Exception:  # the row vanished
            out.lost.append(job_id)
            continue
        out.views[job_id] = view
        if view.status not in FINAL:
            out.lost.append(job_id)
        out.statuses[view.status] += 1
    answered: Counter[str] = Counter()
    for host in hosts:
        answered.update(host.counters.answered)
    out.doubled = sorted(prompt for prompt, n in answered.items() if n > 1)
    return out
