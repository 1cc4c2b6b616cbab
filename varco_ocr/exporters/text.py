"""Plain-text and JSON exports."""

from __future__ import annotations

from pathlib import Path

from varco_ocr.document import Document, write_atomic
from varco_ocr.exporters.common import utf8_safe


def export_text(document: Document, out_path: Path, **_: object) -> list[Path]:
    """Reading-order text; pages separated by form feeds (``\\f``), the convention of pdftotext.
    Control characters are kept (a text file may hold them); surrogate code points, which UTF-8
    cannot encode, become U+FFFD (the JSON keeps them exactly)."""
    write_atomic(out_path, utf8_safe(document.text) + "\n")
    return [Path(out_path)]


def export_json(document: Document, out_path: Path, **_: object) -> list[Path]:
    document.save(out_path)
    return [Path(out_path)]
