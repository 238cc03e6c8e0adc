"""The hosts table: one row per server lmstrix talks to, created the first time anything names it.

A host *is* its normalized URL (``hosts.url_key``, see :func:`lmstrix.domain.urls.host_key`); its
name is a label, the one the configuration gives it now:

- the same server under a new name (first ``LMSTRIX_BASE_URL``'s ``local``, then a name in
  ``LMSTRIX_HOSTS``) is the same row, relabelled, with its models and test results;
- a name pointed at another server gets a new row; the old server's row gives up the name
  (it becomes ``name@url``, a label no configuration can spell) and keeps its results.

A scan, a model added by hand, an import and a submitted job may all be first to name a host,
possibly in several processes at once; they all go through :func:`get_or_create_host`.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from lmstrix.db.tables import Host
from lmstrix.domain.clock import utcnow
from lmstrix.domain.errors import ValidationError
from lmstrix.domain.urls import host_key

#: Longest host name the table holds.
NAME_LENGTH = 128


def get_or_create_host(s: Session, name: str, url: str) -> Host:
    """The row of the server at ``url``, labelled ``name`` (race-safe: insert-if-absent).

    Without a URL (a model added by hand for a host that is not configured) the row named
    ``name``, created without an identity if missing.
    """
    if not name:
        raise ValidationError("host", name, "a host name is needed")
    if not url:  # a host known only by name has no identity yet (url_key NULL)
        by_name = s.scalar(select(Host).where(Host.name == name).with_for_update())
        if by_name is None:
            by_name = Host(name=name, url="", created_at=utcnow())
            s.add(by_name)
            s.flush()
        return by_name
    key = host_key(url)
    host = s.scalar(select(Host).where(Host.url_key == key).with_for_update())
    if host is not None:
        if host.name != name:
            _free_name(s, name, keep=host.id)
            host.name = name
        host.url = url
        s.flush()
        return host
    _free_name(s, name, keep=None)
    values_ = {"name": name, "url": url, "url_key": key, "created_at": utcnow()}
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        s.execute(pg_insert(Host).values(**values_).on_conflict_do_nothing())
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        s.execute(sqlite_insert(Host).values(**values_).on_conflict_do_nothing())
    else:
        s.add(Host(**values_))
        s.flush()
    return s.execute(select(Host).where(Host.url_key == key).with_for_update()).scalar_one()


def named_host(s: Session, name: str, url: str) -> Host:
    """The row labelled ``name`` if there is one, else the row of the server at ``url``: for a
    caller that named a host and took its URL from the configuration as a default."""
    found = s.scalar(select(Host).where(Host.name == name).with_for_update())
    return found if found is not None else get_or_create_host(s, name, url)


def _free_name(s: Session, name: str, *, keep: int | None) -> None:
    """The row (other than ``keep``) labelled ``name`` belongs to another server now: it keeps
    its rows under the label ``name@its-url``."""
    other = s.scalar(select(Host).where(Host.name == name).with_for_update())
    if other is None or other.id == keep:
        return
    label = f"{name}@{other.url_key or other.url}"[:NAME_LENGTH]
    n = 2
    while s.scalar(select(Host.id).where(Host.name == label)) is not None:
        label = f"{name}@{other.url_key or other.url}#{n}"[-NAME_LENGTH:]
        n += 1
    other.name = label
    s.flush()


def forget_host(s: Session, name: str) -> int:
    """Delete the host labelled ``name`` with its models, jobs and probes (they cascade);
    returns how many host rows went (0 or 1)."""
    found = s.scalar(select(Host.id).where(Host.name == name))
    if found is None:
        return 0
    s.execute(delete(Host).where(Host.id == found))
    return 1
