"""``load_model_registry()``: the entry point the public API documents for getting the registry."""

from __future__ import annotations

import logging

from lmstrix.core.models import ModelRegistry

log = logging.getLogger("lmstrix.registry")


def load_model_registry(verbose: bool = False, database_url: str | None = None) -> ModelRegistry:
    """Open the registry (``database_url``, else ``LMSTRIX_DATABASE_URL`` / ``database.url``,
    else the SQLite file in the user data dir), creating or migrating its tables if needed.

    Raises ``RegistryError`` naming the database when it cannot be used (corrupt file, no
    access), rather than returning an empty registry that would hide the data.
    """
    registry = ModelRegistry(database_url, verbose=verbose)
    if verbose:
        stats = registry.get_statistics()
        log.info(
            "registry %r: %d models on %d hosts (%d tested)",
            registry,
            stats["total"],
            stats["hosts"],
            stats["tested"],
        )
    return registry


__all__ = ["load_model_registry"]
