"""LM Studio's per-model default load config, and the one edit lmstrix makes to it.

LM Studio keeps the load settings chosen for a model (context length, GPU offload, ...) in
``<LM Studio home>/.internal/user-concrete-model-default-config/<model path>.json``, where the
model path is the one ``lms ls --json`` shows (``publisher/repo/file.gguf``)::

    {"preset": "", "operation": {"fields": []},
     "load": {"fields": [{"key": "llm.load.contextLength", "value": 16384}]}}

``lmstrix apply`` upserts the ``llm.load.contextLength`` entry of ``load.fields`` with a model's
tested context (capped by ``--limit``) and keeps every other field and key as it was, so LM Studio
then loads the model at a context this machine is known to handle.

This module is the pure part: where the file lives under the home, the edit (old document and
value in, new document out), the ``--limit`` rule, which models can be applied, and the report.
Reading the file and writing it atomically with a backup happen in
:mod:`lmstrix.core.lmstudio_defaults`.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal
from urllib.parse import urlsplit

from lmstrix.domain.errors import ConfigurationError, ValidationError
from lmstrix.domain.model import Model

# Under the LM Studio home.
DEFAULT_CONFIG_DIR = PurePosixPath(".internal/user-concrete-model-default-config")
CONTEXT_LENGTH_KEY = "llm.load.contextLength"
# Host names of this machine, whatever it is called otherwise.
LOOPBACK_NAMES = frozenset({"localhost", "0.0.0.0"})

Action = Literal["created", "updated", "unchanged"]


def empty_config() -> dict[str, Any]:
    """What LM Studio writes for a model without settings of its own."""
    return {"preset": "", "operation": {"fields": []}, "load": {"fields": []}}


def _refuse(source: str, problem: str) -> ConfigurationError:
    return ConfigurationError(
        f"{source} is not an LM Studio default config ({problem}); lmstrix left it untouched: "
        "fix or remove it",
        source=source,
    )


def _load_fields(document: Any, source: str) -> list[Any] | None:
    """``document["load"]["fields"]``; None when either is absent. A document of another shape
    raises ``ConfigurationError`` naming ``source``."""
    if not isinstance(document, Mapping):
        raise _refuse(source, f"the top level is a JSON {_json_kind(document)}, not an object")
    load = document.get("load")
    if load is None:
        return None
    if not isinstance(load, Mapping):
        raise _refuse(source, f'"load" is a JSON {_json_kind(load)}, not an object')
    fields = load.get("fields")
    if fields is None:
        return None
    if not isinstance(fields, list):
        raise _refuse(source, f'"load.fields" is a JSON {_json_kind(fields)}, not a list')
    return fields


def _json_kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def context_length_of(document: Any, *, source: str = "the document") -> int | None:
    """The ``llm.load.contextLength`` a default config sets, if it sets one (an int)."""
    for entry in _load_fields(document, source) or []:
        if isinstance(entry, Mapping) and entry.get("key") == CONTEXT_LENGTH_KEY:
            value = entry.get("value")
            return value if isinstance(value, int) and not isinstance(value, bool) else None
    return None


def with_context_length(document: Any, value: int, *, source: str = "the document") -> Any:
    """A copy of ``document`` (a parsed default config; ``None`` for a model without one) whose
    ``load.fields`` sets ``llm.load.contextLength`` to ``value``: the entry's value is replaced
    where it exists, else the entry is appended. Every other key, field and order is kept, and
    ``document`` itself is not changed. A document of another shape raises
    ``ConfigurationError`` naming ``source``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValidationError("context_length", value, "must be a whole number of tokens above 0")
    new = empty_config() if document is None else copy.deepcopy(document)
    fields = _load_fields(new, source)
    if fields is None:  # no "load" or no "load.fields" (or null): start them
        if new.get("load") is None:
            new["load"] = {}
        fields = new["load"]["fields"] = []
    entries = [e for e in fields if isinstance(e, dict) and e.get("key") == CONTEXT_LENGTH_KEY]
    for entry in entries:
        entry["value"] = value
    if not entries:
        fields.append({"key": CONTEXT_LENGTH_KEY, "value": value})
    return new


def default_config_path(model_path: str) -> PurePosixPath:
    """Where a model's default config lives, relative to the LM Studio home:
    ``.internal/user-concrete-model-default-config/<model path>.json``. A path that is absolute
    or climbs out (``..``) is refused, so no registry value can point the write elsewhere."""
    parts = model_path.strip().replace("\\", "/").split("/") if model_path else [""]
    if any(p in ("", ".", "..") for p in parts) or ":" in parts[0]:
        raise ValidationError(
            "path",
            model_path,
            "must be a model path relative to LM Studio's models directory, as `lms ls --json` "
            "shows it (publisher/repo/file.gguf)",
        )
    return DEFAULT_CONFIG_DIR.joinpath(*parts[:-1], parts[-1] + ".json")


