"""Import the original lmstrix's ``lmstrix.json`` registry, and export ours as JSON.

Users of the original lmstrix spent hours finding their models' context limits; importing its
file keeps those results. The file is ``{"llms": {<path>: {<record>}}, "path": ...}``: entries are
keyed by LM Studio's file path and the ``id`` field holds the model key, which is what we key on.

The import checks the whole file before writing anything, then writes it in one transaction: a
malformed file (bad JSON, a field of the wrong type) raises a ``ValidationError`` naming the line
and the field, and leaves the registry untouched.

Field mapping (original -> ours): ``id`` -> key, ``path``, ``size_bytes``, ``ctx_in`` -> declared
context, ``capabilities``/``has_tools``/``has_vision`` -> capabilities, ``tested_max_context`` ->
tested context, ``context_test_status`` (``completed`` -> ``tested``; a stale ``testing`` becomes
``tested`` if a tested context exists, else ``untested``), ``context_test_date`` -> last tested,
``ttft_seconds``, ``tps``, ``last_known_good_context``, ``last_known_bad_context``,
``description``, ``keywords`` -> tags, ``error_msg`` -> test error. Everything else (``ctx_out``,
``short_id``, ``loadable_max_context``...) is kept untouched in ``extra``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from lmstrix.core.models import ModelRegistry
from lmstrix.db import ModelRow, write_session
from lmstrix.db.hosts import get_or_create_host, named_host
from lmstrix.domain.errors import ValidationError
from lmstrix.domain.model import column_values, default_host
from lmstrix.domain.nesting import loads_json

# Original field -> our public field name (validated by domain.model.column_values).
_MAPPED = {
    "path": "path",
    "size_bytes": "size_bytes",
    "ctx_in": "declared_context",
    "tested_max_context": "tested_context",
    "context_test_status": "test_status",
    "context_test_date": "last_tested",
    "ttft_seconds": "time_to_first_token",
    "tps": "tokens_per_second",
    "last_known_good_context": "last_known_good_context",
    "last_known_bad_context": "last_known_bad_context",
    "description": "description",
    "keywords": "tags",
    "error_msg": "test_error",
    "display_name": "name",
    "architecture": "architecture",
    "type": "type",
}
_CAPABILITY_FIELDS = {"capabilities", "has_tools", "has_vision"}


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What an import did (model keys)."""

    file: str
    host: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "host": self.host,
            "added": len(self.added),
            "updated": len(self.updated),
            "total": len(self.added) + len(self.updated),
        }


def _line_of(text: str, entry_key: str) -> int | None:
    """The line where an entry starts (json reports no positions for values)."""
    at = text.find(json.dumps(entry_key))
    return None if at < 0 else text.count("\n", 0, at) + 1


def _where(file: Path, line: int | None) -> str:
    return f"{file}:{line}" if line else str(file)


def read_upstream(path: str | Path) -> tuple[Path, str, dict[str, Any]]:
    """Read and parse the file, with errors that name the file and the line."""
    file = Path(path).expanduser()
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ValidationError("file", str(file), f"{file} does not exist") from None
    except OSError as exc:
        raise ValidationError("file", str(file), f"cannot read {file}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(
            "file", str(file), f"{file} is not UTF-8 text (bad byte at offset {exc.start})"
        ) from None
    try:
        data = loads_json(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            "file",
            str(file),
            f"{file}:{exc.lineno}:{exc.colno}: not valid JSON at line {exc.lineno} "
            f"column {exc.colno} ({exc.msg})",
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("llms"), dict):
        raise ValidationError(
            "llms",
            type(data.get("llms") if isinstance(data, dict) else data).__name__,
            f'{file} must be an object with an "llms" object keyed by model path '
            "(the original lmstrix's lmstrix.json)",
        )
    return file, text, data


def _status(rec: Mapping[str, Any]) -> Any:
    status = rec.get("context_test_status")
    if status == "testing":  # a test that was interrupted; nothing is running it now
        return "tested" if rec.get("tested_max_context") else "untested"
    return status


