"""Documents with known words for the exporter tests, built from real rendered text.

A PDF is written with pymupdf's CJK font (visible text: Korean and English), and the document model is
built from where pymupdf says those words are, converted to the pixels of the page rendered at a given
DPI, exactly as the batch runner would have seen it. The exporters are then checked against these known
words and boxes (a random-weight model would only give garbage to compare against).
"""

from __future__ import annotations

from pathlib import Path

import pymupdf
import pytest

from varco_ocr.document import Document, Word
from varco_ocr.inputs import pdf_page_geometry
from varco_ocr.layout import build_page

PAGE_TEXTS = [
    ["백범로 35 서강대학교 Apt 101", "Total 12,000원 합계", "세종대왕기념관 opening hours 9-18"],
    ["두 번째 쪽 second page", "가나다라마바사 ABC xyz", "2024년 5월 1일"],
    ["세 번째 Third", "끝 end."],
]


def write_text_pdf(path: Path, texts=PAGE_TEXTS, rotations=(0, 90, 0), cropbox=None, fontsize=14) -> Path:
    """A born-digital PDF whose pages read upright as displayed, whatever their /Rotate."""
    doc = pymupdf.open()
    buf = pymupdf.Font("cjk").buffer
    for lines, rotation in zip(texts, rotations):
        page = doc.new_page(width=595, height=842)
        page.set_rotation(rotation)
        if cropbox:
            page.set_cropbox(pymupdf.Rect(*cropbox))
        page.insert_font(fontname="cjk", fontbuffer=buf)
        for i, line in enumerate(lines):
            # insert_text takes unrotated coordinates; rotate= turns the text with the page
            at = pymupdf.Point(72, 120 + 40 * i) * page.derotation_matrix
            page.insert_text(at, line, fontname="cjk", fontsize=fontsize, rotate=rotation)
    doc.save(path)
    doc.close()
    return path


def write_scanned_pdf(text_pdf: Path, path: Path, dpi: float = 100) -> Path:
    """The same pages as images only (same MediaBox, CropBox and /Rotate), like a scanner's PDF:
    no text of its own, so any text read back from an export is the text layer's."""
    with pymupdf.open(text_pdf) as src, pymupdf.open() as out:
        for page in src:
            pix = page.get_pixmap(dpi=dpi)
            new = out.new_page(width=page.mediabox.width, height=page.mediabox.height)
            new.set_rotation(page.rotation)
            new.set_cropbox(page.cropbox)
            new.insert_image(new.rect, pixmap=pix)
        out.save(path)
    return path


def document_from_pdf_text(pdf_path: Path, dpi: float = 150, model: str = "hand-built") -> Document:
    """The document a perfect OCR would produce for ``pdf_path`` rendered at ``dpi``."""
    pages = []
    with pymupdf.open(pdf_path) as pdf:
        for page in pdf:
            pix = page.get_pixmap(dpi=dpi)
            geometry = pdf_page_geometry(page, pix.width, pix.height)
            sx, sy = pix.width / page.rect.width, pix.height / page.rect.height
            words = []
            for x1, y1, x2, y2, text, *_ in page.get_text("words"):
                # get_text gives unrotated crop-relative points; the model sees the visible page
                vis = pymupdf.Rect(x1, y1, x2, y2) * page.rotation_matrix
                box = (round(vis.x0 * sx), round(vis.y0 * sy), round(vis.x1 * sx), round(vis.y1 * sy))
                words.append(Word(text, box, 0.9, bbox_pt=geometry.bbox_pt(box)))
            pages.append(build_page(words, index=page.number, width=pix.width, height=pix.height, dpi=dpi))
    return Document(source=str(pdf_path), pages=tuple(pages), model=model)


@pytest.fixture
def scanned_pdf(tmp_path: Path) -> tuple[Path, Document]:
    """A three-page image-only PDF (the middle page rotated 90 degrees, all with a crop box) and
    the document a perfect OCR of it at 150 dpi gives."""
    text_pdf = write_text_pdf(tmp_path / "text.pdf", cropbox=(20, 30, 575, 812))
    scanned = write_scanned_pdf(text_pdf, tmp_path / "book.pdf")
    doc = document_from_pdf_text(text_pdf, dpi=150)
    return scanned, Document(source=str(scanned), pages=doc.pages, model=doc.model)


@pytest.fixture
def text_png(tmp_path: Path) -> tuple[Path, Document]:
    """A PNG page image (first page of the text PDF at 150 dpi) and its document."""
    pdf = write_text_pdf(tmp_path / "page.pdf", texts=PAGE_TEXTS[:1], rotations=(0,))
    doc = document_from_pdf_text(pdf, dpi=150)
    png = tmp_path / "page.png"
    with pymupdf.open(pdf) as d:
        d[0].get_pixmap(dpi=150).save(png)
    page = doc.pages[0]
    words_px = [Word(w.text, w.bbox, w.confidence) for w in page.words]  # an image has no PDF points
    return png, Document(source=str(png), pages=(build_page(words_px, index=0, width=page.width, height=page.height, dpi=150),), model="hand-built")
