"""Where a command's prompt comes from: PROMPT, ``--file``, standard input, or a template.

    lmstrix infer -m M "Say hi"
    lmstrix infer -m M --file prompt.txt
    echo "Say hi" | lmstrix infer -m M
    lmstrix infer -m M --templates prompts.toml --template summary --text-file doc.md --var lang=en

A template is a prompt of a TOML file as :class:`~lmstrix.loaders.prompt_loader.PromptLoader`
reads it; ``--var NAME=VALUE`` fills ``{{NAME}}``, and ``--text`` / ``--text-file`` fill
``{{text}}``. Every placeholder left without a value is named in one error (exit 2).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click

from lmstrix.domain.errors import ValidationError
from lmstrix.loaders.context_loader import ContextLoader
from lmstrix.loaders.prompt_loader import PromptLoader


def read_prompt(prompt: str | None, file: str | None = None) -> str:
    """PROMPT as given; the text of ``--file``; or standard input when PROMPT is ``-`` or left
    out and input is piped in (``echo "..." | lmstrix infer -m M``)."""
    if file is not None:
        if prompt is not None:
            raise ValidationError("prompt", prompt, "give PROMPT or --file, not both")
        return ContextLoader().load_text_file(file)
    if prompt is not None and prompt != "-":
        return prompt
    if prompt is None and sys.stdin.isatty():
        raise ValidationError(
            "prompt", None, "give PROMPT as an argument, or pipe it in (PROMPT '-' reads stdin)"
        )
    text = sys.stdin.read()
    if not text.strip():
        raise ValidationError("prompt", text, "standard input was empty; pipe the prompt in")
    return text


def parse_vars(items: Sequence[str]) -> dict[str, str]:
    """``--var NAME=VALUE`` pairs (the value may hold ``=``); a later NAME wins."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValidationError("--var", item, "use NAME=VALUE, e.g. --var lang=English")
        out[name.strip()] = value
    return out


@dataclass(frozen=True, slots=True)
class PromptSource:
    """The prompt options of one command line."""

    prompt: str | None
    file: str | None
    template: str | None
    templates: str | None
    variables: tuple[str, ...]
    text: str | None
    text_file: str | None

    def read(self) -> str:
        """The prompt to send: rendered from the template, or read as :func:`read_prompt`."""
        if self.template is None and self.templates is None:
            given = [o for o, v in self._template_only() if v]
            if given:
                raise ValidationError(given[0], None, "needs --template NAME --templates FILE")
            return read_prompt(self.prompt, self.file)
        if self.template is None or self.templates is None:
            raise ValidationError(
                "--template" if self.template is None else "--templates",
                None,
                "give both: --template NAME (a prompt) and --templates FILE (the TOML file)",
            )
        if self.prompt is not None or self.file is not None:
            raise ValidationError(
                "prompt", self.prompt or self.file, "give PROMPT/--file or a --template, not both"
            )
        return self._render(self.template, self.templates)

    def _template_only(self) -> list[tuple[str, object]]:
        return [("--var", self.variables), ("--text", self.text), ("--text-file", self.text_file)]

    def _render(self, name: str, file: str) -> str:
        variables: dict[str, Any] = parse_vars(self.variables)
        if self.text is not None and self.text_file is not None:
            raise ValidationError("--text", self.text, "give --text or --text-file, not both")
        if self.text_file is not None:
            variables["text"] = ContextLoader().load_text_file(self.text_file)
        elif self.text is not None:
            variables["text"] = self.text
        try:
            return PromptLoader().render_template(file, name, variables)
        except ValidationError as exc:
            if exc.field != "variables" or not isinstance(exc.value, list):
                raise
            missing = [str(m) for m in exc.value]
            flags = ", ".join("--text TEXT" if m == "text" else f"--var {m}=VALUE" for m in missing)
            raise ValidationError(
                "--var",
                missing,
                f"template {name!r} of {file} has no value for "
                + ", ".join("{{" + m + "}}" for m in missing)
                + f"; pass {flags}",
            ) from None


# ``--file`` for the prompt, read by :func:`read_prompt` (its ``file``).
prompt_file_option = click.option(
    "--file",
    "prompt_file",
    type=click.Path(dir_okay=False),
    help="Read the prompt from this text file (instead of PROMPT).",
)


def prompt_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """PROMPT and the options that choose a prompt, handed to ``fn`` as one ``source``
    (:class:`PromptSource`) keyword."""
    names = ("prompt", "prompt_file", "template", "templates", "variables", "text", "text_file")

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["source"] = PromptSource(*(kwargs.pop(n) for n in names))
        return fn(*args, **kwargs)

    for option in reversed(
        [
            click.argument("prompt", required=False),
            prompt_file_option,
            click.option("--template", metavar="NAME", help="Use this prompt of --templates."),
            click.option(
                "--templates",
                metavar="FILE",
                type=click.Path(dir_okay=False),
                help="TOML prompt file (the format PromptLoader reads).",
            ),
            click.option(
                "--var",
                "variables",
                multiple=True,
                metavar="NAME=VALUE",
                help="Fill {{NAME}} of the template (repeatable).",
            ),
            click.option("--text", help="Fill {{text}} of the template."),
            click.option(
                "--text-file",
                type=click.Path(dir_okay=False),
                help="Fill {{text}} of the template with this file's text.",
            ),
        ]
    ):
        wrapper = option(wrapper)
    return wrapper


__all__ = ["PromptSource", "parse_vars", "prompt_file_option", "prompt_options", "read_prompt"]
