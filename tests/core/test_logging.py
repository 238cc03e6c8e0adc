"""Secrets never reach log output."""

from __future__ import annotations

import logging
from pathlib import Path

from lmstrix.utils.logging import redact, setup_logging


def test_redact_masks_tokens_headers_and_url_passwords() -> None:
    text = (
        "token sk-lm-J9Fa6fbC:jkFcl7oqhmx5GB1eM5fL header Authorization: Bearer abc.def "
        "db postgresql://lmstrix:hunter2@db:5432/x"
    )
    out = redact(text)
    assert "jkFcl7oq" not in out and "abc.def" not in out and "hunter2" not in out
    assert "postgresql://lmstrix:***@db:5432/x" in out


def test_setup_logging_writes_redacted_file_with_metrics(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "app.log"
    logger = setup_logging(logging.INFO, file_path=log_file, include_performance_metrics=True)
    try:
        logging.getLogger("lmstrix.test").info(
            "calling %s with %s",
            "http://h:1234",
            "Bearer sk-lm-AAAAAAAA:BBBBBBBBBBBBBBBBBBBB",
            extra={"metrics": {"tokens_per_second": 51.4}},
        )
        logging.getLogger("lmstrix.test").debug("hidden at INFO")
        for h in logger.handlers:
            h.flush()
        text = log_file.read_text()
        assert "BBBBBBBB" not in text
        assert "tokens_per_second=51.4" in text
        assert "hidden at INFO" not in text
        # calling again replaces handlers instead of duplicating lines
        assert len(setup_logging(file_path=log_file).handlers) == 2
    finally:
        setup_logging()
