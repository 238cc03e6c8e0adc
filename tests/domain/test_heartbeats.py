"""When a caller's or a worker's heartbeat counts as stopped, and the grace the queue allows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from lmstrix.domain.heartbeats import (
    DEFAULT_WAITER_GRACE,
    MIN_WAITER_GRACE,
    WAITER_BEAT_SECONDS,
    WORKER_LIVE_WITHIN,
    no_worker_hint,
    waiter_gone,
    worker_live,
)
from lmstrix.domain.queue_settings import QueueSettings

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def test_a_job_nobody_waits_on_is_never_abandoned() -> None:
    assert not waiter_gone(None, NOW, 0.0)


def test_a_waiter_is_gone_only_after_more_than_the_grace() -> None:
    assert not waiter_gone(ago(9.9), NOW, 10.0)
    assert not waiter_gone(ago(10.0), NOW, 10.0)
    assert waiter_gone(ago(10.1), NOW, 10.0)


def test_the_default_grace_spans_several_beats_and_the_minimum_two() -> None:
    assert DEFAULT_WAITER_GRACE >= 4 * WAITER_BEAT_SECONDS
    assert MIN_WAITER_GRACE == 2 * WAITER_BEAT_SECONDS
    assert QueueSettings().waiter_grace == DEFAULT_WAITER_GRACE
    assert QueueSettings(waiter_grace=MIN_WAITER_GRACE).waiter_grace == MIN_WAITER_GRACE
    with pytest.raises(ValidationError, match="waiter_grace"):
        QueueSettings(waiter_grace=WAITER_BEAT_SECONDS)  # one late beat would cancel live calls


def test_a_worker_is_live_within_a_few_beats() -> None:
    assert worker_live(ago(0), NOW)
    assert worker_live(ago(WORKER_LIVE_WITHIN), NOW)
    assert not worker_live(ago(WORKER_LIVE_WITHIN + 0.1), NOW)
    assert worker_live(ago(30), NOW, within=60)


def test_the_hint_names_the_host_and_the_command() -> None:
    hint = no_worker_hint("studio")
    assert "no worker serves host studio" in hint
    assert "`lmstrix worker --host studio`" in hint
