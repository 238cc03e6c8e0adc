"""``ContextLoader``: text files to put into prompts (documents to summarize, code to review).

    loader = ContextLoader()
    text = loader.load_text_file("notes.txt")                    # strict UTF-8
    text = loader.load_text_file("legacy.txt", encoding="auto")   # detected (charset-normalizer)
    texts = loader.load_multiple_files(["a.txt", "b.md"])        # {path: text}, in order

The facades read the files of ``infer(context_data={...: Path(...)})`` with it
(:func:`read_context_files`), in the caller's process, when the call is made.

Every failure is a ``ValidationError`` on ``path`` (or ``encoding``) that says what is wrong
with which file: missing, a directory, too large, binary, or not in the encoding asked for. A
size guard refuses huge files before reading them: a context window holds at most a few hundred
kilobytes of text, so a multi-megabyte file is almost always the wrong file.
"""

from __future__ import annotations

import codecs
import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

from lmstrix.domain.context_blocks import ContextData, block_field, check_context_data
from lmstrix.domain.errors import ValidationError
from lmstrix.domain.requests import InferenceOptions

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_TOTAL_BYTES = 64 * 1024 * 1024
AUTO = "auto"


def decode_text(data: bytes, encoding: str = "utf-8", *, source: str = "<bytes>") -> str:
    """Decode ``data`` as ``encoding`` (``"auto"``: UTF-8 if valid, else detected).

    Pure: the file-independent half of :meth:`ContextLoader.load_text_file`.
    """
    if encoding.lower() == AUTO:
        return _decode_auto(data, source)
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise ValidationError(
            "encoding", encoding, "unknown encoding; use a codec name such as utf-8, or 'auto'"
        ) from None
    if codec.name == "utf-8":
        codec = codecs.lookup("utf-8-sig")  # a BOM is not part of the text
    try:
        return data.decode(codec.name)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValidationError(
            "path",
            source,
            f"not valid {encoding} at byte {exc.start} (line {line}); "
            "pass encoding='auto' to detect the encoding, or name the right one",
        ) from None


def _decode_auto(data: bytes, source: str) -> str:
    if b"\x00" in data[:8192] and not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ValidationError("path", source, "looks like a binary file (it has NUL bytes)")
    try:
        return data.decode("utf-8-sig")  # the common case, and the detector's weak spot
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise ValidationError(
            "path", source, "no text encoding fits its bytes; is it a binary file?"
        )
    return str(best)


class ContextLoader:
    """Reads text files for prompts, with a size guard and clear errors."""

    def __init__(
        self, max_file_bytes: int = MAX_FILE_BYTES, max_total_bytes: int = MAX_TOTAL_BYTES
    ) -> None:
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes

    def _check(self, path: str | os.PathLike[str]) -> tuple[Path, int]:
        source = os.fspath(path)
        p = Path(source).expanduser()
        if not p.exists():
            raise ValidationError("path", source, "no such file")
        if p.is_dir():
            raise ValidationError(
                "path", source, "is a directory; pass the files in it (load_multiple_files)"
            )
        size = p.stat().st_size
        if size > self.max_file_bytes:
            raise ValidationError(
                "path",
                source,
                f"is {size} bytes, more than the {self.max_file_bytes}-byte limit "
                "(ContextLoader(max_file_bytes=...) raises it)",
            )
        return p, size

    def load_text_file(self, path: str | os.PathLike[str], encoding: str = "utf-8") -> str:
        """The text of one file, decoded as ``encoding`` (``"auto"`` detects it)."""
        p, _ = self._check(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise ValidationError("path", os.fspath(path), f"cannot be read: {exc}") from None
        return decode_text(data, encoding, source=os.fspath(path))

    def load_multiple_files(
        self, paths: Iterable[str | os.PathLike[str]], encoding: str = "utf-8"
    ) -> dict[str, str]:
        """``{path: text}`` for every file, in the order given.

        All files are checked (existence, size, the total) before any is read, so a typo in the
        last path fails fast. Join them with ``"\\n\\n".join(texts.values())`` for one prompt.
        """
        if isinstance(paths, str | os.PathLike):
            raise ValidationError("paths", os.fspath(paths), "must be a list of paths")
        checked = [(os.fspath(p), *self._check(p)) for p in paths]
        total = sum(size for _, _, size in checked)
        if total > self.max_total_bytes:
            raise ValidationError(
                "paths",
                [name for name, _, _ in checked],
                f"together are {total} bytes, more than the {self.max_total_bytes}-byte limit",
            )
        return {name: self.load_text_file(name, encoding) for name, _, _ in checked}

    def load_context_data(
        self, context_data: ContextData | None, encoding: str = "utf-8"
    ) -> dict[str, str]:
        """``context_data`` with every file path replaced by the file's text; text blocks are
        kept as they are, in the order given. Errors name the block (``context_data['notes']``)
        and the file."""
        blocks = check_context_data(context_data)
        out: dict[str, str] = {}
        total = 0
        for name, block in blocks.items():
            if isinstance(block, str):
                out[name] = block
                continue
            try:
                _, size = self._check(block)
                total += size
                if total > self.max_total_bytes:
                    raise ValidationError(
                        "path",
                        os.fspath(block),
                        f"brings the files to more than the {self.max_total_bytes}-byte limit",
                    )
                out[name] = self.load_text_file(block, encoding)
            except ValidationError as exc:
                reason = exc.reason
                if "encoding=" in reason:  # infer() has no encoding argument to point at
                    reason = reason.split(";")[0] + (
                        "; pass its text instead, read with "
                        "ContextLoader().load_text_file(path, encoding='auto')"
                    )
                raise ValidationError(block_field(name), os.fspath(block), reason) from None
        return out


def read_context_files(options: InferenceOptions) -> InferenceOptions:
    """``options`` with the files of its ``context_data`` read (see
    :meth:`ContextLoader.load_context_data`); the same object when there are none."""
    blocks = options.context_data
    if not blocks or all(isinstance(b, str) for b in blocks.values()):
        return options
    return dataclasses.replace(options, context_data=ContextLoader().load_context_data(blocks))


__all__ = [
    "MAX_FILE_BYTES",
    "MAX_TOTAL_BYTES",
    "ContextLoader",
    "decode_text",
    "read_context_files",
]
