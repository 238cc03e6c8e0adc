"""``lmstrix submit``: queue work and return at once with its id (inference, context test, batch
file); ``lmstrix jobs wait`` or ``lmstrix batch status`` follow it up."""

from __future__ import annotations

import click

from lmstrix.cli.batch import submit_file
from lmstrix.cli.errors import handle_errors
from lmstrix.cli.infer import submit_infer
from lmstrix.cli.test import submit_test


@click.group()
def submit() -> None:
    """Queue work and return at once with the job id."""


submit.add_command(submit_infer)
submit.add_command(submit_test)


@submit.command(name="batch")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-m", "--model", help="Model for requests whose body names none.")
@click.option("--metadata", multiple=True, help="KEY=VALUE stored on the batch (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the batch object as JSON.")
@handle_errors
def submit_batch(file: str, model: str | None, metadata: tuple[str, ...], as_json: bool) -> None:
    """Queue an OpenAI Batch file (JSONL) and print its batch id (see `lmstrix batch`)."""
    submit_file(file, model, metadata, as_json)


__all__ = ["submit"]
