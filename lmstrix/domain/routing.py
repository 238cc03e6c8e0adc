"""Which host gets a job when the caller did not name one: pure, so it is tested directly.

Prefer a host that has the model loaded (no swap), then the one with the shortest queue, then
the first configured (stable, so a single-host setup never surprises anyone).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def choose_host(
    candidates: Sequence[str],
    queue_depths: Mapping[str, int],
    loaded: Mapping[str, str | None] | None = None,
    model: str | None = None,
) -> str:
    if not candidates:
        raise ValueError("no candidate hosts")
    loaded = loaded or {}
    order = {h: i for i, h in enumerate(candidates)}
    return min(
        candidates,
        key=lambda h: (
            0 if model is not None and loaded.get(h) == model else 1,
            queue_depths.get(h, 0),
            order[h],
        ),
    )
