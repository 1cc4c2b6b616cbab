"""Plain-text and JSON exports."""

from __future__ import annotations

from pathlib import Path

from varco_ocr.document import Document, write_atomic


def export_text(document: Document, out_path: Path, **_: object) -> list[Path]:
    """Reading-order text; pages separated by form feeds (``\\f``), the convention of pdftotext."""
    write_atomic(out_path, document.text + "\n")
    return [Path(out_path)]


def export_json(document: Document, out_path: Path, **_: object) -> list[Path]:
    document.save(out_path)
    return [Path(out_path)]
