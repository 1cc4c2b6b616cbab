"""Exporters: one document model -> json, txt, hocr, alto, pdf (searchable), overlay (PNG).

``EXPORTERS`` maps a format name to ``function(document, out_path, **opts) -> list[Path]`` (the
files written). Options understood by the exporters that need page images (pdf, overlay):
``source`` (the input file, default ``document.source``), ``source_base`` (folder to resolve a
relative ``document.source`` against, e.g. the saved JSON's folder) and ``password``.
Every file is written to a temporary name and renamed when complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from varco_ocr.document import Document
from varco_ocr.exporters.alto import export_alto
from varco_ocr.exporters.hocr import export_hocr
from varco_ocr.exporters.overlay import export_overlay, overlay_page_path, overlay_paths
from varco_ocr.exporters.pdf import export_pdf
from varco_ocr.exporters.text import export_json, export_text

Exporter = Callable[..., list[Path]]

EXPORTERS: dict[str, Exporter] = {
    "json": export_json,
    "txt": export_text,
    "hocr": export_hocr,
    "alto": export_alto,
    "pdf": export_pdf,
    "overlay": export_overlay,
}
SUFFIXES = {
    "json": ".json",
    "txt": ".txt",
    "hocr": ".hocr",
    "alto": ".alto.xml",
    "pdf": ".pdf",
    "overlay": ".overlay.png",
}
# Formats that need the source file's pages (re-rendered or re-read) besides the document.
NEEDS_SOURCE = frozenset({"pdf", "overlay"})


def parse_formats(spec: str) -> tuple[str, ...]:
    """``"json,txt,hocr"`` -> ("json", "txt", "hocr"), order kept, duplicates dropped. Raises
    ValueError naming the unknown format and the known ones."""
    formats: list[str] = []
    for name in (part.strip().lower() for part in spec.split(",")):
        if not name:
            continue
        if name not in EXPORTERS:
            raise ValueError(f"unknown format {name!r} (choose from {', '.join(EXPORTERS)})")
        if name not in formats:
            formats.append(name)
    if not formats:
        raise ValueError("no output format given")
    return tuple(formats)


def output_path(out_dir: Path, stem: Path | str, fmt: str) -> Path:
    """Where format ``fmt`` of the document with output stem ``stem`` goes (for overlay: the base
    name, see ``overlay_paths``)."""
    stem = Path(stem)
    return Path(out_dir) / stem.with_name(stem.name + SUFFIXES[fmt])


def expected_outputs(document: Document, out_dir: Path, stem: Path | str, formats: tuple[str, ...]) -> list[Path]:
    paths: list[Path] = []
    for fmt in formats:
        base = output_path(out_dir, stem, fmt)
        paths.extend(overlay_paths(base, list(document.pages)) if fmt == "overlay" else [base])
    return paths


def planned_outputs(out_dir: Path, stem: Path | str, formats: Sequence[str], page_indices: Sequence[int]) -> list[Path]:
    """Every path the document with output stem ``stem`` and pages ``page_indices`` (0-based, as
    selected) may be written to in ``formats``, known before it is read: overlays are planned for
    every page, readable or not (``expected_outputs`` is the subset once the pages are known)."""
    paths: list[Path] = []
    for fmt in formats:
        base = output_path(out_dir, stem, fmt)
        if fmt == "overlay":
            paths.extend(overlay_page_path(base, i, len(page_indices) == 1) for i in page_indices)
        else:
            paths.append(base)
    return paths


def write_exports(
    document: Document,
    out_dir: Path,
    formats: tuple[str, ...] | list[str],
    stem: Path | str | None = None,
    **opts: object,
) -> list[Path]:
    """Write ``document`` in each of ``formats`` to ``out_dir``; returns every file written."""
    stem = Path(stem) if stem is not None else Path(Path(document.source).stem or "document")
    written: list[Path] = []
    for fmt in formats:
        written.extend(EXPORTERS[fmt](document, output_path(out_dir, stem, fmt), **opts))
    return written


__all__ = ["EXPORTERS", "SUFFIXES", "NEEDS_SOURCE", "parse_formats", "output_path", "expected_outputs", "planned_outputs", "write_exports"]
