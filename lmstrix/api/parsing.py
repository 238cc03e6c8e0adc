"""Pure parsing of LM Studio's model lists and chat requests into lmstrix's records.

No I/O here: ``client.py`` fetches, this module interprets, so each shape (``/api/v1``,
``/api/v0``, OpenAI ``/v1`` including llama.cpp's ``meta``) is tested directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lmstrix.domain.errors import ValidationError
from lmstrix.domain.host_types import ApiGeneration, Capabilities, LoadedInstance, ModelRecord

Message = Mapping[str, Any]


def to_int(v: Any) -> int | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def to_float(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def stop_reason_for(finish_reason: Any) -> str | None:
    return {
        "stop": "eosFound",
        "length": "maxPredictedTokensReached",
        "tool_calls": "toolCalls",
    }.get(str(finish_reason), None if finish_reason is None else str(finish_reason))


def messages_payload(
    messages: Sequence[Message] | str, system_prompt: str | None
) -> list[dict[str, Any]]:
    if isinstance(messages, str):
        msgs: list[dict[str, Any]] = [{"role": "user", "content": messages}]
    else:
        msgs = [dict(m) for m in messages]
    if not msgs:
        raise ValidationError("messages", messages, "needs at least one message")
    for i, m in enumerate(msgs):
        if m.get("role") not in ("system", "user", "assistant", "tool"):
            raise ValidationError(
                f"messages[{i}].role", m.get("role"), "must be system, user, assistant or tool"
            )
    if system_prompt:
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return msgs


def looks_like(generation: ApiGeneration, items: list[Any]) -> bool:
    """The list is really a model list of that generation (not some other server's)."""
    if not items:
        return True
    first = items[0]
    if not isinstance(first, dict):
        return False
    if generation is ApiGeneration.V1:
        return "key" in first
    return "id" in first


def model_from_v1(m: Mapping[str, Any]) -> ModelRecord:
    caps = m.get("capabilities") or {}
    quant = m.get("quantization")
    return ModelRecord(
        key=str(m["key"]),
        type=str(m.get("type") or "llm"),
        publisher=m.get("publisher"),
        display_name=m.get("display_name"),
        architecture=m.get("architecture"),
        quantization=quant.get("name") if isinstance(quant, dict) else quant,
        format=m.get("format"),
        size_bytes=to_int(m.get("size_bytes")),
        params_string=m.get("params_string"),
        max_context_length=to_int(m.get("max_context_length")),
        capabilities=Capabilities(
            vision=bool(caps.get("vision")),
            tool_use=bool(caps.get("trained_for_tool_use")),
            reasoning=bool(caps.get("reasoning")),
        ),
        loaded_instances=tuple(
            LoadedInstance(
                id=str(i.get("id")),
                context_length=to_int((i.get("config") or {}).get("context_length")),
                parallel=to_int((i.get("config") or {}).get("parallel")),
            )
            for i in m.get("loaded_instances") or []
            if isinstance(i, dict)
        ),
    )


def models_from_v0(items: Sequence[Any]) -> list[ModelRecord]:
    by_key: dict[str, ModelRecord] = {}
    for m in items:
        if not isinstance(m, dict) or "id" not in m:
            continue
        ident = str(m["id"])
        # A second instance shows up as its own "key:2" entry; fold it into its model.
        base = (
            ident.rsplit(":", 1)[0]
            if ident.rsplit(":", 1)[-1].isdigit() and ":" in ident
            else ident
        )
        caps = set(m.get("capabilities") or [])
        mtype = str(m.get("type") or "llm")
        inst = (
            (LoadedInstance(id=ident, context_length=to_int(m.get("loaded_context_length"))),)
            if m.get("state") in ("loaded", "loading")
            else ()
        )
        if base in by_key:
            prev = by_key[base]
            by_key[base] = ModelRecord(
                **{**record_fields(prev), "loaded_instances": prev.loaded_instances + inst}
            )
            continue
        by_key[base] = ModelRecord(
            key=base,
            type="embedding" if mtype == "embeddings" else mtype,
            publisher=m.get("publisher"),
            architecture=m.get("arch"),
            quantization=m.get("quantization"),
            format=m.get("compatibility_type"),
            max_context_length=to_int(m.get("max_context_length")),
            capabilities=Capabilities(
                vision="vision" in caps or mtype == "vlm",
                tool_use="tool_use" in caps,
                reasoning="reasoning" in caps,
            ),
            loaded_instances=inst,
        )
    return list(by_key.values())


def model_from_openai(m: Mapping[str, Any]) -> ModelRecord:
    meta = m.get("meta") or {}
    ident = str(m.get("id"))
    n_ctx = to_int(meta.get("n_ctx"))
    # llama.cpp's server reports meta: its one model is always loaded at n_ctx. vLLM's model
    # cards say max_model_len: its models are always loaded at that context.
    served = to_int(m.get("max_model_len"))
    if meta:
        instances: tuple[LoadedInstance, ...] = (LoadedInstance(id=ident, context_length=n_ctx),)
    elif served is not None:
        instances = (LoadedInstance(id=ident, context_length=served),)
    else:
        instances = ()
    return ModelRecord(
        key=ident,
        type="embedding" if "embed" in ident.lower() else "llm",
        publisher=m.get("owned_by"),
        size_bytes=to_int(meta.get("size")),
        max_context_length=to_int(meta.get("n_ctx_train")),
        loaded_instances=instances,
    )


def props_context(props: Mapping[str, Any]) -> int | None:
    """The context llama.cpp's server runs at, from its ``/props``."""
    settings = props.get("default_generation_settings")
    n_ctx = to_int(settings.get("n_ctx")) if isinstance(settings, Mapping) else None
    return n_ctx if n_ctx is not None else to_int(props.get("n_ctx"))


def record_fields(r: ModelRecord) -> dict[str, Any]:
    return {f: getattr(r, f) for f in r.__dataclass_fields__}
