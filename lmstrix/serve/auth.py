"""Optional API keys: with ``[serve] api_keys`` set, every request but ``/healthz`` carries
``Authorization: Bearer <key>`` (the dashboard's browser may instead hold the key in a cookie,
set by posting it to ``/login``). The keys never reach a log line or a response."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from lmstrix.domain.serve_settings import ServeSettings

COOKIE = "lmstrix_key"
OPEN_PATHS = frozenset({"/healthz", "/login"})


def presented_key(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return conn.cookies.get(COOKIE) or None


def allowed(conn: HTTPConnection, settings: ServeSettings) -> bool:
    """Whether the request may go on: no keys configured, an open path, or a known key."""
    if not settings.api_keys or conn.url.path in OPEN_PATHS:
        return True
    key = presented_key(conn)
    return key is not None and settings.accepts(key)


LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def bind_refusal(host: str, settings: ServeSettings, insecure: bool) -> str | None:
    """Why binding to ``host`` is refused (None: it is fine): without API keys only loopback
    addresses, unless the operator says ``--insecure``."""
    if settings.api_keys or insecure or host in LOOPBACK or host.startswith("127."):
        return None
    return (
        f"refusing to listen on {host} without API keys: anyone who reaches it could use the "
        "queue; set [serve] api_keys (or LMSTRIX_SERVE__API_KEYS), or pass --insecure"
    )
