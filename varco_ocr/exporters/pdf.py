"""Searchable PDF export: page images (or the original PDF pages) with an invisible text layer.

The technique follows what OCRmyPDF's hOCR renderer does (ideas, not code): every word is drawn in
text render mode 3 (neither fill nor stroke, so invisible but selectable), its font size chosen so
the font's ascent-to-descent span equals the word box height, and horizontally scaled (``Tz``) so
its advance width equals the box width; between two words of a line a space glyph is stretched over
the gap, so extractors see a real space there and none anywhere else. The font is pymupdf's built-in
Droid Sans Fallback (``pymupdf.Font("cjk")``), embedded as a CID font with Identity-H encoding and a
ToUnicode map, then subset, so Hangul, Hanja and Latin come back out exactly as the model read them.

Coordinates: a word box in page pixels is first scaled to *visible* page points (the page as shown,
rotation applied, origin at the crop box's top-left), then mapped into PDF user space by undoing the
page rotation and the crop-box offset. Text is drawn along the visible page's x axis, so on a rotated
page it reads the right way up in a viewer.
"""

from __future__ import annotations

import io
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol, Sequence

from PIL import Image

from varco_ocr.document import Document, Page, atomic_path
from varco_ocr.exporters.common import ocr_system, resolve_source
from varco_ocr.errors import InputError

TEXT_FONT_NAME = "VarcoOCRText"  # resource name; unlikely to clash with the original page's fonts
DEFAULT_IMAGE_DPI = 300.0  # page size of image inputs whose files record no resolution

Matrix6 = tuple[float, float, float, float, float, float]


@dataclass(frozen=True)
class PlacedWord:
    text: str
    box: tuple[float, float, float, float]  # visible page points, y down


class FontMetrics(Protocol):
    """What the text layer needs from a font: glyph ids, advances (in units of the font size), and
    the ascent/descent that decide the font size for a box height."""

    ascender: float
    descender: float  # negative

    def glyph(self, ch: str) -> int: ...

    def advance(self, ch: str) -> float: ...


class PymupdfFontMetrics:
    def __init__(self, font) -> None:  # a pymupdf.Font
        self._font = font
        self.ascender = float(font.ascender)
        self.descender = float(font.descender)

    def glyph(self, ch: str) -> int:
        return int(self._font.has_glyph(ord(ch)))

    def advance(self, ch: str) -> float:
        return float(self._font.glyph_advance(ord(ch)))


def _num(v: float) -> str:
    s = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def _matrix(m: Matrix6) -> str:
    return " ".join(_num(v) for v in m)


def _mul(m: Matrix6, n: Matrix6) -> Matrix6:
    a, b, c, d, e, f = m
    A, B, C, D, E, F = n
    return (a * A + b * C, a * B + b * D, c * A + d * C, c * B + d * D, e * A + f * C + E, e * B + f * D + F)


def _drawable(text: str, font: FontMetrics) -> str:
    """The word's characters the font can draw; a character without a glyph is tried in its NFKC
    form (full-width forms, ligatures) and dropped otherwise (it would extract as nothing anyway)."""
    out = []
    for ch in text:
        if font.glyph(ch):
            out.append(ch)
        else:
            out.extend(c for c in unicodedata.normalize("NFKC", ch) if font.glyph(c))
    return "".join(out)


def text_layer_operators(lines: Iterable[Sequence[PlacedWord]], font: FontMetrics, to_user_space: Matrix6) -> str:
    """PDF content-stream operators drawing ``lines`` of words invisibly (pure; see module doc).

    ``to_user_space`` maps visible page points (y down) to PDF user space. Each word gets its own
    text matrix, so a slanted or ragged line still puts every word on its own box.
    """
    ops = ["q", "BT", "3 Tr"]
    space_gid = font.glyph(" ")
    span = font.ascender - font.descender
    for line in lines:
        words = [(w, _drawable(w.text, font)) for w in line]
        words = [(w, t) for w, t in words if t and w.box[2] > w.box[0] and w.box[3] > w.box[1]]
        for i, (word, text) in enumerate(words):
            x1, y1, x2, y2 = word.box
            size = (y2 - y1) / span
            baseline = y2 + font.descender * size  # descender < 0: the baseline sits above the bottom
            natural = sum(font.advance(ch) for ch in text) * size
            if natural <= 0:
                continue
            # Text space: x along the visible page, y up; (1, 0, 0, -1) flips our y-down page points.
            tm = _mul((1.0, 0.0, 0.0, -1.0, x1, baseline), to_user_space)
            glyphs = "".join(f"{font.glyph(ch):04x}" for ch in text)
            ops.append(f"/{TEXT_FONT_NAME} {_num(size)} Tf {_num(100 * (x2 - x1) / natural)} Tz {_matrix(tm)} Tm <{glyphs}> Tj")
            if i + 1 < len(words) and space_gid:
                gap = words[i + 1][0].box[0] - x2
                space = font.advance(" ") * size
                if gap > 0 and space > 0:
                    # The pen is at the word's right edge: stretch one space glyph to the next word.
                    ops.append(f"{_num(100 * gap / space)} Tz <{space_gid:04x}> Tj")
    ops += ["ET", "Q"]
    return "\n".join(ops)


