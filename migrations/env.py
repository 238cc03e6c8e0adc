"""Alembic environment for lmstrix.

Used two ways: programmatically by ``lmstrix.db.migrate`` (which passes a live connection in
``config.attributes["connection"]`` so the migration runs inside its locked transaction), and
from the command line for development (``alembic -c migrations/alembic.ini revision
--autogenerate -m "..."``), where the URL comes from ``-x url=...``, ``sqlalchemy.url`` or the
lmstrix config.

``render_as_batch=True`` makes autogenerate write batch operations, which SQLite needs to alter
tables (it recreates them) and other backends run as plain ALTERs.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection, create_engine
from sqlalchemy.pool import NullPool

from lmstrix.db.engine import normalize_url
from lmstrix.db.tables import metadata
from lmstrix.db.types import UTCDateTime

config = context.config
if config.config_file_name is not None and "connection" not in config.attributes:
    fileConfig(config.config_file_name)  # command-line use only; lmstrix configures its own logs


def _url() -> str:
    x_args = context.get_x_argument(as_dictionary=True)
    url = x_args.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        # Only the alembic command line gets here (lmstrix.db.migrate always names the URL): it
        # is an entry point of its own, so it reads the lmstrix configuration itself.
        from lmstrix.core.config import Config

        url = Config.load().database_url()
    return str(normalize_url(url).render_as_string(hide_password=False))


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Write lmstrix's own column types as plain SQLAlchemy types in new migrations, so the
    scripts do not import lmstrix code that may change later."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
        render_item=_render_item,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url(), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
