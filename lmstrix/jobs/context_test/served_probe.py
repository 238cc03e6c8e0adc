"""The context test on a host without load control (LM Studio 0.3 JIT, llama.cpp's server,
Ollama, vLLM): lmstrix cannot load the model at a size of its choice there, so the loadable limit
cannot be searched. The test measures the *usable* context with use probes only, up to the
context the host serves the model at, and says so in its result.

Decided in one place, :func:`probe_for`, at the entry of the test.
"""

from __future__ import annotations

from lmstrix.api.client import LMStudioClient
from lmstrix.domain.context_search import LoadOutcome
from lmstrix.domain.context_test_request import ContextTestRequest
from lmstrix.jobs.context_test.http_probe import HttpProbe


class ServedContextProbe(HttpProbe):
    """An :class:`HttpProbe` whose "load at N" loads nothing: the host serves the model at
    ``served`` tokens (unknown: None), so a load at N stands for "run at min(N, served)"."""

    def __init__(self, client: LMStudioClient, model: str, req: ContextTestRequest,
                 served: int | None) -> None:  # fmt: skip
        super().__init__(
            client,
            model,
            output_tokens=req.output_tokens,
            question=req.question,
            seed=req.seed,
            depths=req.depths,
        )
        self.served = served

    def load(self, size: int) -> LoadOutcome:
        self.instance_id = self.model
        applied = size if self.served is None else min(size, self.served)
        return LoadOutcome(True, applied=applied, seconds=0.0)


def probe_for(
    client: LMStudioClient, model: str, req: ContextTestRequest
) -> tuple[ContextTestRequest, HttpProbe, str | None]:
    """The request, the probe and a note for the result. Where the host has load control: the
    request as asked, load and use probes, no note. Where it has none: the request capped at
    the served context, use probes only, and a note that the loadable limit was not searched."""
    caps = client.capabilities
    if caps.load_control:
        probe = HttpProbe(
            client,
            model,
            output_tokens=req.output_tokens,
            question=req.question,
            seed=req.seed,
            depths=req.depths,
        )
        return req, probe, None
    served = client.served_context(model)
    note = (
        f"the loadable limit could not be searched: the host ({caps.server}, API "
        f"{caps.api_generation}) has no load control; "
    )
    if served is None:
        note += "the usable context was probed at whatever the host serves"
        return req, ServedContextProbe(client, model, req, None), note
    capped = req.model_copy(
        update={
            "declared": min(req.declared, served),
            "threshold": min(req.threshold, served),
            "min_context": min(req.min_context, served),
            "ctx": None if req.ctx is None else min(req.ctx, served),
        }
    )
    note += f"the usable context was probed up to the {served} tokens it serves"
    return capped, ServedContextProbe(client, model, capped, served), note
