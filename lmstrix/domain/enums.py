"""The closed vocabularies stored in the database.

They are plain strings in the tables (guarded by CHECK constraints) so that both backends, raw SQL
and JSON exports read the same words; these enums are the one place that lists them.
"""

from __future__ import annotations

from enum import StrEnum


class TestStatus(StrEnum):
    __test__ = False  # not a pytest test class despite the name

    UNTESTED = "untested"
    TESTING = "testing"
    TESTED = "tested"
    FAILED = "failed"


class JobKind(StrEnum):
    INFERENCE = "inference"
    CONTEXT_TEST = "context_test"
    BATCH_ITEM = "batch_item"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def finished(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


class BatchStatus(StrEnum):
    """OpenAI's batch status words, so existing batch tooling understands ours."""

    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


class ProbePhase(StrEnum):
    LOAD = "load"  # can the model be loaded at this context size?
    USE = "use"  # does it still answer correctly with the context filled?


class ProbeOutcome(StrEnum):
    IN_FLIGHT = "in_flight"
    OK = "ok"
    FAILED = "failed"
    REDUCED = "reduced"  # LM Studio loaded it, but at less context than requested


class WorkerMode(StrEnum):
    """How a worker is woken: an in-process doorbell, or a dramatiq message through Redis."""

    EMBEDDED = "embedded"
    DISTRIBUTED = "distributed"


def values(enum: type[StrEnum]) -> list[str]:
    return [member.value for member in enum]
