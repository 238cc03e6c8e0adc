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
- ``{{`` followed by a name that is never closed (``{{name`` at the end, ``{{name} ...``, or
  another ``{{`` before the next ``}}``) is a ``ValidationError`` naming the prompt, the line and
  the column: it is almost always a typo that would otherwise reach the model as is.
- Rendering is bounded: at most ``MAX_REFERENCES`` placeholders are filled in one render
  (counting those of the prompts referred to, at every level), and the text of any prompt, the
  result included, may not grow past ``MAX_RENDERED_CHARS``. A library whose prompts refer to
  each other several times at every level grows exponentially (8 levels of 10 references are
  10^8 copies); it is refused with a ``ValidationError`` naming the prompt and the limit instead
  of running for hours.
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
# The start of a placeholder: ``{{`` and a name. Not followed by ``}}`` it is an unterminated one
# (or, with ``}}`` later and no ``{{`` in between, other text between braces, left verbatim).
_OPENING = re.compile(r"\{\{\s*[A-Za-z_][\w-]*(?:\.[\w-]+)*")
MAX_DEPTH = 10
# Placeholders filled in one render, counting those inside referenced prompts at every level.
MAX_REFERENCES = 10_000
# Characters any prompt may render to (about a million tokens: more than any context holds).
MAX_RENDERED_CHARS = 4_000_000
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


def unterminated(template: str) -> int | None:
    """The offset of the first ``{{name`` in ``template`` that is never closed, or None.

    Never closed: no ``}}`` follows, or another ``{{`` comes first. ``{{name|upper}}`` and the
    like are closed (and stay verbatim, as they are no placeholder).
    """
    starts = {m.start() for m in PLACEHOLDER.finditer(template)}
    for m in _OPENING.finditer(template):
        if m.start() in starts:
            continue
        close = template.find("}}", m.end())
        reopen = template.find("{{", m.end())
        if close < 0 or 0 <= reopen < close:
            return m.start()
    return None


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

    max_references: int = MAX_REFERENCES
    max_chars: int = MAX_RENDERED_CHARS
    references: int = 0

    def expand(self, template: str, chain: tuple[str, ...]) -> str:
        self.check_terminated(template, chain)
        pieces: list[str] = []
        size = 0
        end = 0
        for m in PLACEHOLDER.finditer(template):
            self.references += 1
            if self.references > self.max_references:
                self.too_big(
                    f"fills more than {self.max_references} placeholders", "max_references", chain
                )
            text = self.value(m.group(0), m.group(1), chain)
            pieces += (template[end : m.start()], text)
            size += m.start() - end + len(text)
            end = m.end()
            if size > self.max_chars:
                self.too_big(
                    f"renders to more than {self.max_chars} characters", "max_rendered_chars", chain
                )
        pieces.append(template[end:])
        if size + len(template) - end > self.max_chars:
            self.too_big(
                f"renders to more than {self.max_chars} characters", "max_rendered_chars", chain
            )
        return "".join(pieces)

    def too_big(self, what: str, knob: str, chain: tuple[str, ...]) -> None:
        via = f" (at {' -> '.join(chain)})" if len(chain) > 1 else ""
        raise ValidationError(
            "template",
            self.name,
            f"prompt {self.label} {what}{via}, the limit ({knob}); prompts that refer to "
            "each other several times at every level grow exponentially: flatten them, shorten "
            f"the variables, or raise the limit with PromptLoader({knob}=...)",
        )

    def check_terminated(self, template: str, chain: tuple[str, ...]) -> None:
        at = unterminated(template)
        if at is None:
            return
        line = template.count("\n", 0, at) + 1
        column = at - (template.rfind("\n", 0, at) + 1) + 1
        opening = _OPENING.match(template, at)
        shown = opening.group(0) if opening else "{{"
        name = chain[-1] if chain else self.name
        label = self.label if name == self.name else repr(name)
        raise ValidationError(
            "template",
            name,
            f"unterminated placeholder {shown!r} at line {line}, column {column} of prompt "
            f"{label}; close it with '}}}}'",
        )

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
    max_references: int = MAX_REFERENCES,
    max_chars: int = MAX_RENDERED_CHARS,
) -> str:
    """``template`` with every placeholder filled (see the module docstring for the rules).

    Raises ``ValidationError`` whose ``field`` is ``variables`` and whose ``value`` lists the
    missing names when any placeholder has no value. ``where`` (a file and line) is added to the
    messages so the prompt can be found. ``max_references`` and ``max_chars`` bound the work
    (see the module docstring); past either, ``ValidationError`` on ``template``.
    """
    if not isinstance(template, str):
        raise ValidationError("template", template, "must be a string")
    if variables is not None and not isinstance(variables, Mapping):
        raise ValidationError("variables", variables, "must be a mapping of names to values")
    label = f"{name!r}" + (f" ({where})" if where else "")
    job = _Render(
        variables or {},
        library or {},
        name,
        label,
        max_references=max_references,
        max_chars=max_chars,
    )
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
