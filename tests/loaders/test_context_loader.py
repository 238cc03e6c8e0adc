"""ContextLoader: encodings (strict and detected), size guards and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmstrix.api.exceptions import ValidationError
from lmstrix.loaders.context_loader import ContextLoader, decode_text

FRENCH = "Le cœur a ses raisons que la raison ne connaît point. " * 20
# Detection is statistical: a text whose letters mean the same in the likely Latin code pages.
GERMAN = "Der Bär läuft über die Straße, während die Vögel fröhlich zwitschern. " * 20


def test_utf8_with_and_without_bom(tmp_path: Path) -> None:
    plain, bom = tmp_path / "plain.txt", tmp_path / "bom.txt"
    plain.write_text("héllo\n", encoding="utf-8")
    bom.write_bytes(b"\xef\xbb\xbf" + "héllo\n".encode())
    loader = ContextLoader()
    assert loader.load_text_file(plain) == "héllo\n"
    assert loader.load_text_file(str(bom)) == "héllo\n"


def test_strict_utf8_refuses_other_encodings_with_the_place(tmp_path: Path) -> None:
    path = tmp_path / "legacy.txt"
    path.write_bytes(b"line one\n" + FRENCH.encode("cp1252"))
    with pytest.raises(ValidationError) as err:
        ContextLoader().load_text_file(path)
    assert err.value.field == "path" and err.value.value == str(path)
    assert "line 2" in str(err.value) and "encoding='auto'" in str(err.value)


def test_auto_detects_legacy_and_utf16(tmp_path: Path) -> None:
    legacy, utf16 = tmp_path / "legacy.txt", tmp_path / "utf16.txt"
    legacy.write_bytes(GERMAN.encode("cp1252"))
    utf16.write_bytes(FRENCH.encode("utf-16"))
    loader = ContextLoader()
    assert loader.load_text_file(legacy, encoding="auto") == GERMAN
    assert loader.load_text_file(utf16, encoding="auto") == FRENCH
    assert loader.load_text_file(legacy, encoding="cp1252") == GERMAN


def test_binary_unknown_encoding_missing_and_directory(tmp_path: Path) -> None:
    loader = ContextLoader()
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValidationError, match="binary"):
        loader.load_text_file(blob, encoding="auto")
    text = tmp_path / "a.txt"
    text.write_text("x", encoding="utf-8")
    with pytest.raises(ValidationError) as err:
        loader.load_text_file(text, encoding="klingon")
    assert err.value.field == "encoding"
    with pytest.raises(ValidationError, match="no such file"):
        loader.load_text_file(tmp_path / "nope.txt")
    with pytest.raises(ValidationError, match="is a directory"):
        loader.load_text_file(tmp_path)


def test_size_guards(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("a" * 600, encoding="utf-8")
    b.write_text("b" * 600, encoding="utf-8")
    with pytest.raises(ValidationError, match="more than the 500-byte limit"):
        ContextLoader(max_file_bytes=500).load_text_file(a)
    with pytest.raises(ValidationError, match="together are 1200 bytes"):
        ContextLoader(max_total_bytes=1000).load_multiple_files([a, b])


def test_multiple_files_keep_order_and_fail_before_reading(tmp_path: Path) -> None:
    paths = []
    for name in ("z.txt", "a.txt", "m.txt"):
        p = tmp_path / name
        p.write_text(f"text of {name}", encoding="utf-8")
        paths.append(str(p))
    texts = ContextLoader().load_multiple_files(paths)
    assert list(texts) == paths
    assert list(texts.values()) == ["text of z.txt", "text of a.txt", "text of m.txt"]
    with pytest.raises(ValidationError) as err:
        ContextLoader().load_multiple_files([*paths, str(tmp_path / "missing.txt")])
    assert err.value.value == str(tmp_path / "missing.txt")
    with pytest.raises(ValidationError, match="list of paths"):
        ContextLoader().load_multiple_files(paths[0])


def test_decode_text_is_pure() -> None:
    assert decode_text("ä".encode(), "auto") == "ä"
    with pytest.raises(ValidationError, match="not valid ascii at byte 1"):
        decode_text(b"a\xff", "ascii", source="mem")
