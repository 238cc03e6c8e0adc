"""Logging setup for applications using lmstrix, with secrets redacted from every record.

lmstrix's modules log through the standard ``logging`` module under the ``lmstrix`` logger and
never disable it: an error is never silent because verbose mode is off.
"""

from __future__ import annotations

import logging
import re
import sys
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


def setup_logging(
    level: int | str = logging.INFO,
    file_path: str | Path | None = None,
    include_performance_metrics: bool = False,
    *,
    verbose: bool = False,
) -> logging.Logger:
    """Configure the ``lmstrix`` logger: stderr (and ``file_path`` if given), secrets redacted.

    ``verbose`` forces DEBUG. Calling it again replaces the handlers it installed before.
    """
    logger = logging.getLogger("lmstrix")
    logger.setLevel(logging.DEBUG if verbose else level)
    for handler in list(logger.handlers):
        if getattr(handler, "_lmstrix", False):
            logger.removeHandler(handler)
            handler.close()
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
        logger.addHandler(handler)
    return logger
