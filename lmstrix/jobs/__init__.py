"""The job queue: job rows in SQL, per-host workers, doorbells and done-notifications.

Callers use :class:`~lmstrix.jobs.service.JobService` (or the facades built on it); workers use
:class:`~lmstrix.jobs.runner.JobRunner`, driven by dramatiq (:mod:`lmstrix.workers`) or by an
in-process thread (:mod:`lmstrix.jobs.embedded`).
"""

from lmstrix.jobs.doorbell import BrokerUnavailableError, queue_name
from lmstrix.jobs.store import ClaimedJob, JobStore, JobView

__all__ = ["BrokerUnavailableError", "ClaimedJob", "JobStore", "JobView", "queue_name"]
