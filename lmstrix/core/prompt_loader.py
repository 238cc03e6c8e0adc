"""``PromptLoader``: prompt templates kept in TOML files, rendered with ``{{var}}`` placeholders.

    loader = PromptLoader()
    prompts = loader.load_prompts("templates.toml")        # the whole file, nested tables too
    prompt = loader.get_prompt("summary.short", prompts)   # dotted names
    text = loader.render_prompt(prompt, {"text": "..."})   # fills {{text}} and {{other.prompts}}

The file handling lives here; the templating rules are the pure functions of
:mod:`lmstrix.domain.templating`. Errors name the file, and where it is known the line and the
key, because a prompt library grows large and "invalid template" alone sends people searching.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmstrix.domain import templating
from lmstrix.domain.errors import ConfigurationError, ValidationError
from lmstrix.domain.nesting import loads_toml

MAX_FILE_BYTES = 8 * 1024 * 1024  # a prompt library, not a data set

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_HEADER = re.compile(r"^\s*\[\[?\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(
    r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*="""
)


class PromptLibrary(dict[str, Any]):
    """A parsed prompt file: the TOML document as a dict, plus where it came from.

    ``source`` is the file (or ``"<string>"``) and ``lines`` maps dotted keys to the line that
    defines them, for error messages.
    """

    def __init__(
        self, data: Mapping[str, Any], source: str = "<string>", lines: dict[str, int] | None = None
    ) -> None:
        super().__init__(data)
        self.source = source
        self.lines: dict[str, int] = lines or {}

    def where(self, key: str) -> str:
        line = self.lines.get(key)
        return f"{self.source}, line {line}" if line else self.source

    def names(self) -> list[str]:
        """Every prompt name in the file (dotted), in document order."""
        return templating.prompt_names(self)


class PromptTemplate(str):
    """One prompt from a library: the template text (it *is* the ``str``), plus its ``name``, its
    ``library`` (so ``{{other.prompt}}`` references resolve when rendering) and ``where`` it is
    defined."""

    name: str
    library: PromptLibrary | None
    where: str | None

    def __new__(
        cls,
        template: str,
        name: str = "<template>",
        library: PromptLibrary | None = None,
        where: str | None = None,
    ) -> PromptTemplate:
        obj = super().__new__(cls, template)
        obj.name = name
        obj.library = library
        obj.where = where
        return obj

    @property
    def template(self) -> str:
        return str.__str__(self)

    @property
    def placeholders(self) -> list[str]:
        """Names this template (not counting the prompts it refers to) expects."""
        return templating.placeholders(self)


def key_lines(text: str) -> dict[str, int]:
    """Dotted key -> 1-based line of its definition, read from TOML source.

    A line scan, not a parser: good enough to point at table headers and ``key =`` lines
    (multi-line strings are skipped); inline tables are not descended into.
    """
    out: dict[str, int] = {}
    table: list[str] = []
    in_string: str | None = None
    for n, line in enumerate(text.splitlines(), start=1):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        header = _HEADER.match(line)
        if header and not line.lstrip().startswith(("'", '"')):
            table = _split_key(header.group(1))
            out.setdefault(".".join(table), n)
            continue
        key = _KEY.match(line)
        if key:
            path = ".".join([*table, *_split_key(key.group(1))])
            out.setdefault(path, n)
            rest = line[key.end() :]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_string = quote
                    break
    return out


