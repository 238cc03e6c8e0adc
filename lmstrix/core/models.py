"""``ModelRegistry``: every model on every LM Studio host, with the context it really handles.

The registry is SQL (see :mod:`lmstrix.db.model_store`): every read asks the database and every
write is one transaction, which is why ``save()`` has nothing left to do and ``reload()`` never
returns stale data. This facade finds the database and the configured hosts in the
configuration when they are not given.
"""

from __future__ import annotations

from collections.abc import Sequence

from lmstrix.core.config import Config
from lmstrix.db.model_store import ModelStore
from lmstrix.domain.errors import LMStrixError
from lmstrix.domain.model import Model, ScanSummary


class ModelRegistry(ModelStore):
    """SQL-backed registry of models. Every method hits the database; no cache to go stale."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        verbose: bool = False,
        config: Config | None = None,
    ) -> None:
        self._config = config
        if database_url is None:
            self._config = config = config or Config.load()
            database_url = config.database_url()
        super().__init__(database_url, verbose=verbose)

    def default_hosts(self) -> Sequence[tuple[str, str]]:
        try:
            config = self._config or Config.load()
        except LMStrixError:  # a broken config must not block adding a model by hand
            return ()
        return [(h.name, h.url) for h in config.hosts]


__all__ = ["Model", "ModelRegistry", "ScanSummary"]
