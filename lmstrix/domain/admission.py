"""Whether the server takes one more request for a model: its hosts' queues against the
configured bound, and whether any worker serves them. Pure: the caller brings the facts."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from lmstrix.domain.errors import LMStrixError


class QueueFullError(LMStrixError):
    """Every host that has the model already holds ``max_queued`` waiting jobs."""

    raised_to_caller = True

    def __init__(self, model_id: str, max_queued: int) -> None:
        super().__init__(
            f"the queue for {model_id!r} is full ({max_queued} jobs waiting on each of its "
            "hosts, the [serve] max_queued bound); try again shortly",
            model_id=model_id,
            max_queued=max_queued,
        )


class NoWorkerError(LMStrixError):
    """No live worker serves any host that has the model (distributed mode)."""

    raised_to_caller = True

    def __init__(self, model_id: str, hosts: list[str]) -> None:
        names = ", ".join(hosts)
        super().__init__(
            f"no worker serves {model_id!r} (hosts: {names}); start one with "
            f"`lmstrix worker --host {hosts[0] if hosts else 'NAME'}`",
            model_id=model_id,
            hosts=hosts,
        )


def admit(
    model_id: str,
    hosts: Sequence[str],
    depths: Mapping[str, int],
    max_queued: int | None,
    served: Callable[[str], bool] | None,
) -> None:
    """Raise when no host of ``hosts`` can take the request: none served (``served`` given,
    in distributed mode), or each one's queue at ``max_queued``."""
    if served is not None and not any(served(h) for h in hosts):
        raise NoWorkerError(model_id, list(hosts))
    if max_queued is not None and all(depths.get(h, 0) >= max_queued for h in hosts):
        raise QueueFullError(model_id, max_queued)
