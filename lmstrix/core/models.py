"""The model registry: every model on every LM Studio host, with the context it really handles.

The registry lives in SQL (``lmstrix.db``), shared by the facades, the CLI and the workers, so
``ModelRegistry`` keeps no copy of its own: every read asks the database and every write is one
transaction. That is why ``save()`` has nothing left to do and ``reload()`` never returns stale
data, and why two processes updating the registry at once cannot overwrite each other's work, as
the original JSON file could.

``Model`` records work both as objects and as read-only mappings (``m.tested_context`` and
``m["tested_context"]``; ``dict(m)``; ``m.to_dict()`` for JSON).

Model ids are LM Studio model keys (``qwen/qwen3-4b``, ``llama-3.2-3b-instruct``). A key is unique
per host; ``<host>/<key>`` names one host's copy. Lookups accept, in order: the exact key, the
``host/key`` form, the file path, the key in any letter case, then an unambiguous short form (the
part after the publisher, the key without an ``@variant``, the display name).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, computed_field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lmstrix.api.exceptions import ModelNotFoundError, ValidationError
from lmstrix.api.types import Capabilities, ModelRecord
from lmstrix.db import Host, ModelRow, TestStatus, read_session, write_session
from lmstrix.db.engine import resolve_database_url
from lmstrix.db.enums import values
from lmstrix.db.migrate import ensure_schema
from lmstrix.db.types import utcnow

log = logging.getLogger("lmstrix.registry")

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
        """A JSON-able dict (timestamps as ISO-8601 strings)."""
        return self.model_dump(mode="json")


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


def _int(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _reject(name, value, "must be a whole number >= 0 (or None)")
    return value


def _float(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _reject(name, value, "must be a number >= 0 (or None)")
    return float(value)


def _text(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _reject(name, value, "must be a string (or None)")
    return value


def _status(name: str, value: Any) -> str:
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


def _tags(name: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise _reject(name, value, "must be a list of strings")
    if not all(isinstance(t, str) for t in value):
        raise _reject(name, value, "must be a list of strings")
    return list(dict.fromkeys(value))


def _capabilities(name: str, value: Any) -> dict[str, Any]:
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


def _extra(name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _reject(name, value, "must be a dict")
    return dict(value)


def _size_mb(name: str, value: Any) -> int | None:
    mb = _float(name, value)
    return None if mb is None else round(mb * MIB)


# public field name (and accepted aliases) -> (column, converter)
_FIELDS: dict[str, tuple[str, Any]] = {
    "name": ("display_name", _text),
    "display_name": ("display_name", _text),
    "publisher": ("publisher", _text),
    "type": ("type", _text),
    "architecture": ("architecture", _text),
    "format": ("format", _text),
    "quantization": ("quantization", _text),
    "size_bytes": ("size_bytes", _int),
    "size_mb": ("size_bytes", _size_mb),
    "parameters": ("params_string", _text),
    "params_string": ("params_string", _text),
    "path": ("path", _text),
    "declared_context": ("declared_context", _int),
    "max_context_length": ("declared_context", _int),
    "ctx_in": ("declared_context", _int),
    "capabilities": ("capabilities", _capabilities),
    "tested_context": ("tested_context", _int),
    "tested_max_context": ("tested_context", _int),
    "last_known_good_context": ("last_known_good_context", _int),
    "last_known_bad_context": ("last_known_bad_context", _int),
    "test_status": ("test_status", _status),
    "context_test_status": ("test_status", _status),
    "last_tested": ("last_tested_at", parse_timestamp),
    "last_tested_at": ("last_tested_at", parse_timestamp),
    "context_test_date": ("last_tested_at", parse_timestamp),
    "test_error": ("test_error", _text),
    "time_to_first_token": ("time_to_first_token", _float),
    "ttft_seconds": ("time_to_first_token", _float),
    "tokens_per_second": ("tokens_per_second", _float),
    "tps": ("tokens_per_second", _float),
    "tags": ("tags", _tags),
    "description": ("description", _text),
    "extra": ("extra", _extra),
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


# -- row -> record --


def capability_names(details: Mapping[str, Any] | None) -> list[str]:
    if not details:
        return []
    names = []
    for key, on in details.items():
        if not on:
            continue
        names.append("tools" if key in ("tool_use", "trained_for_tool_use") else key)
    return sorted(set(names))


def to_model(row: ModelRow, host: Host) -> Model:
    return Model(
        id=row.key,
        host=host.name,
        host_url=host.url,
        name=row.display_name or row.key,
        publisher=row.publisher,
        type=row.type,
        architecture=row.architecture,
        format=row.format,
        quantization=row.quantization,
        size_bytes=row.size_bytes,
        parameters=row.params_string,
        path=row.path,
        declared_context=row.declared_context,
        capabilities=capability_names(row.capabilities),
        capability_details=dict(row.capabilities or {}),
        tested_context=row.tested_context,
        last_known_good_context=row.last_known_good_context,
        last_known_bad_context=row.last_known_bad_context,
        test_status=row.test_status,  # the CHECK constraint guarantees a valid word
        last_tested=row.last_tested_at,
        test_error=row.test_error,
        time_to_first_token=row.time_to_first_token,
        tokens_per_second=row.tokens_per_second,
        tags=list(row.tags or []),
        description=row.description,
        extra=dict(row.extra or {}),
        present=row.present,
        missing_since=row.missing_since,
        first_seen=row.first_seen_at,
        last_seen=row.last_seen_at,
    )


# -- id resolution --


@dataclass(frozen=True, slots=True)
class _Candidate:
    row_id: int
    key: str
    host: str
    display_name: str | None
    path: str | None
    present: bool

    @property
    def qualified(self) -> str:
        return f"{self.host}/{self.key}"


def _short_forms(c: _Candidate) -> set[str]:
    key = c.key.lower()
    tail = key.rsplit("/", 1)[-1]
    forms = {tail, tail.split("@", 1)[0], key.split("@", 1)[0]}
    if c.display_name:
        forms.add(c.display_name.lower())
    if c.path:
        stem = c.path.lower().rsplit("/", 1)[-1]
        forms.update({stem, stem.removesuffix(".gguf")})
    return forms


def resolve(session: Session, model_id: str, host: str | None = None) -> _Candidate:
    """Find the one model ``model_id`` names (see the module docstring for the order)."""
    if not isinstance(model_id, str) or not model_id.strip():
        raise ValidationError("model_id", model_id, "must be a non-empty string")
    query = select(
        ModelRow.id, ModelRow.key, Host.name, ModelRow.display_name, ModelRow.path, ModelRow.present
    ).join(Host, ModelRow.host_id == Host.id)
    if host is not None:
        query = query.where(Host.name == host)
    candidates = [_Candidate(*r) for r in session.execute(query)]
    wanted = model_id.strip()
    low = wanted.lower()
    steps = (
        lambda c: c.key == wanted,
        lambda c: c.qualified == wanted,
        lambda c: c.path is not None and c.path == wanted,
        lambda c: c.key.lower() == low or c.qualified.lower() == low,
        lambda c: low in _short_forms(c),
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


# -- the registry --


class ModelRegistry:
    """SQL-backed registry of models. Every method hits the database; no cache to go stale."""

    def __init__(self, database_url: str | None = None, *, verbose: bool = False) -> None:
        self.database_url = resolve_database_url(database_url)
        self.verbose = verbose
        # Open (and migrate) now, so a corrupt or unreadable database fails here with a
        # RegistryError naming the file, instead of looking like an empty registry.
        ensure_schema(self.database_url)

    def __repr__(self) -> str:
        from lmstrix.db.engine import mask_password

        return f"ModelRegistry({mask_password(self.database_url)!r})"

    # -- reads ------------------------------------------------------------------------------------

    def list_models(self, *, include_missing: bool = True, host: str | None = None) -> list[Model]:
        """All models, sorted by host then key; ``include_missing=False`` hides models that
        vanished from their host (their test history stays in the registry)."""
        query = select(ModelRow, Host).join(Host, ModelRow.host_id == Host.id)
        if not include_missing:
            query = query.where(ModelRow.present.is_(True))
        if host is not None:
            query = query.where(Host.name == host)
        query = query.order_by(Host.name, ModelRow.key)
        with read_session(self.database_url) as s:
            return [to_model(row, h) for row, h in s.execute(query).all()]

    def get_model(self, model_id: str, host: str | None = None) -> Model:
        """The model ``model_id`` names; ``ModelNotFoundError`` (with close names) if none,
        ``ValidationError`` listing the candidates if it is ambiguous."""
        with read_session(self.database_url) as s:
            found = resolve(s, model_id, host)
            row = s.get_one(ModelRow, found.row_id)
            return to_model(row, row.host)

    def has_model(self, model_id: str, host: str | None = None) -> bool:
        """True if ``model_id`` names exactly one model."""
        try:
            self.get_model(model_id, host)
        except ModelNotFoundError:
            return False
        except ValidationError:
            return False
        return True

    def get_model_info(self, model_id: str, host: str | None = None) -> dict[str, Any]:
        """The model as a JSON-able dict (``size_mb``, ``tested_context``, ``test_status``...)."""
        return self.get_model(model_id, host).to_dict()

    def filter_models(
        self,
        status: str | Sequence[str] | None = None,
        size_range: tuple[float | None, float | None] | None = None,
        *,
        host: str | None = None,
        type: str | None = None,
        min_context: int | None = None,
        capability: str | None = None,
        present: bool | None = None,
    ) -> list[Model]:
        """Models matching every given criterion.

        ``size_range`` is ``(min_mb, max_mb)`` in MiB, either end may be None; ``min_context``
        compares the *tested* context; ``capability`` is ``vision``, ``tools`` or ``reasoning``.
        """
        statuses: set[str] | None = None
        if status is not None:
            given = [status] if isinstance(status, str) else list(status)
            statuses = {_status("status", s) for s in given}
        lo, hi = self._size_bounds(size_range)
        min_ctx = _int("min_context", min_context)
        out = []
        for m in self.list_models(host=host):
            if statuses is not None and m.test_status not in statuses:
                continue
            if type is not None and m.type != type:
                continue
            if present is not None and m.present != present:
                continue
            if lo is not None or hi is not None:
                if m.size_mb is None:
                    continue
                if (lo is not None and m.size_mb < lo) or (hi is not None and m.size_mb > hi):
                    continue
            if min_ctx is not None and (m.tested_context or 0) < min_ctx:
                continue
            if capability is not None and capability not in m.capabilities:
                continue
            out.append(m)
        return out

    @staticmethod
    def _size_bounds(
        size_range: tuple[float | None, float | None] | None,
    ) -> tuple[float | None, float | None]:
        if size_range is None:
            return None, None
        if isinstance(size_range, str | bytes) or len(size_range) != 2:
            raise ValidationError("size_range", size_range, "must be a pair (min_mb, max_mb)")
        lo, hi = (_float("size_range", v) for v in size_range)
        if lo is not None and hi is not None and lo > hi:
            raise ValidationError("size_range", size_range, "min_mb must not exceed max_mb")
        return lo, hi

    def get_statistics(self) -> dict[str, Any]:
        """Counts per status, averages and sizes over the whole registry."""
        models = self.list_models()
        tested = [m.tested_context for m in models if m.tested_context]
        declared = [m.declared_context for m in models if m.declared_context]
        by_host: dict[str, int] = {}
        for m in models:
            by_host[m.host] = by_host.get(m.host, 0) + 1
        stats: dict[str, Any] = {"total": len(models)}
        for st in TestStatus:
            stats[st.value] = sum(1 for m in models if m.test_status == st.value)
        stats.update(
            avg_context=round(sum(tested) / len(tested)) if tested else 0,
            avg_declared_context=round(sum(declared) / len(declared)) if declared else 0,
            total_size_mb=round(sum(m.size_bytes or 0 for m in models) / MIB, 1),
            hosts=len(by_host),
            by_host=by_host,
            missing=sum(1 for m in models if not m.present),
        )
        return stats

    def list_hosts(self) -> list[dict[str, Any]]:
        """The hosts the registry has seen, with their model counts."""
        with read_session(self.database_url) as s:
            hosts = s.scalars(select(Host).order_by(Host.name)).all()
            return [
                {
                    "name": h.name,
                    "url": h.url,
                    "api_generation": h.api_generation,
                    "lmstudio_version": h.lmstudio_version,
                    "last_seen": h.last_seen_at.isoformat() if h.last_seen_at else None,
                    "models": len(h.models),
                }
                for h in hosts
            ]

    def __len__(self) -> int:
        return len(self.list_models())

    def __iter__(self) -> Iterator[Model]:
        return iter(self.list_models())

    def __contains__(self, model_id: object) -> bool:
        return isinstance(model_id, str) and self.has_model(model_id)

    # -- writes (each one transaction) ----------------------------------------------------------

    def save(self) -> None:
        """Nothing to do: every change was committed when it was made. Kept for the API."""

    def reload(self) -> None:
        """Nothing to reload: reads always come from the database. Re-checks the schema."""
        ensure_schema(self.database_url)

    def add_model(self, data: Mapping[str, Any]) -> Model:
        """Add a model by hand: ``{"id": ..., "name": ..., "size_mb": ..., "parameters": ...}``,
        optionally ``host`` (default: the first configured host) and ``host_url``, plus any
        field ``update_model`` accepts. An id that already exists on that host is refused."""
        if not isinstance(data, Mapping):
            raise ValidationError("data", data, "must be a dict of model fields")
        fields = dict(data)
        key = fields.pop("id", None)
        if not isinstance(key, str) or not key.strip():
            raise ValidationError("id", key, "a non-empty model id (LM Studio model key) is needed")
        host_name = _text("host", fields.pop("host", None))
        host_url = _text("host_url", fields.pop("host_url", None))
        columns = column_values(fields)
        host_name, host_url = default_host(host_name, host_url)
        try:
            with write_session(self.database_url) as s:
                host = get_or_create_host(s, host_name, host_url)
                exists = s.scalar(
                    select(ModelRow.id).where(ModelRow.host_id == host.id, ModelRow.key == key)
                )
                if exists is not None:
                    raise ValidationError(
                        "id",
                        key,
                        f"already in the registry on host {host_name!r}; "
                        "use update_model to change it",
                    )
                row = ModelRow(host_id=host.id, key=key.strip(), **columns)
                s.add(row)
                s.flush()
                return to_model(row, host)
        except IntegrityError:  # another process added it between our check and our insert
            raise ValidationError(
                "id", key, f"already in the registry on host {host_name!r}"
            ) from None

    def update_model(
        self, model_id: str, updates: Mapping[str, Any], *, host: str | None = None
    ) -> Model:
        """Change fields of one model; unknown fields or bad values raise ValidationError
        naming the field, and then nothing is changed."""
        if not isinstance(updates, Mapping):
            raise ValidationError("updates", updates, "must be a dict of model fields")
        columns = column_values(updates)
        with write_session(self.database_url) as s:
            row = self._locked_row(s, model_id, host)
            for column, value in columns.items():
                setattr(row, column, value)
            s.flush()
            return to_model(row, row.host)

    def add_tags(self, model_id: str, *tags: str, host: str | None = None) -> Model:
        """Add tags to a model (a read-modify-write done under a row lock, so concurrent
        callers never lose each other's tags)."""
        new = _tags("tags", list(tags))
        with write_session(self.database_url) as s:
            row = self._locked_row(s, model_id, host)
            row.tags = list(dict.fromkeys([*(row.tags or []), *new]))
            s.flush()
            return to_model(row, row.host)

    def remove_model(self, model_id: str, *, host: str | None = None) -> None:
        """Delete a model and its probe history (jobs that used it keep their rows)."""
        with write_session(self.database_url) as s:
            row = self._locked_row(s, model_id, host)
            s.delete(row)

    def reset_test_data(self, model_id: str, *, host: str | None = None) -> Model:
        """Forget a model's test results (status back to ``untested``)."""
        return self.update_model(
            model_id,
            {
                "tested_context": None,
                "last_known_good_context": None,
                "last_known_bad_context": None,
                "test_status": "untested",
                "last_tested": None,
                "test_error": None,
                "time_to_first_token": None,
                "tokens_per_second": None,
            },
            host=host,
        )

    @staticmethod
    def _locked_row(s: Session, model_id: str, host: str | None) -> ModelRow:
        found = resolve(s, model_id, host)
        # FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already holds the write lock.
        row = s.execute(
            select(ModelRow).where(ModelRow.id == found.row_id).with_for_update()
        ).scalar_one_or_none()
        if row is None:
            raise ModelNotFoundError(model_id, reason="it was just removed by another process")
        return row

    def upsert_from_scan(
        self,
        host_name: str,
        host_url: str,
        records: Sequence[ModelRecord],
        api_generation: str | None = None,
        lmstudio_version: str | None = None,
    ) -> ScanSummary:
        """Merge one host's model list into the registry, in one transaction.

        New models are added; changed metadata is refreshed; test results are kept; models no
        longer listed are marked missing (``present=False``), not deleted; a model that comes
        back is marked present again (counted as updated).
        """
        with write_session(self.database_url) as s:
            host = get_or_create_host(s, host_name, host_url)
            host.url = host_url
            host.last_seen_at = utcnow()
            if api_generation is not None:
                host.api_generation = str(api_generation)
            if lmstudio_version is not None:
                host.lmstudio_version = lmstudio_version
            summary = merge_scan(s, host, records)
        if self.verbose:
            log.info("scan of %s: %s", host_name, summary.counts())
        return summary


def default_host(name: str | None, url: str | None) -> tuple[str, str]:
    """Fill in a host from the config: the named one's URL, or the first configured host."""
    if name and url:
        return name, url
    try:
        from lmstrix.utils.config import Config

        hosts = Config.load().hosts
    except Exception:  # a broken config must not block adding a model by hand
        hosts = []
    if name:
        for h in hosts:
            if h.name == name:
                return name, h.url
        return name, url or ""
    if hosts:
        return hosts[0].name, url or hosts[0].url
    return DEFAULT_HOST[0], url or DEFAULT_HOST[1]


def get_or_create_host(s: Session, name: str, url: str) -> Host:
    """The host row named ``name``, created if missing (race-safe: insert-if-absent)."""
    if not name:
        raise ValidationError("host", name, "a host name is needed")
    host = s.scalar(select(Host).where(Host.name == name).with_for_update())
    if host is not None:
        if url and not host.url:
            host.url = url
        return host
    values_ = {"name": name, "url": url, "created_at": utcnow()}
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        s.execute(pg_insert(Host).values(**values_).on_conflict_do_nothing(index_elements=["name"]))
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        s.execute(
            sqlite_insert(Host).values(**values_).on_conflict_do_nothing(index_elements=["name"])
        )
    else:
        s.add(Host(**values_))
        s.flush()
    return s.execute(select(Host).where(Host.name == name).with_for_update()).scalar_one()


def _scanned_columns(rec: ModelRecord) -> dict[str, Any]:
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


def _merge_capabilities(old: Mapping[str, Any] | None, caps: Capabilities) -> dict[str, Any]:
    """Scanned flags win, but richer details already known (e.g. reasoning options imported
    from the original lmstrix) survive a scan that only says ``True``."""
    merged = dict(old or {})
    for key, on in _capabilities("capabilities", caps).items():
        if not (on is True and isinstance(merged.get(key), Mapping)):
            merged[key] = on
    return merged


def merge_scan(s: Session, host: Host, records: Sequence[ModelRecord]) -> ScanSummary:
    """Apply one host's model list to its rows (see ``ModelRegistry.upsert_from_scan``).

    Fields the host did not report (None: older API generations say less) keep their stored
    value, so a scan through a poorer API never erases what a richer one found.
    """
    now = utcnow()
    rows = {r.key: r for r in s.scalars(select(ModelRow).where(ModelRow.host_id == host.id))}
    scanned = {rec.key: rec for rec in records}  # a repeated key: the last record wins
    summary = ScanSummary(host=host.name)
    for key in sorted(scanned):
        rec = scanned[key]
        columns = {c: v for c, v in _scanned_columns(rec).items() if v is not None}
        row = rows.get(key)
        if row is None:
            caps = _merge_capabilities(None, rec.capabilities)
            s.add(
                ModelRow(
                    host_id=host.id,
                    key=key,
                    capabilities=caps,
                    present=True,
                    first_seen_at=now,
                    last_seen_at=now,
                    **columns,
                )
            )
            summary.added.append(key)
            continue
        caps = _merge_capabilities(row.capabilities, rec.capabilities)
        changed = {c: v for c, v in columns.items() if getattr(row, c) != v}
        if caps != (row.capabilities or {}):
            changed["capabilities"] = caps
        if not row.present:
            changed.update(present=True, missing_since=None)
        for column, value in changed.items():
            setattr(row, column, value)
        row.last_seen_at = now
        (summary.updated if changed else summary.unchanged).append(key)
    for key in sorted(rows):
        row = rows[key]
        if key not in scanned and row.present:
            row.present = False
            row.missing_since = now
            summary.missing.append(key)
    s.flush()
    return summary


__all__ = [
    "Model",
    "ModelRegistry",
    "ScanSummary",
    "column_values",
    "default_host",
    "get_or_create_host",
    "parse_timestamp",
]
