"""The base of every section of the configuration file (``[lmstudio]``, ``[queue]``, a host...)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from lmstrix.domain.errors import ValidationError
from lmstrix.domain.urls import check_url


class ConfigSection(BaseModel):
    """Unknown keys are refused (a typo must not be silently ignored) and an assignment is
    validated like the file's value would be."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def validate_url(url: str, *, key: str) -> str:
    """Check an LM Studio URL and return it without a trailing slash; a bad one raises
    ``ValueError`` (what pydantic validators report) naming the key."""
    try:
        return check_url(url, field=key)
    except ValidationError as exc:
        raise ValueError(f"{key} {exc.reason}, got {url!r}") from None