def _split_key(raw: str) -> list[str]:
    parts = re.findall(r"""\s*("[^"]*"|'[^']*'|[^.\s]+)\s*(?:\.|$)""", raw)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def parse_prompts(text: str, source: str = "<string>") -> PromptLibrary:
    """Parse TOML text into a :class:`PromptLibrary`; errors name ``source``, line and column."""
    try:
        data = loads_toml(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        pos = _TOML_POSITION.search(msg)
        where = f"{source}, line {pos.group(1)}, column {pos.group(2)}" if pos else source
        reason = _TOML_POSITION.sub("", msg)
        raise ConfigurationError(
            f"invalid TOML in prompts file {where}: {reason}", source=source
        ) from None
    return PromptLibrary(data, source, key_lines(text))


class PromptLoader:
    """Loads prompt libraries (TOML) and renders their prompts."""

    def __init__(
        self,
        max_file_bytes: int = MAX_FILE_BYTES,
        *,
        max_references: int = templating.MAX_REFERENCES,
        max_rendered_chars: int = templating.MAX_RENDERED_CHARS,
    ) -> None:
        """``max_references`` (placeholders filled in one render, at every level) and
        ``max_rendered_chars`` bound a render; past either it raises ``ValidationError``."""
        for field, value in (
            ("max_file_bytes", max_file_bytes),
            ("max_references", max_references),
            ("max_rendered_chars", max_rendered_chars),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(field, value, "must be a positive integer")
        self.max_file_bytes = max_file_bytes
        self.max_references = max_references
        self.max_rendered_chars = max_rendered_chars

    def load_prompts(self, path: str | os.PathLike[str]) -> PromptLibrary:
        """Read and parse a TOML prompt file."""
        p = Path(path).expanduser()
        source = str(path)
        if not p.exists():
            raise ConfigurationError(f"prompts file not found: {source}", source=source)
        if p.is_dir():
            raise ConfigurationError(
                f"prompts file {source} is a directory; pass a .toml file", source=source
            )
        size = p.stat().st_size
        if size > self.max_file_bytes:
            raise ConfigurationError(
                f"prompts file {source} is {size} bytes, more than the {self.max_file_bytes} "
                "a prompt library may have",
                source=source,
            )
        raw = p.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise ConfigurationError(
                f"prompts file {source}, line {line}: not UTF-8 (byte {exc.start}); TOML files "
                "must be UTF-8",
                source=source,
            ) from None
        return parse_prompts(text.removeprefix("\ufeff"), source)

    def get_prompt(self, name: str, prompts: Mapping[str, Any]) -> PromptTemplate:
        """The prompt called ``name`` (a dotted path such as ``summary.short``)."""
        library = prompts if isinstance(prompts, PromptLibrary) else PromptLibrary(prompts)
        if not isinstance(name, str) or not name.strip():
            raise ValidationError("template_name", name, "must be a non-empty prompt name")
        name = name.strip()
        value = templating.lookup(library, name)
        if value is templating.MISSING:
            available = library.names()
            close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            shown = ", ".join(available[:20]) + (" ..." if len(available) > 20 else "")
            raise ConfigurationError(
                f"no prompt {name!r} in {library.source}; {hint}"
                f"its prompts are: {shown or '(none)'}",
                key=name,
                source=library.source,
            )
        template = templating.template_of(value)
        if template is None:
            if isinstance(value, Mapping):
                inner = templating.prompt_names(value, f"{name}.")
                what = "a table without a 'template' string"
                more = f"; its prompts are: {', '.join(inner[:20])}" if inner else ""
            else:
                what, more = f"a {type(value).__name__}", ""
            raise ConfigurationError(
                f"{name!r} in {library.where(name)} is {what}, not a prompt{more}",
                key=name,
                source=library.source,
            )
        return PromptTemplate(template, name, library, library.where(name))

    def render_prompt(self, prompt: str, variables: Mapping[str, Any] | None = None) -> str:
        """Fill the placeholders of ``prompt`` (from :meth:`get_prompt`, or any string).

        References to other prompts resolve in the prompt's own library; a placeholder with no
        value raises ``ValidationError`` naming it.
        """
        refs, chars = self.max_references, self.max_rendered_chars
        if isinstance(prompt, PromptTemplate):
            return templating.render(
                prompt.template,
                variables,
                prompt.library,
                name=prompt.name,
                where=prompt.where,
                max_references=refs,
                max_chars=chars,
            )
        return templating.render(prompt, variables, max_references=refs, max_chars=chars)

    def render_template(
        self,
        template_file: str | os.PathLike[str],
        template_name: str,
        variables: Mapping[str, Any] | None = None,
    ) -> str:
        """Load, pick and render in one call (what ``infer_with_template`` needs)."""
        library = self.load_prompts(template_file)
        return self.render_prompt(self.get_prompt(template_name, library), variables)


__all__ = ["PromptLibrary", "PromptLoader", "PromptTemplate", "key_lines", "parse_prompts"]
