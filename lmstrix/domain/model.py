"""A model as the registry knows it, and the pure rules around it.

``Model`` records work both as objects and as read-only mappings (``m.tested_context`` and
``m["tested_context"]``; ``dict(m)``; ``m.to_dict()`` for JSON).

Model ids are LM Studio model keys (``qwen/qwen3-4b``, ``llama-3.2-3b-instruct``). A key is unique
per host; ``<host>/<key>`` names one host's copy. Lookups accept, in order: the exact key, the
``host/key`` form, the file path, the key in any letter case, then an unambiguous short form (the
part after the publisher, the key without an ``@variant``, the display name).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, computed_field, field_serializer

from lmstrix.domain.clock import iso_utc
from lmstrix.domain.enums import TestStatus, values
from lmstrix.domain.errors import ModelNotFoundError, ValidationError
from lmstrix.domain.host_types import Capabilities, ModelRecord

MIB = 1024 * 1024
DEFAULT_HOST = ("local", "http://localhost:1234")

TestStatusName = Literal["untested", "testing", "tested", "failed"]


class Model(BaseModel):
    """One model on one host, as the registry knows it."""

    model_config = ConfigDict(frozen=True)

    id: str
    host: str
    host_url: str | None = None
    name: str
    publisher: str | None = None
    type: str = "llm"
    architecture: str | None = None
    format: str | None = None
    quantization: str | None = None
    size_bytes: int | None = None
    parameters: str | None = None
    path: str | None = None
    declared_context: int | None = None
    capabilities: list[str] = []
    capability_details: dict[str, Any] = {}
    tested_context: int | None = None
    last_known_good_context: int | None = None
    last_known_bad_context: int | None = None
    test_status: TestStatusName = "untested"
    last_tested: datetime | None = None
    test_error: str | None = None
    time_to_first_token: float | None = None
    tokens_per_second: float | None = None
    tags: list[str] = []
    description: str | None = None
    extra: dict[str, Any] = {}
    present: bool = True
    missing_since: datetime | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def size_mb(self) -> float | None:
        """Size in MiB (what the original lmstrix and ``filter_models(size_range=...)`` use)."""
        return None if self.size_bytes is None else round(self.size_bytes / MIB, 1)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def qualified_id(self) -> str:
        """``<host>/<key>``: unambiguous when several hosts have the same model."""
        return f"{self.host}/{self.id}"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def context_limit(self) -> int | None:
        """The context to plan with: the tested one when known, else the declared one."""
        return self.tested_context or self.declared_context

    # -- read-only mapping protocol ------------------------------------------------------------

    def keys(self) -> list[str]:
        return [*type(self).model_fields, *type(self).model_computed_fields]

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.keys() else default

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (timestamps as ISO-8601 UTC strings, see ``iso_utc``)."""
        return self.model_dump(mode="json")

    @field_serializer("last_tested", "missing_since", "first_seen", "last_seen", when_used="json")
    def _timestamp(self, value: datetime | None) -> str | None:
        return None if value is None else iso_utc(value)


@dataclass(frozen=True, slots=True)
class ScanSummary:
    """What one host's scan changed in the registry (model keys)."""

    host: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # newly vanished from the host
    unchanged: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "updated": len(self.updated),
            "missing": len(self.missing),
            "unchanged": len(self.unchanged),
        }


# -- field validation for add_model / update_model --


def _reject(name: str, value: Any, reason: str) -> ValidationError:
    return ValidationError(name, value, reason)


