"""Reading a searchable PDF back, as a user's tools would: pymupdf and poppler's pdftotext -bbox.
Boxes are compared in the page's visible points (rotation applied, origin at the crop box)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pymupdf
import pytest
from lxml import etree

from varco_ocr.document import Document

TOLERANCE_PT = 2.0


def expected_pages(doc: Document, out: Path) -> list[list[tuple[str, tuple[float, ...]]]]:
    """Each page's words with their boxes in visible page points of the exported PDF."""
    expected = []
    with pymupdf.open(out) as pdf:
        for page, out_page in zip(doc.pages, pdf):
            sx, sy = out_page.rect.width / page.width, out_page.rect.height / page.height
            expected.append([(w.text, (w.bbox[0] * sx, w.bbox[1] * sy, w.bbox[2] * sx, w.bbox[3] * sy)) for w in page.words])
    return expected


def pymupdf_words(path: Path) -> list[list[tuple[str, tuple[float, ...]]]]:
    pages = []
    with pymupdf.open(path) as pdf:
        for page in pdf:
            words = []
            for x1, y1, x2, y2, text, *_ in page.get_text("words", sort=False):
                r = pymupdf.Rect(x1, y1, x2, y2) * page.rotation_matrix  # to the page as displayed
                words.append((text, (r.x0, r.y0, r.x1, r.y1)))
            pages.append(words)
    return pages


def poppler_words(path: Path) -> list[list[tuple[str, tuple[float, ...]]]]:
    xhtml = subprocess.run(["pdftotext", "-bbox", "-cropbox", str(path), "-"], check=True, capture_output=True).stdout
    root = etree.fromstring(xhtml)
    ns = "{http://www.w3.org/1999/xhtml}"
    return [
        [(w.text, tuple(float(w.get(k)) for k in ("xMin", "yMin", "xMax", "yMax"))) for w in page.iter(f"{ns}word")]
        for page in root.iter(f"{ns}page")
    ]


def assert_words_match(got, expected):
    assert [[t for t, _ in p] for p in got] == [[t for t, _ in p] for p in expected]
    for got_page, exp_page in zip(got, expected):
        for (text, g), (_, e) in zip(got_page, exp_page):
            assert g == pytest.approx(e, abs=TOLERANCE_PT), text
