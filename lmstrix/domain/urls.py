"""URLs as lmstrix accepts and shows them: the check of an LM Studio host's URL, and the one
way a password inside any URL is hidden before the URL reaches a message, a log or a repr."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from lmstrix.domain.errors import ValidationError

# ``scheme://user:password@``. The password runs to the first '@' (SQLAlchemy's reading) and on
# through any further '@' that is still inside the host part (urllib's reading), so neither
# parser can see a piece of it that this leaves visible.
_URL_PASSWORD = re.compile(r"(?P<pre>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^\s@]*(?:@[^\s@/?#]*)*@")


def check_url(url: str, *, field: str = "base_url") -> str:
    """An LM Studio URL without its trailing slash; ``ValidationError`` naming ``field``."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(field, url, "must be an http(s) URL such as http://localhost:1234")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValidationError(field, url, "has an invalid port") from None
    base = url.strip().rstrip("/")
    # The OpenAI base-URL habit (".../v1"): lmstrix adds the API paths itself.
    return base[: -len("/v1")] if parts.path.rstrip("/").endswith("/v1") else base


_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def host_key(url: str) -> str:
    """A host's identity: its URL normalized, so one server is one host whatever name or
    spelling points at it. Scheme and host name in lower case, loopback addresses as
    ``localhost``, the port always written, no user info, no trailing slash, and a trailing
    ``/v1`` (the OpenAI base-URL habit) dropped: ``HTTP://127.0.0.1:1234/v1/`` and
    ``http://localhost:1234`` are the same host."""
    parts = urlsplit(url.strip())
    scheme = (parts.scheme or "http").lower()
    hostname = (parts.hostname or "").lower()
    if hostname in _LOOPBACK:
        hostname = "localhost"
    if ":" in hostname:
        hostname = f"[{hostname}]"
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme, 80)
    except ValueError:
        port = _DEFAULT_PORTS.get(scheme, 80)
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{scheme}://{hostname}:{port}{path}"


def mask_url_password(text: str) -> str:
    """``text`` with the password of every URL in it shown as ``***``
    (``postgresql://user:***@host/db``); URLs without a password are left as they are.

    Works on a bare URL and on a message that contains URLs alike, and never fails, so it is
    safe on input that is not a valid URL at all.
    """
    return _URL_PASSWORD.sub(r"\g<pre>***@", text)