def _capabilities(rec: Mapping[str, Any]) -> dict[str, Any] | None:
    if not any(k in rec for k in _CAPABILITY_FIELDS):
        return None
    caps = rec.get("capabilities")
    merged: dict[str, Any] = dict(caps) if isinstance(caps, Mapping) else {}
    if "trained_for_tool_use" in merged:
        merged["tool_use"] = bool(merged.pop("trained_for_tool_use"))
    if "has_tools" in rec and "tool_use" not in merged:
        merged["tool_use"] = bool(rec["has_tools"])
    if "has_vision" in rec and "vision" not in merged:
        merged["vision"] = bool(rec["has_vision"])
    return merged


def convert_record(entry_key: str, rec: Any, *, file: Path, text: str) -> dict[str, Any]:
    """One original record -> validated column values (plus ``key``)."""
    line = _line_of(text, entry_key)
    prefix = f"llms[{entry_key!r}]"
    if not isinstance(rec, Mapping):
        raise ValidationError(prefix, rec, f"must be an object (at {_where(file, line)})")
    key = rec.get("id")
    if not isinstance(key, str) or not key.strip():
        raise ValidationError(
            f"{prefix}.id",
            key,
            f"must be the model key, a non-empty string (at {_where(file, line)})",
        )
    public: dict[str, Any] = {}
    for source, target in _MAPPED.items():
        if source in rec and rec[source] is not None:
            public[target] = _status(rec) if source == "context_test_status" else rec[source]
    caps = rec.get("capabilities")
    if caps is not None and not isinstance(caps, Mapping):
        raise ValidationError(
            f"{prefix}.capabilities", caps, f"must be an object (at {_where(file, line)})"
        )
    capabilities = _capabilities(rec)
    if capabilities is not None:
        public["capabilities"] = capabilities
    public.setdefault("path", entry_key)
    extra = {
        k: v
        for k, v in rec.items()
        if k not in _MAPPED and k not in _CAPABILITY_FIELDS and k != "id"
    }
    if extra:
        public["extra"] = extra
    try:
        columns = column_values(public)
    except ValidationError as exc:
        original = next((s for s, t in _MAPPED.items() if t == exc.field), exc.field)
        raise ValidationError(
            f"{prefix}.{original}", exc.value, f"{exc.reason} (at {_where(file, line)})"
        ) from None
    columns["key"] = key.strip()
    return columns


def import_upstream(
    path: str | Path,
    *,
    host: str | None = None,
    host_url: str | None = None,
    database_url: str | None = None,
) -> ImportSummary:
    """Import an original lmstrix registry file into ``host`` (default: the first configured
    host), all or nothing. Values in the file overwrite ours; its nulls erase nothing."""
    file, text, data = read_upstream(path)
    converted = [
        convert_record(str(entry_key), rec, file=file, text=text)
        for entry_key, rec in data["llms"].items()
    ]
    by_key = {c["key"]: c for c in converted}  # the file may list one key under two paths
    registry = ModelRegistry(database_url)  # fails early, and clearly, on an unusable database
    host_name, url = default_host(host, host_url, registry.default_hosts())
    url_ = registry.database_url
    summary = ImportSummary(file=str(file), host=host_name)
    with write_session(url_) as s:
        h = get_or_create_host(s, host_name, url) if host_url else named_host(s, host_name, url)
        existing = {
            r.key: r
            for r in s.scalars(select(ModelRow).where(ModelRow.host_id == h.id).with_for_update())
        }
        for key in sorted(by_key):
            columns = {k: v for k, v in by_key[key].items() if k != "key" and v is not None}
            row = existing.get(key)
            if row is None:
                s.add(ModelRow(host_id=h.id, key=key, **columns))
                summary.added.append(key)
                continue
            if "extra" in columns:
                columns["extra"] = {**(row.extra or {}), **columns["extra"]}
            for column, value in columns.items():
                setattr(row, column, value)
            summary.updated.append(key)
    return summary


def export_registry(
    *, database_url: str | None = None, host: str | None = None
) -> list[dict[str, Any]]:
    """Every model as a JSON-able dict (what ``lmstrix registry export --json`` prints)."""
    return [m.to_dict() for m in ModelRegistry(database_url).list_models(host=host)]


__all__ = ["ImportSummary", "export_registry", "import_upstream", "read_upstream"]
