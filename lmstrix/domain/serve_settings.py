"""``[serve]``: the OpenAI-compatible server's keys and bounds (``lmstrix serve``).

API keys are secrets: they are ``SecretStr`` values, so no ``repr``, log line or error shows
them. They come from the config file (``api_keys = ["..."]``) or from
``LMSTRIX_SERVE__API_KEYS`` (several separated by commas).
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, SecretStr, field_validator

from lmstrix.domain.config_section import ConfigSection
from lmstrix.domain.openai_batch import MAX_FILE_BYTES

DEFAULT_PORT = 8765


class ServeSettings(ConfigSection):
    """The server's settings; every field is a key of the ``[serve]`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_keys: tuple[SecretStr, ...] = Field(
        (),
        description="Bearer tokens a client must send; none: no auth, and the server binds "
        "only to loopback unless --insecure",
    )
    max_queued: int | None = Field(
        None,
        ge=1,
        description="refuse a request with 429 while this many jobs wait on the host it would "
        "go to (unset: no bound)",
    )
    max_file_bytes: int = Field(
        MAX_FILE_BYTES,
        ge=1,
        description="the largest file POST /v1/files takes (bytes); a larger one is refused "
        "with 413 before it is stored",
    )
    timeout: float = Field(
        600.0, gt=0, description="seconds a request waits for its answer before it is cancelled"
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        # The environment gives one string: keys separated by commas.
        if isinstance(value, str):
            return tuple(k.strip() for k in value.split(",") if k.strip())
        return value

    @field_validator("api_keys")
    @classmethod
    def _not_blank(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        if any(not k.get_secret_value().strip() for k in value):
            raise ValueError("api_keys must not hold an empty key")
        return value

    def accepts(self, token: str) -> bool:
        """Whether ``token`` is one of the keys (compared in constant time)."""
        import hmac

        return any(
            hmac.compare_digest(token.encode(), k.get_secret_value().encode())
            for k in self.api_keys
        )
