"""The queue's tunables: the ``[queue]`` section of the configuration (see
:mod:`lmstrix.domain.queue_settings`), importable from the jobs layer that uses them."""

from lmstrix.domain.queue_settings import QueueSettings

__all__ = ["QueueSettings"]
