"""The base of every section of the configuration file (``[lmstudio]``, ``[queue]``, a host...),
and of anything else that holds settings: their ``repr`` and ``str`` never show a secret."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from lmstrix.domain.errors import ValidationError
from lmstrix.domain.urls import check_url, mask_url_password


def masked(value: Any) -> Any:
    """``value`` with the password of every URL in its strings masked, through dicts, lists and
    tuples (``SecretStr`` values mask themselves)."""
    if isinstance(value, str):
        return mask_url_password(value)
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(masked(v) for v in value)
    return value


class MaskedModel(BaseModel):
    """A pydantic model whose ``repr`` and ``str`` mask URL passwords in its fields (tokens are
    ``SecretStr``, which shows ``'**********'``). Settings classes derive from it, whether plain
    models or pydantic-settings ones."""

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, masked(value)


class ConfigSection(MaskedModel):
    """Unknown keys are refused (a typo must not be silently ignored) and an assignment is
    validated like the file's value would be."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def validate_url(url: str, *, key: str) -> str:
    """Check an LM Studio URL and return it without a trailing slash; a bad one raises
    ``ValueError`` (what pydantic validators report) naming the key."""
    try:
        return check_url(url, field=key)
    except ValidationError as exc:
        raise ValueError(f"{key} {exc.reason}, got {mask_url_password(url)!r}") from None
