"""Reading a JSON file that belongs to someone else, and replacing it atomically with a backup.

For files lmstrix edits but does not own (LM Studio's per-model default configs): a file that
cannot be parsed is reported with its name and left alone, and a write either happens whole or
not at all (a temporary file next to the target, then ``os.replace``), with the previous
version kept as ``<file>.bak``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lmstrix.domain.errors import ConfigurationError

BACKUP_SUFFIX = ".bak"


def read_json_file(path: Path) -> Any | None:
    """The parsed contents of ``path``; None when it does not exist. An unreadable or invalid
    file raises ``ConfigurationError`` naming it (one line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):  # no such file (writing it will tell why)
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"cannot read {path}: {_reason(exc)}; lmstrix left it untouched", source=str(path)
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "lmstrix left it untouched: fix or remove it",
            source=str(path),
        ) from None


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + BACKUP_SUFFIX)


def replace_json_file(path: Path, document: Any) -> Path | None:
    """Write ``document`` to ``path`` atomically (indented JSON). An existing file is first
    copied to ``<file>.bak`` (replacing an older backup), whose path is returned; None when
    there was no file. A failure raises ``ConfigurationError`` and leaves ``path`` as it was."""
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    backup = backup_path(path) if path.exists() else None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if backup is not None:
            _write_atomically(backup, path.read_bytes(), like=path)
        _write_atomically(path, text.encode("utf-8"), like=path if backup else None)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot write {path}: {_reason(exc)}; it was left as it was", source=str(path)
        ) from None
    return backup


def _write_atomically(target: Path, data: bytes, *, like: Path | None) -> None:
    """``data`` into ``target`` via a temporary file in the same directory and ``os.replace``,
    with the permissions of ``like`` when given (else readable by all, as editors write)."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if like is not None:
            shutil.copymode(like, tmp)
        else:
            tmp.chmod(0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


__all__ = ["BACKUP_SUFFIX", "backup_path", "read_json_file", "replace_json_file"]
