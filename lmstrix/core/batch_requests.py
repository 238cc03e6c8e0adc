"""Turning one prompt of a batch into a validated, routed inference request.

The same checks as ``JobService.submit_inference`` (budget, context fit, request validation,
load size), but without inserting anything: a batch validates all its requests first and then
writes them in one transaction, so a bad line 9 000 leaves nothing half-queued.

Routing spreads a batch over at most ``max_hosts`` of the hosts that have the model, each item
to the host with the fewest queued jobs counting the ones this batch already gave it; a host's
worker runs one request at a time, so the number of hosts is the batch's real parallelism.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lmstrix.domain.errors import LMStrixError, ModelNotFoundError, ValidationError
from lmstrix.domain.model import Model
from lmstrix.domain.requests import InferenceOptions
from lmstrix.jobs.batch_store import NewItem
from lmstrix.jobs.service import DEFAULT_OPTIONS, JobService


@dataclass(slots=True)
class RequestPlanner:
    """Prepares the items of one batch (caches model lookups, balances hosts)."""

    service: JobService
    max_hosts: int
    _models: dict[str, list[Model] | LMStrixError] = field(default_factory=dict)
    _load: dict[str, int] | None = None

    def models(self, model_id: str) -> list[Model]:
        """The hosts' entries for ``model_id`` (at most ``max_hosts``, the least busy first).

        Remembered per batch, failures too: 50 000 lines naming an unknown model must not
        rescan the hosts 50 000 times.
        """
        cached = self._models.get(model_id)
        if cached is None:
            try:
                found = self.service.resolve_model(model_id)
            except ModelNotFoundError as exc:
                self._models[model_id] = exc
                raise
            depth = self._depths()
            found = sorted(found, key=lambda m: depth.get(m.host, 0))[: self.max_hosts]
            self._models[model_id] = cached = found
        if isinstance(cached, LMStrixError):
            raise cached
        return cached

    def _depths(self) -> dict[str, int]:
        if self._load is None:
            self._load = dict(self.service.store.queue_depths())
        return self._load

    def _pick(self, models: list[Model]) -> Model:
        load = self._depths()
        chosen = min(models, key=lambda m: load.get(m.host, 0))
        load[chosen.host] = load.get(chosen.host, 0) + 1
        return chosen

    def prepare(
        self,
        model_id: str,
        prompt: Any,
        custom_id: str,
        options: InferenceOptions = DEFAULT_OPTIONS,
    ) -> NewItem:
        """A queued-to-be request for ``prompt``; raises what ``infer()`` would raise for it."""
        if not isinstance(prompt, str) or not prompt:
            raise ValidationError("prompt", prompt, "must be a non-empty string")
        chosen = self._pick(self.models(model_id))
        request = self.service.prepare_request(chosen, prompt, options)
        url = self.service.host_config(chosen.host).url
        return NewItem(chosen.host, url, chosen.id, request, custom_id)