def count_field(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _reject(name, value, "must be a whole number >= 0 (or None)")
    return value


def number_field(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _reject(name, value, "must be a number >= 0 (or None)")
    return float(value)


def text_field(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _reject(name, value, "must be a string (or None)")
    return value


def status_field(name: str, value: Any) -> str:
    if value == "completed":  # the original lmstrix's word for "tested"
        return TestStatus.TESTED.value
    if value not in values(TestStatus):
        raise _reject(name, value, f"must be one of {', '.join(values(TestStatus))}")
    return str(value)


def parse_timestamp(name: str, value: Any) -> datetime | None:
    """An aware UTC datetime from a datetime or an ISO-8601 string; naive input is taken as UTC
    (the original lmstrix wrote naive UTC, sometimes with a space instead of ``T``)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise _reject(name, value, "must be an ISO-8601 timestamp") from None
    if not isinstance(value, datetime):
        raise _reject(name, value, "must be a datetime or an ISO-8601 string")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def tags_field(name: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise _reject(name, value, "must be a list of strings")
    if not all(isinstance(t, str) for t in value):
        raise _reject(name, value, "must be a list of strings")
    return list(dict.fromkeys(value))


def capabilities_field(name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Capabilities):
        return {"vision": value.vision, "tool_use": value.tool_use, "reasoning": value.reasoning}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        aliases = {"tools": "tool_use", "tool": "tool_use"}
        return {aliases.get(str(v), str(v)): True for v in value}
    raise _reject(name, value, "must be a list of names (vision, tools, reasoning) or a dict")


def extra_field(name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _reject(name, value, "must be a dict")
    return dict(value)


def size_mb_field(name: str, value: Any) -> int | None:
    mb = number_field(name, value)
    return None if mb is None else round(mb * MIB)


# public field name (and accepted aliases) -> (column, converter)
_FIELDS: dict[str, tuple[str, Any]] = {
    "name": ("display_name", text_field),
    "display_name": ("display_name", text_field),
    "publisher": ("publisher", text_field),
    "type": ("type", text_field),
    "architecture": ("architecture", text_field),
    "format": ("format", text_field),
    "quantization": ("quantization", text_field),
    "size_bytes": ("size_bytes", count_field),
    "size_mb": ("size_bytes", size_mb_field),
    "parameters": ("params_string", text_field),
    "params_string": ("params_string", text_field),
    "path": ("path", text_field),
    "declared_context": ("declared_context", count_field),
    "max_context_length": ("declared_context", count_field),
    "ctx_in": ("declared_context", count_field),
    "capabilities": ("capabilities", capabilities_field),
    "tested_context": ("tested_context", count_field),
    "tested_max_context": ("tested_context", count_field),
    "last_known_good_context": ("last_known_good_context", count_field),
    "last_known_bad_context": ("last_known_bad_context", count_field),
    "test_status": ("test_status", status_field),
    "context_test_status": ("test_status", status_field),
    "last_tested": ("last_tested_at", parse_timestamp),
    "last_tested_at": ("last_tested_at", parse_timestamp),
    "context_test_date": ("last_tested_at", parse_timestamp),
    "test_error": ("test_error", text_field),
    "time_to_first_token": ("time_to_first_token", number_field),
    "ttft_seconds": ("time_to_first_token", number_field),
    "tokens_per_second": ("tokens_per_second", number_field),
    "tps": ("tokens_per_second", number_field),
    "tags": ("tags", tags_field),
    "description": ("description", text_field),
    "extra": ("extra", extra_field),
}
_IMMUTABLE = {"id", "host", "host_url", "key", "qualified_id"}


def column_values(data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate public field names and values into column values; the first problem raises a
    ValidationError naming the field."""
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name in _IMMUTABLE:
            raise _reject(name, value, "cannot be changed; remove and add the model instead")
        if name not in _FIELDS:
            known = ", ".join(sorted(_FIELDS))
            raise _reject(name, value, f"unknown model field; known fields: {known}")
        column, convert = _FIELDS[name]
        out[column] = convert(name, value)
    return out


# -- rows and records --


def capability_names(details: Mapping[str, Any] | None) -> list[str]:
    if not details:
        return []
    names = []
    for key, on in details.items():
        if not on:
            continue
        names.append("tools" if key in ("tool_use", "trained_for_tool_use") else key)
    return sorted(set(names))


def scanned_columns(rec: ModelRecord) -> dict[str, Any]:
    return {
        "display_name": rec.display_name,
        "publisher": rec.publisher,
        "type": rec.type,
        "architecture": rec.architecture,
        "format": rec.format,
        "quantization": rec.quantization,
        "size_bytes": rec.size_bytes,
        "params_string": rec.params_string,
        "declared_context": rec.max_context_length,
    }


def merge_capabilities(old: Mapping[str, Any] | None, caps: Capabilities) -> dict[str, Any]:
    """Scanned flags win, but richer details already known (e.g. reasoning options imported
    from the original lmstrix) survive a scan that only says ``True``."""
    merged = dict(old or {})
    for key, on in capabilities_field("capabilities", caps).items():
        if not (on is True and isinstance(merged.get(key), Mapping)):
            merged[key] = on
    return merged


def size_bounds(
    size_range: tuple[float | None, float | None] | None,
) -> tuple[float | None, float | None]:
    """``(min_mb, max_mb)`` checked: a pair, numbers >= 0 or None, min not above max."""
    if size_range is None:
        return None, None
    if isinstance(size_range, str | bytes) or len(size_range) != 2:
        raise ValidationError("size_range", size_range, "must be a pair (min_mb, max_mb)")
    lo, hi = (number_field("size_range", v) for v in size_range)
    if lo is not None and hi is not None and lo > hi:
        raise ValidationError("size_range", size_range, "min_mb must not exceed max_mb")
    return lo, hi


# -- id resolution --


@dataclass(frozen=True, slots=True)
class Candidate:
    row_id: int
    key: str
    host: str
    display_name: str | None
    path: str | None
    present: bool

    @property
    def qualified(self) -> str:
        return f"{self.host}/{self.key}"


def short_forms(c: Candidate) -> set[str]:
    key = c.key.lower()
    tail = key.rsplit("/", 1)[-1]
    forms = {tail, tail.split("@", 1)[0], key.split("@", 1)[0]}
    if c.display_name:
        forms.add(c.display_name.lower())
    if c.path:
        stem = c.path.lower().rsplit("/", 1)[-1]
        forms.update({stem, stem.removesuffix(".gguf")})
    return forms


def match(candidates: Sequence[Candidate], model_id: str, host: str | None = None) -> Candidate:
    """The one candidate ``model_id`` names: the exact key, then ``host/key``, then the file
    path, then the key in any letter case, then an unambiguous short form. Several matches at
    one step prefer the models present on their host; an unknown id raises
    ``ModelNotFoundError`` with the closest names."""
    if not isinstance(model_id, str) or not model_id.strip():
        raise ValidationError("model_id", model_id, "must be a non-empty string")
    wanted = model_id.strip()
    low = wanted.lower()
    steps = (
        lambda c: c.key == wanted,
        lambda c: c.qualified == wanted,
        lambda c: c.path is not None and c.path == wanted,
        lambda c: c.key.lower() == low or c.qualified.lower() == low,
        lambda c: low in short_forms(c),
    )
    for matches in ([c for c in candidates if step(c)] for step in steps):
        if len(matches) > 1:
            present = [c for c in matches if c.present]
            matches = present if present else matches
        if len(matches) == 1:
            return matches[0]
        if matches:
            listed = ", ".join(sorted(c.qualified for c in matches))
            raise ValidationError(
                "model_id", model_id, f"matches several models: {listed}; use one of these ids"
            )
    names = sorted({c.key for c in candidates} | {c.qualified for c in candidates})
    close = difflib.get_close_matches(wanted, names, n=5, cutoff=0.5)
    close += [n for n in names if low in n.lower() and n not in close]
    where = f" on host {host!r}" if host else ""
    raise ModelNotFoundError(
        model_id, suggestions=close[:5], reason=f"not in the registry{where}" if host else None
    )


def default_host(
    name: str | None, url: str | None, configured: Sequence[tuple[str, str]] = ()
) -> tuple[str, str]:
    """Fill in a host for a model added by hand: the named one's URL from ``configured``
    (name, url pairs), or the first configured host, or ``local`` at LM Studio's default URL."""
    if name and url:
        return name, url
    if name:
        for h_name, h_url in configured:
            if h_name == name:
                return name, h_url
        return name, url or ""
    if configured:
        return configured[0][0], url or configured[0][1]
    return DEFAULT_HOST[0], url or DEFAULT_HOST[1]
