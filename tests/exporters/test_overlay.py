"""Overlay PNGs: word boxes drawn on the page image, one file per readable page."""

from __future__ import annotations

import numpy as np
from PIL import Image

from varco_ocr.document import Document, Page
from varco_ocr.exporters import write_exports
from varco_ocr.exporters.overlay import LINE_COLOR, WORD_COLOR, draw_overlay
from varco_ocr.layout import build_page
from varco_ocr.document import Word


def test_draw_overlay_outlines_words_and_leaves_the_rest():
    image = Image.new("RGB", (200, 100), (255, 255, 255))
    page = build_page([Word("abc", (20, 30, 80, 60))], index=0, width=200, height=100)
    out = np.asarray(draw_overlay(image, page))
    assert tuple(out[30, 50]) == WORD_COLOR and tuple(out[45, 20]) == WORD_COLOR  # top and left edges
    assert tuple(out[28, 50]) == LINE_COLOR  # the line box, just outside
    assert tuple(out[45, 50]) == (255, 255, 255)  # inside untouched
    assert np.asarray(image).min() == 255  # the input is not modified


def test_overlay_files_per_page_for_pdf_and_image(tmp_path, scanned_pdf, text_png):
    source, doc = scanned_pdf
    bad = Page(index=1, width=0, height=0, error="page 2: broken")
    partial = Document(source=doc.source, pages=(doc.pages[0], bad, doc.pages[2]), model=doc.model)
    written = write_exports(partial, tmp_path / "out", ["overlay"], stem="book")
    assert [p.name for p in written] == ["book.p0001.overlay.png", "book.p0003.overlay.png"]
    with Image.open(written[0]) as im:
        assert im.size == (doc.pages[0].width, doc.pages[0].height)
        x1, y1, x2, y2 = doc.pages[0].words[0].bbox
        assert im.getpixel((x1, (y1 + y2) // 2)) == WORD_COLOR
    png, image_doc = text_png
    (single,) = write_exports(image_doc, tmp_path / "out", ["overlay"])
    assert single.name == "page.overlay.png"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["book.p0001.overlay.png", "book.p0003.overlay.png", "page.overlay.png"]
