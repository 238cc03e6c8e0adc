"""CLI groups ``lmstrix registry`` (import/export) and ``lmstrix db`` (upgrade/current).

Thin wrappers over :mod:`lmstrix.loaders.registry_io` and :mod:`lmstrix.core.database`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from lmstrix.cli.errors import handle_errors
from lmstrix.cli.output import check_writable, echo_json

if TYPE_CHECKING:  # the migrations (Alembic) load only for the commands that use them
    from lmstrix.core.database import RevisionState


@click.group("registry")
def registry() -> None:
    """Import the original lmstrix's registry file, or export the registry as JSON."""


@registry.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--host", help="Host the models belong to (default: the first configured host).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def import_command(file: Path, host: str | None, as_json: bool) -> None:
    """Import FILE, an original lmstrix registry (lmstrix.json), keeping its test results.

    All or nothing: a malformed file changes nothing and the error names the line and field.
    """
    from lmstrix.loaders.registry_io import import_upstream

    summary = import_upstream(file, host=host)
    if as_json:
        echo_json(summary.to_dict())
        return
    counts = summary.to_dict()
    click.echo(
        f"imported {counts['total']} models from {file} into host {summary.host!r}: "
        f"{counts['added']} added, {counts['updated']} updated"
    )


@registry.command("export")
@click.option("--json", "as_json", is_flag=True, default=True, help="JSON (the default format).")
@click.option("--host", help="Only the models of this host.")
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file."
)
@handle_errors
def export_command(as_json: bool, host: str | None, output: Path | None) -> None:
    """Print every model in the registry as a JSON list."""
    import json

    from lmstrix.loaders.registry_io import export_registry

    check_writable("--output", output)
    data = export_registry(host=host)
    if output is None:
        echo_json(data)
        return
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(output)
    click.echo(f"exported {len(data)} models to {output}", err=True)


@click.group("db")
def db() -> None:
    """Database schema: migrate to the newest version, or show the current one."""


def _state_dict(state: RevisionState) -> dict[str, object]:
    return {
        "database": state.url,
        "current": list(state.current),
        "head": list(state.heads),
        "at_head": state.at_head,
    }


@db.command("upgrade")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def upgrade_command(as_json: bool) -> None:
    """Migrate the database to the newest schema (safe to run while lmstrix is in use)."""
    from lmstrix.core.database import upgrade_schema

    state = upgrade_schema()
    if as_json:
        echo_json(_state_dict(state))
    else:
        click.echo(f"{state.url} is at revision {', '.join(state.current)} (newest)")


@db.command("current")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def current_command(as_json: bool) -> None:
    """Show the database's schema revision and whether it is the newest."""
    from lmstrix.core.database import schema_state

    state = schema_state()
    if as_json:
        echo_json(_state_dict(state))
        return
    current = ", ".join(state.current) or "none (empty database)"
    note = "newest" if state.at_head else f"newest is {', '.join(state.heads)}"
    click.echo(f"{state.url}: revision {current} ({note})")
    if not state.at_head:
        click.echo("run `lmstrix db upgrade` (lmstrix also migrates on first use)", err=True)


__all__ = ["db", "registry"]
