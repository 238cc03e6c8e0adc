"""The registry's storage: model and host rows, read and written in single transactions.

The registry lives in SQL, shared by the facades, the CLI and the workers, so it keeps no copy
of its own: every read asks the database and every write is one transaction. Two processes
updating the registry at once cannot overwrite each other's work.

:class:`ModelStore` needs its database URL; :class:`lmstrix.core.models.ModelRegistry` is the
public facade that finds it in the configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lmstrix.db.hosts import forget_host, get_or_create_host, named_host
from lmstrix.db.migrate import ensure_schema
from lmstrix.db.session import read_session, write_session
from lmstrix.db.tables import Host, ModelRow
from lmstrix.domain.clock import utcnow
from lmstrix.domain.enums import TestStatus
from lmstrix.domain.errors import ModelNotFoundError, ValidationError
from lmstrix.domain.host_types import ModelRecord
from lmstrix.domain.model import (
    MIB,
    Candidate,
    Model,
    ScanSummary,
    capability_names,
    column_values,
    count_field,
    default_host,
    match,
    merge_capabilities,
    scanned_columns,
    size_bounds,
    status_field,
    tags_field,
    text_field,
)
from lmstrix.domain.urls import mask_url_password

log = logging.getLogger("lmstrix.registry")


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


def resolve(session: Session, model_id: str, host: str | None = None) -> Candidate:
    """The one model row ``model_id`` names (see :func:`lmstrix.domain.model.match`)."""
    if not isinstance(model_id, str) or not model_id.strip():
        raise ValidationError("model_id", model_id, "must be a non-empty string")
    query = select(
        ModelRow.id, ModelRow.key, Host.name, ModelRow.display_name, ModelRow.path, ModelRow.present
    ).join(Host, ModelRow.host_id == Host.id)
    if host is not None:
        query = query.where(Host.name == host)
    return match([Candidate(*r) for r in session.execute(query)], model_id, host)


class ModelStore:
    """The models and hosts tables as the registry: every read asks the database and every
    write is one transaction, so there is no cache to go stale and no lost update."""

    def __init__(
        self,
        database_url: str,
        *,
        verbose: bool = False,
        configured_hosts: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.database_url = database_url
        self.verbose = verbose
        # (name, url) of the configured hosts: where a model added by hand goes by default.
        self.configured_hosts = tuple(configured_hosts)
        # Open (and migrate) now, so a corrupt or unreadable database fails here with a
        # RegistryError naming the file, instead of looking like an empty registry.
        ensure_schema(self.database_url)

    def default_hosts(self) -> Sequence[tuple[str, str]]:
        """(name, url) of the hosts a model added by hand may go to; the first is the default."""
        return self.configured_hosts

    def __repr__(self) -> str:
        return f"{type(self).__name__}({mask_url_password(self.database_url)!r})"

    # -- reads ------------------------------------------------------------------------------------

    def host_names(self) -> list[str]:
        """The names of every host in the registry, configured or not."""
        with read_session(self.database_url) as s:
            return list(s.scalars(select(Host.name).order_by(Host.name)))

    def forget_host(self, name: str) -> bool:
        """Delete host ``name`` with its models, probes and jobs; False when there is none."""
        with write_session(self.database_url) as s:
            return forget_host(s, name) > 0

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
            statuses = {status_field("status", s) for s in given}
        lo, hi = size_bounds(size_range)
        min_ctx = count_field("min_context", min_context)
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
        host_name = text_field("host", fields.pop("host", None))
        given_url = text_field("host_url", fields.pop("host_url", None))
        columns = column_values(fields)
        host_name, host_url = default_host(host_name, given_url, self.default_hosts())
        try:
            with write_session(self.database_url) as s:
                host = (
                    get_or_create_host(s, host_name, host_url)
                    if given_url
                    else named_host(s, host_name, host_url)
                )
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
        new = tags_field("tags", list(tags))
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
        capabilities: Mapping[str, Any] | None = None,
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
            if capabilities is not None:
                host.capabilities = dict(capabilities)
            summary = merge_scan(s, host, records)
        if self.verbose:
            log.info("scan of %s: %s", host_name, summary.counts())
        return summary


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
        columns = {c: v for c, v in scanned_columns(rec).items() if v is not None}
        row = rows.get(key)
        if row is None:
            caps = merge_capabilities(None, rec.capabilities)
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
        caps = merge_capabilities(row.capabilities, rec.capabilities)
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
