"""SQL storage: engine per process, ORM tables, migrate-on-first-use, session helpers."""

from lmstrix.db.engine import (
    dispose_engines,
    get_engine,
    normalize_url,
)
from lmstrix.db.migrate import RevisionState, downgrade, ensure_schema, revision_state, upgrade
from lmstrix.db.session import read_session, write_session
from lmstrix.db.tables import Base, Batch, ContextTestProbe, Host, Job, ModelRow
from lmstrix.db.types import utcnow
from lmstrix.domain.enums import (
    BatchStatus,
    JobKind,
    JobStatus,
    ProbeOutcome,
    ProbePhase,
    TestStatus,
)

__all__ = [
    "Base",
    "Batch",
    "BatchStatus",
    "ContextTestProbe",
    "Host",
    "Job",
    "JobKind",
    "JobStatus",
    "ModelRow",
    "ProbeOutcome",
    "ProbePhase",
    "RevisionState",
    "TestStatus",
    "dispose_engines",
    "downgrade",
    "ensure_schema",
    "get_engine",
    "normalize_url",
    "read_session",
    "revision_state",
    "upgrade",
    "utcnow",
    "write_session",
]
