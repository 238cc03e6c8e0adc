"""A context test as a job on the host's worker, in one module per concept.

Why a job: a test loads and unloads models at will, so it must be the only thing touching the
host (only the host's worker may load or call models there), and it can take many minutes, so
it must survive the caller going away, report progress, be cancellable and resume after a
crash. The worker's runner calls :func:`~lmstrix.jobs.context_test.driver.run_context_test`;
callers submit through
``JobService.submit_context_test`` after :func:`plan_context_test` has refused bad input (no row
is written for a test that cannot run).

Crash safety is the search's contract made durable: before a probe its row is inserted
``in_flight``; after it the row gets its outcome. A worker that dies mid-probe (the machine froze
at that size, the process was killed) leaves the row ``in_flight``; whoever tests the model next
(the same job re-queued by the reaper, or a new job) counts it as a failure at that size, marks
it ``failed``/"interrupted" and never probes that size again. Completed rows of earlier attempts
of the same job are replayed as facts, so a re-queued job does not repeat its work.

The modules, pure ones first:

- :mod:`.request`: what a job asks for, and the planning that refuses bad input;
- :mod:`.sizing`: how many tokens a use probe's prompt holds, fitted from the server's counts;
- :mod:`.verdicts`: the registry columns a finished or stopped test writes;
- :mod:`.resume`: the search's first state from what earlier runs left;
- :mod:`.report`: the job row's progress and result dicts;
- :mod:`.http_probe`: load and use probes over the host's client (HTTP);
- :mod:`.probe_rows`: probe rows in the database, in flight before and outcome after;
- :mod:`.records`: the job row's progress and the model row's verdict (database);
- :mod:`.driver`: the job itself, which orders all of the above.
"""

from lmstrix.domain.context_test_request import (
    DEFAULT_OUTPUT_TOKENS,
    MIN_PROBE_CONTEXT,
    REASONING_OUTPUT_TOKENS,
    ContextTestRequest,
    check_min_context,
    parse_request,
    plan_context_test,
)
from lmstrix.domain.verdicts import (
    Known,
    Speed,
    partial_columns,
    search_verdict,
    single_verdict,
)
from lmstrix.jobs.context_test.driver import run_context_test
from lmstrix.jobs.context_test.http_probe import HttpProbe
from lmstrix.jobs.context_test.probe_rows import INTERRUPTED_ERROR, ProbeRow, read_probes
from lmstrix.jobs.context_test.records import read_progress

__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "INTERRUPTED_ERROR",
    "MIN_PROBE_CONTEXT",
    "REASONING_OUTPUT_TOKENS",
    "ContextTestRequest",
    "HttpProbe",
    "Known",
    "ProbeRow",
    "Speed",
    "check_min_context",
    "parse_request",
    "partial_columns",
    "plan_context_test",
    "read_probes",
    "read_progress",
    "run_context_test",
    "search_verdict",
    "single_verdict",
]
