"""Prompt templating as pure functions: ``{{name}}`` placeholders, references between prompts.

Kept free of file I/O so the rules are tested directly (``prompt_loader`` reads the TOML).

The rules, following the original lmstrix's templates where they were sound:

- A placeholder is ``{{ name }}`` where ``name`` is a dotted path (``{{text}}``,
  ``{{ templates.base }}``); whitespace inside the braces is ignored. Anything else between
  double braces (``{{"json": 1}}``, ``{{#if}}``) is not a placeholder and stays verbatim.
- A name is looked up first in the caller's variables (dotted paths reach into nested dicts),
  then in the prompt library from its root (paths are absolute, never relative to the table the
  template sits in). Upstream looked in the library first, so a TOML key named like a runtime
  variable silently won; here the value the caller passes wins.
- A library string is a prompt and is rendered in turn (with the same variables), so prompts
  can include each other; a table holding a ``template`` (or ``prompt``) string counts as that
  string; numbers, booleans and dates are inserted as text. A cycle, a reference deeper than
  ``MAX_DEPTH`` or a reference to a plain table is a ``ValidationError`` naming the chain.
- Variable values are inserted verbatim and never scanned again, so text from a user or a file
  cannot pull in other prompts or variables. Nothing is evaluated: there are no expressions.
- Every placeholder that resolves to nothing is collected, and one ``ValidationError`` names them
  all (upstream left them in the output with a warning only visible under ``--verbose``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from lmstrix.domain.errors import ValidationError

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w-]*(?:\.[\w-]+)*)\s*\}\}")
MAX_DEPTH = 10
# Keys that make a table stand for a prompt: upstream's ``template``, and ``prompt`` as the
# upstream docs' examples (``[aps] prompt = """..."""``) use it.
TEMPLATE_KEYS = ("template", "prompt")

MISSING = object()


def placeholders(template: str) -> list[str]:
    """The distinct placeholder names of ``template``, in order of first appearance."""
    seen: dict[str, None] = {}
    for m in PLACEHOLDER.finditer(template):
        seen.setdefault(m.group(1), None)
    return list(seen)


def lookup(data: Mapping[str, Any], path: str) -> Any:
    """The value at dotted ``path`` in nested mappings, or ``MISSING``. An exact key with dots
    in it (``{"a.b": 1}``) is found too, as TOML allows quoted keys like that."""
    if path in data:
        return data[path]
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node


def template_of(value: Any) -> str | None:
    """The template a library value stands for: a string, or a table's ``template`` string."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        for key in TEMPLATE_KEYS:
            if isinstance(value.get(key), str):
                return str(value[key])
    return None


def scalar_text(value: Any) -> str | None:
    """Text for a scalar value (numbers, booleans, dates); ``None`` for anything else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return None


@dataclass(slots=True)
class _Render:
    variables: Mapping[str, Any]
    library: Mapping[str, Any]
    name: str
    label: str
    missing: list[str] = field(default_factory=list)
    # missing name -> the referenced prompt that uses it (when not the top template itself)
    used_by: dict[str, str] = field(default_factory=dict)

    def expand(self, template: str, chain: tuple[str, ...]) -> str:
        return PLACEHOLDER.sub(lambda m: self.value(m.group(0), m.group(1), chain), template)

    def value(self, raw: str, key: str, chain: tuple[str, ...]) -> str:
        var = lookup(self.variables, key)
        if var is not MISSING and var is not None:
            text = var if isinstance(var, str) else scalar_text(var)
            if text is None:
                raise ValidationError(
                    f"variables.{key}",
                    var,
                    "must be text, a number, a boolean or a date "
                    f"(it fills {{{{{key}}}}} in prompt {self.label})",
                )
            return text
        ref = lookup(self.library, key)
        if ref is MISSING or ref is None:
            if key not in self.missing:
                self.missing.append(key)
                if chain and chain[-1] != self.name:
                    self.used_by[key] = chain[-1]
            return raw
        sub = template_of(ref)
        if sub is None:
            text = scalar_text(ref)
            if text is None:
                raise ValidationError(
                    "template",
                    self.name,
                    f"{{{{{key}}}}} refers to a {type(ref).__name__}, not to text or a prompt "
                    f"(via {' -> '.join((*chain, key))})",
                )
            return text
        if key in chain:
            raise ValidationError(
                "template",
                self.name,
                f"prompts refer to each other in a cycle: {' -> '.join((*chain, key))}",
            )
        if len(chain) > MAX_DEPTH:
            raise ValidationError(
                "template",
                self.name,
                f"prompt references nest deeper than {MAX_DEPTH}: {' -> '.join((*chain, key))}",
            )
        return self.expand(sub, (*chain, key))


def render(
    template: str,
    variables: Mapping[str, Any] | None = None,
    library: Mapping[str, Any] | None = None,
    *,
    name: str = "<template>",
    where: str | None = None,
) -> str:
    """``template`` with every placeholder filled (see the module docstring for the rules).

    Raises ``ValidationError`` whose ``field`` is ``variables`` and whose ``value`` lists the
    missing names when any placeholder has no value. ``where`` (a file and line) is added to the
    messages so the prompt can be found.
    """
    if not isinstance(template, str):
        raise ValidationError("template", template, "must be a string")
    if variables is not None and not isinstance(variables, Mapping):
        raise ValidationError("variables", variables, "must be a mapping of names to values")
    label = f"{name!r}" + (f" ({where})" if where else "")
    job = _Render(variables or {}, library or {}, name, label)
    own = name if library is not None and lookup(library, name) is not MISSING else None
    out = job.expand(template, (own,) if own else ())
    if job.missing:
        listed = ", ".join(
            "{{" + m + "}}" + (f" (used by {job.used_by[m]!r})" if m in job.used_by else "")
            for m in job.missing
        )
        raise ValidationError(
            "variables",
            job.missing,
            f"no value for {listed} in prompt {label}; pass "
            + ", ".join(repr(m) for m in job.missing)
            + " in the variables",
        )
    return out


def prompt_names(library: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every dotted name in ``library`` that is a prompt (a string, or a table with a
    ``template``/``prompt`` string), in document order."""
    out: list[str] = []
    for key, value in library.items():
        path = f"{prefix}{key}"
        if isinstance(value, str):
            out.append(path)
        elif isinstance(value, Mapping):
            if template_of(value) is not None:
                out.append(path)
            out.extend(prompt_names(value, f"{path}."))
    return out
