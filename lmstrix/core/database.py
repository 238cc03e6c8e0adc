"""The database's schema: where it stands, and migrating it to the newest version.

lmstrix migrates on first use anyway; these are for operators who want to do it on purpose
(before starting workers, say) or to check. The database is the configured one unless a URL is
given.
"""

from __future__ import annotations

from lmstrix.core.config import Config
from lmstrix.db.migrate import RevisionState, revision_state, upgrade


def _url(database_url: str | None, config: Config | None) -> str:
    return database_url or (config or Config.load()).database_url()


def schema_state(database_url: str | None = None, *, config: Config | None = None) -> RevisionState:
    """The database's current schema revision(s) and the newest ones; changes nothing."""
    return revision_state(_url(database_url, config))


def upgrade_schema(
    database_url: str | None = None, *, config: Config | None = None
) -> RevisionState:
    """Migrate the database to the newest schema (safe while lmstrix is in use); returns
    where it then stands."""
    return upgrade(_url(database_url, config))


__all__ = ["RevisionState", "schema_state", "upgrade_schema"]