def _visible_lines(page: Page, scale_x: float, scale_y: float) -> list[list[PlacedWord]]:
    return [
        [
            PlacedWord(w.text, (w.bbox[0] * scale_x, w.bbox[1] * scale_y, w.bbox[2] * scale_x, w.bbox[3] * scale_y))
            for w in line.words
        ]
        for line in page.lines
    ]


def _append_text_layer(out_doc, out_page, operators: str, font_buffer: bytes) -> None:
    out_page.insert_font(fontname=TEXT_FONT_NAME, fontbuffer=font_buffer)
    xref = out_doc.get_new_xref()
    out_doc.update_object(xref, "<<>>")
    out_doc.update_stream(xref, operators.encode("ascii"))
    contents = out_page.get_contents()
    refs = " ".join(f"{x} 0 R" for x in (*contents, xref))
    out_doc.xref_set_key(out_page.xref, "Contents", f"[{refs}]")


def _page_image_bytes(source: Path, page_index: int, password: str | None) -> tuple[bytes, Image.Image | None]:
    """Bytes to embed for an image page: the file itself when it is a plain single-frame JPEG or
    PNG shown as stored (keeps the original compression), else the normalised page as PNG."""
    from varco_ocr.inputs import open_document

    suffix = source.suffix.lower()
    if suffix in (".jpg", ".jpeg", ".png"):
        with Image.open(source) as im:
            orientation = im.getexif().get(0x0112, 1)
            plain = orientation == 1 and getattr(im, "n_frames", 1) == 1 and im.mode in ("RGB", "L")
        if plain:
            return source.read_bytes(), None
    with open_document(source, password=password) as doc:
        doc.page_indices = [page_index]
        produced = next(doc.iter_pages())
    if produced.image is None:
        raise ValueError(produced.error or f"page {page_index + 1} unreadable")
    buf = io.BytesIO()
    produced.image.save(buf, format="PNG")
    return buf.getvalue(), produced.image


def searchable_pdf_bytes(document: Document, source: Path, password: str | None = None) -> bytes:
    import pymupdf

    from varco_ocr.inputs import looks_like_pdf

    font = pymupdf.Font("cjk")
    metrics = PymupdfFontMetrics(font)
    out = pymupdf.open()
    is_pdf = source.suffix.lower() == ".pdf" or looks_like_pdf(source)
    src = None
    if is_pdf:
        src = pymupdf.open(source, filetype="pdf")
        if src.needs_pass and not src.authenticate(password or ""):
            raise ValueError(f"{source}: encrypted PDF; the right --password is needed to export it")
    try:
        for page in document.pages:
            if src is not None:
                out.insert_pdf(src, from_page=page.index, to_page=page.index)
                out_page = out[-1]
                out_page.wrap_contents()  # isolate the original's graphics state from our layer
                rect = out_page.rect
                if page.width <= 0 or page.height <= 0 or not page.words:
                    continue
                d = out_page.derotation_matrix
                crop = out_page.cropbox
                to_user = _mul(
                    _mul((d.a, d.b, d.c, d.d, d.e, d.f), (1.0, 0.0, 0.0, 1.0, crop.x0, crop.y0)),
                    (1.0, 0.0, 0.0, -1.0, 0.0, out_page.mediabox.y1),
                )
                scale_x, scale_y = rect.width / page.width, rect.height / page.height
            else:
                dpi = page.dpi or DEFAULT_IMAGE_DPI
                if page.width <= 0 or page.height <= 0:
                    out.new_page(width=612, height=792)  # a page that could not be read: keep the count
                    continue
                w_pt, h_pt = page.width * 72.0 / dpi, page.height * 72.0 / dpi
                out_page = out.new_page(width=w_pt, height=h_pt)
                try:
                    data, _ = _page_image_bytes(source, page.index, password)
                except (ValueError, InputError):
                    if page.error is None:
                        raise
                    continue  # a page that failed keeps its size but may not decode: blank, at that size
                out_page.insert_image(out_page.rect, stream=data)
                to_user = (1.0, 0.0, 0.0, -1.0, 0.0, h_pt)
                scale_x = scale_y = 72.0 / dpi
                if not page.words:
                    continue
            operators = text_layer_operators(_visible_lines(page, scale_x, scale_y), metrics, to_user)
            _append_text_layer(out, out_page, operators, font.buffer)
        out.set_metadata({"producer": ocr_system(document), "creator": ocr_system(document)})
        out.subset_fonts()  # the full CJK font is 3.5 MB; the subset holds only the glyphs used
        return out.tobytes(garbage=3, deflate=True)
    finally:
        out.close()
        if src is not None:
            src.close()


def export_pdf(
    document: Document,
    out_path: Path,
    source: str | Path | None = None,
    source_base: Path | None = None,
    password: str | None = None,
    **_: object,
) -> list[Path]:
    src = resolve_source(document, source, source_base)
    if src.resolve() == Path(out_path).resolve():
        raise ValueError(f"{out_path}: the searchable PDF would overwrite its own source")
    data = searchable_pdf_bytes(document, src, password)
    with atomic_path(Path(out_path)) as tmp:
        tmp.write_bytes(data)
    return [Path(out_path)]
