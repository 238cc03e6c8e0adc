"""Exit codes of the host faults: a script can tell a host that is down from one that took the
request and did not answer in time."""

from __future__ import annotations

import pytest

from lmstrix.cli.errors import exit_code_for
from lmstrix.domain.errors import (
    HostDownError,
    JobDeadlineError,
    LMStrixError,
    LMStudioConnectionError,
    LMStudioServerError,
    LMStudioTimeoutError,
)

URL = "http://studio:1234"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (LMStudioConnectionError(URL, "connection refused"), 4),
        (HostDownError(URL, "it stopped answering"), 4),
        (LMStudioTimeoutError(URL, 2.0, operation="chat"), 12),
        (JobDeadlineError("j", 60, elapsed_seconds=58, tries=3, last_error="refused"), 12),
        (LMStudioServerError(URL, "Internal Server Error", status=500), 1),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, LMStrixError) else str(v),
)
def test_host_fault_exit_codes(error: LMStrixError, code: int) -> None:
    assert exit_code_for(error) == code