# -- the --limit rule ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContextCap:
    """``--limit``: at most ``tokens`` tokens, or at most ``percent`` % of the tested context."""

    tokens: int | None = None
    percent: int | None = None

    @classmethod
    def parse(cls, value: str | int | None, *, field: str = "limit") -> ContextCap | None:
        """``"12000"`` (tokens) or ``"75%"`` (of the tested context); None stays None.
        ``field`` names the option in the error (``--limit`` on the command line)."""
        if value is None:
            return None
        text = str(value).strip()
        percent = text.endswith("%")
        digits = text.removesuffix("%").strip()
        number = int(digits) if digits.isdecimal() else 0
        if percent and 1 <= number <= 100:
            return cls(percent=number)
        if not percent and number > 0:
            return cls(tokens=number)
        raise ValidationError(
            field,
            value,
            "give a number of tokens above 0 (e.g. 16384) or a percentage of the tested "
            "context from 1% to 100% (e.g. 75%)",
        )

    def applied_to(self, tested: int) -> int:
        """The context to write for a model tested at ``tested`` tokens (never above it)."""
        if self.percent is not None:
            return max(1, tested * self.percent // 100)
        return min(tested, self.tokens or tested)

    def __str__(self) -> str:
        return f"{self.percent}%" if self.percent is not None else str(self.tokens)


# -- which models --------------------------------------------------------------------------------


def on_this_machine(url: str | None, local_names: Collection[str] = ()) -> bool:
    """Whether an LM Studio URL points at this machine: a loopback address, ``localhost``, or
    one of ``local_names`` (this machine's own host names)."""
    host = (urlsplit(url).hostname or "").lower() if url else ""
    if not host:
        return False
    if host in LOOPBACK_NAMES or host.endswith(".localhost") or host in local_names:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refusal(
    model: Model,
    *,
    path: str | None = None,
    host_named: bool = False,
    local_names: Collection[str] = (),
) -> str | None:
    """Why ``model``'s tested context cannot be written into this machine's LM Studio, or None
    when it can. ``path`` overrides the registry's file path; ``host_named`` means the caller
    named the model's host, and so vouches that its LM Studio is this machine's."""
    if model.type == "embedding":
        return "is an embedding model; only LLMs have a context length to load with"
    if not model.tested_context:
        return f"was never tested; run `lmstrix test {model.id}` first"
    if not model.present:
        return f"is no longer on host {model.host!r}; run `lmstrix scan` if it is back"
    if not host_named and not on_this_machine(model.host_url, local_names):
        return (
            f"is on host {model.host!r} ({model.host_url or 'no URL'}), not on this machine; "
            f"if that host's LM Studio is this machine's, name it with --host {model.host}"
        )
    if not (path or model.path):
        return (
            "has no LM Studio file path in the registry (a scan over HTTP does not report it); "
            "give it with --path, as `lms ls --json` shows it"
        )
    return None


# -- the report ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppliedContext:
    """One model's default config, written (or, in a dry run, as it would be written)."""

    model_id: str
    host: str
    file: str
    tested_context: int
    context_length: int  # the value written
    previous: int | None  # the value the file had (None: none, or no file)
    action: Action
    backup: str | None  # where the old file was kept (None: no old file, or nothing written)
    dry_run: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class NotApplied:
    """A model left alone, and why."""

    model_id: str
    host: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class ApplyReport:
    """What ``apply`` did: written (or would write), skipped (not applicable), failed (a file
    that could not be read or written)."""

    home: str
    dry_run: bool
    applied: list[AppliedContext] = field(default_factory=list)
    skipped: list[NotApplied] = field(default_factory=list)
    failed: list[NotApplied] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "home": self.home,
            "dry_run": self.dry_run,
            "applied": [a.to_dict() for a in self.applied],
            "skipped": [s.to_dict() for s in self.skipped],
            "failed": [f.to_dict() for f in self.failed],
        }


__all__ = [
    "CONTEXT_LENGTH_KEY",
    "DEFAULT_CONFIG_DIR",
    "AppliedContext",
    "ApplyReport",
    "ContextCap",
    "NotApplied",
    "context_length_of",
    "default_config_path",
    "empty_config",
    "on_this_machine",
    "refusal",
    "with_context_length",
]
