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
    return url.strip().rstrip("/")


def mask_url_password(text: str) -> str:
    """``text`` with the password of every URL in it shown as ``***``
    (``postgresql://user:***@host/db``); URLs without a password are left as they are.

    Works on a bare URL and on a message that contains URLs alike, and never fails, so it is
    safe on input that is not a valid URL at all.
    """
    return _URL_PASSWORD.sub(r"\g<pre>***@", text)
