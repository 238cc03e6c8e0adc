"""``LMStudioDefaults``: tested contexts into LM Studio's own per-model defaults on this machine.

    defaults = LMStudioDefaults()
    defaults.apply("llama-3.2-3b-instruct", limit="90%")   # one model: raises if it cannot
    report = defaults.apply_all(dry_run=True)               # every tested model: a report

Each model's file is ``<LM Studio home>/.internal/user-concrete-model-default-config/<model
path>.json``; its ``llm.load.contextLength`` load field is set to the tested context (capped by
``limit``: ``N`` tokens or ``"N%"`` of the tested context) and everything else in it is kept.
The write is atomic and the previous file is kept as ``<file>.bak``; a file that already says
the same is not rewritten. A file that is not valid JSON is reported and left untouched.

Only models on this machine's LM Studio are applied: hosts at a loopback address or this
machine's name, or the host named with ``host=`` (which vouches that its LM Studio is this
one's). The LM Studio home is found as :func:`~lmstrix.core.lmstudio_home.find_lmstudio_home`
says, or given as ``home=``.
"""

from __future__ import annotations

import socket
from pathlib import Path

from lmstrix.core.config import Config
from lmstrix.core.json_files import read_json_file, replace_json_file
from lmstrix.core.lmstudio_home import find_lmstudio_home
from lmstrix.core.models import ModelRegistry
from lmstrix.domain.errors import LMStrixError, ValidationError
from lmstrix.domain.lmstudio_defaults import (
    Action,
    AppliedContext,
    ApplyReport,
    ContextCap,
    NotApplied,
    context_length_of,
    default_config_path,
    refusal,
    with_context_length,
)
from lmstrix.domain.model import Model


def this_machines_names() -> frozenset[str]:
    """This machine's host name, and its short form, in lower case."""
    name = socket.gethostname().lower()
    return frozenset(filter(None, {name, name.split(".", 1)[0]}))


class LMStudioDefaults:
    """Writes models' tested contexts into LM Studio's per-model default load config."""

    def __init__(
        self,
        registry: ModelRegistry | None = None,
        *,
        home: str | Path | None = None,
        config: Config | None = None,
    ) -> None:
        if registry is None:
            config = config or Config.load()
            registry = ModelRegistry(config=config)
        self._config = config
        self.registry = registry
        self._home_setting = home
        self._home: Path | None = None

    @property
    def home(self) -> Path:
        """LM Studio's home directory on this machine (``ConfigurationError`` if none)."""
        if self._home is None:
            configured = self._home_setting
            if configured is None:
                configured = (self._config or Config.load()).settings.lmstudio.home
            self._home = find_lmstudio_home(configured)
        return self._home

    def config_file(self, model: Model, path: str | None = None) -> Path:
        """Where ``model``'s default config lives (``path`` overrides the registry's)."""
        return self.home / default_config_path(path or model.path or "")

    def apply(
        self,
        model_id: str,
        *,
        limit: str | int | None = None,
        dry_run: bool = False,
        host: str | None = None,
        path: str | None = None,
    ) -> AppliedContext:
        """Write one model's tested context. ``host`` picks the model's host and vouches that it
        is this machine's LM Studio; ``path`` gives the model's file path (``lms ls --json``)
        when the registry has none. A model that cannot be applied raises ``ValidationError``
        saying why (never tested, not on this machine, no path); a malformed file raises
        ``ConfigurationError`` naming it."""
        cap = ContextCap.parse(limit)
        model = self.registry.get_model(model_id, host)
        reason = refusal(
            model, path=path, host_named=host is not None, local_names=this_machines_names()
        )
        if reason is not None:
            raise ValidationError("model_id", model_id, reason)
        return self._apply(model, cap, path=path, dry_run=dry_run)

    def apply_all(
        self, *, limit: str | int | None = None, dry_run: bool = False, host: str | None = None
    ) -> ApplyReport:
        """Write every tested model's context (only ``host``'s models when given). Models that
        cannot be applied are in ``skipped`` with the reason; files that could not be read or
        written are in ``failed`` (the others are still written)."""
        cap = ContextCap.parse(limit)
        report = ApplyReport(home=str(self.home), dry_run=dry_run)
        local = this_machines_names()
        written_by: dict[Path, str] = {}
        for model in self.registry.list_models(host=host):
            reason = refusal(model, host_named=host is not None, local_names=local)
            if reason is None:
                file = self.config_file(model)
                if file in written_by:
                    reason = f"has the same LM Studio file as {written_by[file]}"
                written_by.setdefault(file, model.qualified_id)
            if reason is not None:
                report.skipped.append(NotApplied(model.id, model.host, reason))
                continue
            try:
                report.applied.append(self._apply(model, cap, dry_run=dry_run))
            except LMStrixError as exc:
                report.failed.append(NotApplied(model.id, model.host, str(exc)))
        return report

    def _apply(
        self, model: Model, cap: ContextCap | None, *, dry_run: bool, path: str | None = None
    ) -> AppliedContext:
        tested = model.tested_context or 0
        value = cap.applied_to(tested) if cap else tested
        file = self.config_file(model, path)
        old = read_json_file(file)
        new = with_context_length(old, value, source=str(file))
        action: Action = "created" if old is None else "unchanged" if new == old else "updated"
        backup = None
        if action != "unchanged" and not dry_run:
            backup = replace_json_file(file, new)
        return AppliedContext(
            model_id=model.id,
            host=model.host,
            file=str(file),
            tested_context=tested,
            context_length=value,
            previous=None if old is None else context_length_of(old, source=str(file)),
            action=action,
            backup=None if backup is None else str(backup),
            dry_run=dry_run,
        )


__all__ = ["AppliedContext", "ApplyReport", "LMStudioDefaults", "NotApplied"]
