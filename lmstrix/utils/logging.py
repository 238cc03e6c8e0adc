"""Logging setup for applications using lmstrix, with secrets redacted from every record.

lmstrix's modules log through the standard ``logging`` module under the ``lmstrix`` logger and
never disable it: an error is never silent because verbose mode is off.

Two libraries lmstrix uses say a lot at INFO that means nothing to a user: alembic eight lines at
every schema check (each worker boot, each new process), httpx one line per request. The
command line and the dramatiq workers hold them at WARNING unless asked to be verbose
(:func:`set_verbosity`); ``lmstrix -v`` and ``output.verbose_by_default`` ask.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from lmstrix.domain.urls import mask_url_password

# LM Studio tokens and bearer headers; passwords inside URLs are mask_url_password's job.
_SECRET_PATTERNS = [
    (re.compile(r"sk-lm-[A-Za-z0-9]+:[A-Za-z0-9]+"), "sk-lm-***"),
    (re.compile(r"(?i)(bearer\s+)[^\s'\"]+"), r"\1***"),
]


def redact(text: str) -> str:
    """Mask tokens and URL passwords in a piece of text."""
    for rx, repl in _SECRET_PATTERNS:
        text = rx.sub(repl, text)
    return mask_url_password(text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message so that no secret reaches a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class _PerformanceFormatter(logging.Formatter):
    """Appends ``key=value`` performance fields passed as ``extra={"metrics": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        metrics = getattr(record, "metrics", None)
        if isinstance(metrics, dict) and metrics:
            base += " | " + " ".join(f"{k}={v}" for k, v in metrics.items())
        return base


# Loggers whose INFO records are noise unless the user asks for detail (see the module's doc).
CHATTY_LIBRARIES = ("alembic", "httpx")


def set_verbosity(verbose: bool) -> None:
    """Verbose: lmstrix's DEBUG records and the chatty libraries' INFO ones are let through.
    Otherwise the chatty libraries are held at WARNING (lmstrix's own level is left alone)."""
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    if verbose:
        logging.getLogger("lmstrix").setLevel(logging.DEBUG)


def _loggers(libraries: bool) -> Iterator[logging.Logger]:
    yield logging.getLogger("lmstrix")
    if libraries:
        yield from (logging.getLogger(name) for name in CHATTY_LIBRARIES)


def setup_logging(
    level: int | str = logging.INFO,
    file_path: str | Path | None = None,
    include_performance_metrics: bool = False,
    *,
    verbose: bool = False,
    libraries: bool = False,
) -> logging.Logger:
    """Configure the ``lmstrix`` logger: stderr (and ``file_path`` if given), secrets redacted.

    ``verbose`` forces DEBUG (and lets alembic's and httpx's INFO records out, see
    :func:`set_verbosity`); ``libraries`` sends their records to the same handlers. Calling it
    again replaces the handlers it installed before.
    """
    logger = logging.getLogger("lmstrix")
    for each in _loggers(libraries=True):
        for handler in list(each.handlers):
            if getattr(handler, "_lmstrix", False):
                each.removeHandler(handler)
                handler.close()
    logger.setLevel(level)
    if verbose or libraries:
        set_verbosity(verbose)
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    formatter: logging.Formatter = (
        _PerformanceFormatter(fmt) if include_performance_metrics else logging.Formatter(fmt)
    )
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file_path is not None:
        path = Path(file_path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RedactingFilter())
        handler._lmstrix = True  # type: ignore[attr-defined]
        for each in _loggers(libraries):
            each.addHandler(handler)
    return logger
