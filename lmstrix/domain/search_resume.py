"""Where a context test starts from: what earlier runs left, turned into the search's first state
(pure; :func:`~lmstrix.jobs.context_test.probe_rows.start_test` reads it from the database).

Why a separate step: crash safety is decided here. A probe that was in flight when a worker died
is a failure at its size (the machine may have frozen there) and must never be probed again,
even by a test asked to forget everything else; a job re-queued after a crash replays its own
completed probes instead of repeating them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lmstrix.domain.context_search import SearchState, TestPoint
from lmstrix.domain.context_test_request import ContextTestRequest
from lmstrix.domain.verdicts import Known, Speed


@dataclass(frozen=True, slots=True)
class Resume:
    """What earlier runs left: this job's own probes (from attempts that died or were retried),
    and the sizes other tests left in flight."""

    known: Known
    history: tuple[TestPoint, ...] = ()  # this job's completed probes
    in_flight: tuple[int, ...] = ()  # this job's probes that never finished
    others_in_flight: tuple[int, ...] = ()  # other jobs' probes that never finished
    speeds: tuple[tuple[int, Speed], ...] = ()  # what this job's passing use probes measured

    @property
    def job_probes(self) -> int:
        """Probes this job already ran (they count against its ``max_iterations``)."""
        return len(self.history) + len(self.in_flight)


def initial_state(req: ContextTestRequest, resume: Resume) -> SearchState:
    """The search state to start from.

    The job's own earlier probes always count: a job re-queued after its worker died must not
    repeat the probe that killed it, whatever it was asked to forget. ``reset`` and a single
    ``ctx`` ignore everything else (registry sizes, other tests' rows).
    """
    config = req.search_config()
    known = resume.known
    fresh = req.reset or req.ctx is not None
    state = SearchState.start(
        config,
        # Working at a size above the cap means working at the cap (usable is monotonic).
        known_good=None if fresh or known.good is None else min(known.good, config.upper),
        known_bad=None if fresh else known.bad,
        history=resume.history,
        in_flight=resume.in_flight if fresh else resume.in_flight + resume.others_in_flight,
    )
    return replace(state, iterations=resume.job_probes)


__all__ = ["Resume", "initial_state"]
