"""PDF pages that already carry text: find them, take their words, strip an old invisible OCR layer.

Three modes for PDF inputs, named as OCRmyPDF names them (``TEXT_MODES``):

- ``force`` (the default): every page is rendered and read by the model; the searchable PDF keeps
  the page as it is and adds our layer (OCRmyPDF's ``--force-ocr`` minus the rasterising).
- ``skip-text``: a page whose *visible* text already covers it (:func:`covers_page`) is not sent to
  the model; its words come from the PDF (:func:`pdf_text_page`) and the page is marked
  ``source: "pdf-text"``; the searchable PDF keeps it exactly as it is. Other pages are read by the
  model, and any invisible text they carry (an old OCR layer) is replaced by ours.
- ``redo-ocr``: every page is read by the model; invisible text (render mode 3, an old OCR layer) is
  removed from the output pages (:func:`strip_invisible_text`), visible text stays.

What decides "covers": only visible text counts (an invisible layer is somebody's OCR, exactly what
``--redo-ocr`` exists to replace), at least ``MIN_VALID_SHARE`` of its characters must be real text
(not U+FFFD, private use or controls: fonts without a usable ToUnicode extract as such garbage), and
its word boxes must cover at least ``MIN_AREA_SHARE`` of the page (a page number or a stamp printed
over a scan does not make the scan's text readable).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Sequence

from varco_ocr.document import Page, Word

TEXT_MODES = ("force", "skip-text", "redo-ocr")
PDF_TEXT_SOURCE = "pdf-text"  # Page.source of a page whose words came from the PDF itself
MIN_VALID_SHARE = 0.9
MIN_AREA_SHARE = 0.02  # about five lines of 10-pt text across an A4 page

INVISIBLE = 3  # text render mode 3: neither fill nor stroke


@dataclass(frozen=True)
class TextSpan:
    """A run of text as drawn: its characters, box (unrotated page points) and render mode."""

    text: str
    bbox: tuple[float, float, float, float]
    render_mode: int
    opacity: float = 1.0

    @property
    def visible(self) -> bool:
        return self.render_mode != INVISIBLE and self.opacity > 0


def is_real_char(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return ch != "\ufffd" and cat not in ("Co", "Cs", "Cc", "Cn")


def covers_page(spans: Iterable[TextSpan], page_area: float) -> bool:
    """Does the visible text of a page cover it (see module doc)? Pure."""
    chars = area = 0.0
    real = 0
    for s in spans:
        if not s.visible:
            continue
        text = "".join(ch for ch in s.text if not ch.isspace())
        chars += len(text)
        real += sum(1 for ch in text if is_real_char(ch))
        x1, y1, x2, y2 = s.bbox
        area += max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return chars > 0 and page_area > 0 and real / chars >= MIN_VALID_SHARE and area / page_area >= MIN_AREA_SHARE


def page_spans(page) -> list[TextSpan]:
    """The text spans of a pymupdf page, with render mode and opacity (pymupdf's text trace)."""
    return [
        TextSpan("".join(chr(c[0]) for c in span["chars"] if c[0] >= 0), tuple(span["bbox"]), int(span["type"]), float(span.get("opacity", 1.0)))
        for span in page.get_texttrace()
    ]


def page_has_text(page) -> bool:
    return covers_page(page_spans(page), abs(page.rect))


def pdf_text_words(page, pixel_width: int, pixel_height: int) -> list[Word]:
    """pymupdf's words of ``page`` as document words: ``bbox`` in pixels of the page rendered at
    ``pixel_width`` x ``pixel_height`` (the visible, rotated page, as the model would have seen it),
    ``bbox_pt`` exactly pymupdf's box in unrotated page points (``Word.bbox_pt``'s system: shifted by
    the crop box's origin), no confidence (nothing was guessed)."""
    import pymupdf

    rect = page.rect
    sx, sy = pixel_width / rect.width, pixel_height / rect.height
    crop = page.cropbox
    words = []
    for x1, y1, x2, y2, text, *_ in page.get_text("words", sort=False):
        visible = pymupdf.Rect(x1, y1, x2, y2) * page.rotation_matrix
        box = (
            max(0, round(visible.x0 * sx)),
            max(0, round(visible.y0 * sy)),
            min(pixel_width, max(round(visible.x1 * sx), round(visible.x0 * sx) + 1)),
            min(pixel_height, max(round(visible.y1 * sy), round(visible.y0 * sy) + 1)),
        )
        words.append(Word(text, box, None, bbox_pt=(x1 + crop.x0, y1 + crop.y0, x2 + crop.x0, y2 + crop.y0)))
    return words


def pdf_text_page(page, index: int, dpi: float) -> Page:
    """The document page for a PDF page whose text is taken as is: pymupdf's words, in reading order
    by our layout code (one rule for every page), ``source`` = ``PDF_TEXT_SOURCE``."""
    from dataclasses import replace

    import pymupdf

    from varco_ocr.layout import build_page

    zoom = dpi / 72.0
    pixels = (page.rect * pymupdf.Matrix(zoom, zoom)).irect  # the size a render at ``dpi`` would have
    width, height = pixels.width, pixels.height
    built = build_page(pdf_text_words(page, width, height), index=index, width=width, height=height, dpi=dpi)
    return replace(built, source=PDF_TEXT_SOURCE)


# ------------------------------------------------------------------------------------------------
# Removing invisible text from content streams (--redo-ocr)
# ------------------------------------------------------------------------------------------------

# PDF content tokens: strings (literal with balanced parentheses and escapes, hex), dictionaries'
# brackets, arrays' brackets, names, numbers and operators, comments. Inline images are handled apart.
_TOKEN = re.compile(
    rb"""(?P<ws>[\x00\t\n\x0c\r ]+)
    |(?P<comment>%[^\r\n]*)
    |(?P<lit>\()
    |(?P<hex><[0-9A-Fa-f\s]*>)
    |(?P<delim><<|>>|\[|\]|\{|\})
    |(?P<name>/[^\x00\t\n\x0c\r ()<>\[\]{}/%]*)
    |(?P<word>[^\x00\t\n\x0c\r ()<>\[\]{}/%]+)""",
    re.VERBOSE,
)
_SHOW = {b"Tj", b"TJ", b"'", b'"'}


def _literal_end(data: bytes, start: int) -> int:
    """Index just past the literal string opening at ``data[start] == '('``."""
    depth, i = 0, start
    while i < len(data):
        c = data[i]
        if c == 0x5C:  # backslash escapes the next byte
            i += 2
            continue
        if c == 0x28:
            depth += 1
        elif c == 0x29:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError("unterminated string in content stream")


def _inline_image_end(data: bytes, start: int) -> int:
    """Index just past ``EI`` of an inline image whose ``ID`` ends at ``start``."""
    for m in re.finditer(rb"[\x00\t\n\x0c\r ]EI(?=[\x00\t\n\x0c\r ]|$)", data[start:]):
        return start + m.end()
    raise ValueError("unterminated inline image in content stream")


def strip_invisible_text(content: bytes, render_mode: int = 0) -> tuple[bytes, int, bool]:
    """``content`` without the text-showing operators drawn in render mode 3 (pure).

    Tracks ``Tr`` through ``q``/``Q`` (render mode is graphics state); a dropped operator is removed
    with its operands, everything else is kept byte for byte. Returns the new stream, the render
    mode in force at its end (unused by callers, for forms), and whether anything was removed.
    ``render_mode`` is the mode inherited (a form XObject inherits its caller's)."""
    out: list[bytes] = []
    operands_start: int | None = None
    stack: list[int] = []
    mode = render_mode
    operands: list[bytes] = []
    removed = False
    kept_until = 0
    i = 0
    n = len(content)
    while i < n:
        m = _TOKEN.match(content, i)
        if m is None:
            raise ValueError(f"unreadable content stream at byte {i}")
        kind = m.lastgroup
        end = _literal_end(content, i) if kind == "lit" else m.end()
        if kind in ("ws", "comment"):
            i = end
            continue
        if operands_start is None:
            operands_start = i
        if kind == "word" and not re.fullmatch(rb"[+-]?(\d+\.?\d*|\.\d+)", m.group()) and m.group() not in (b"true", b"false", b"null"):
            op = m.group()
            if op == b"q":
                stack.append(mode)
            elif op == b"Q":
                mode = stack.pop() if stack else mode
            elif op == b"Tr" and operands:
                try:
                    mode = int(float(operands[-1]))
                except ValueError:
                    pass
            elif op in _SHOW and mode == INVISIBLE:
                out.append(content[kept_until:operands_start])
                kept_until = end
                removed = True
            elif op == b"ID":  # inline image data follows: skip to EI
                end = _inline_image_end(content, end)
            operands, operands_start = [], None
        else:
            operands.append(content[i:end])
        i = end
    out.append(content[kept_until:])
    return b"".join(out), mode, removed


def strip_invisible_text_from_page(doc, page) -> bool:
    """Remove invisible text from a pymupdf ``page`` of ``doc`` in place: its content streams and,
    recursively, the form XObjects it draws. Returns whether anything was removed."""
    removed = False
    xrefs = page.get_contents()
    if xrefs:
        data = b"\n".join(doc.xref_stream(x) or b"" for x in xrefs)
        new, _, changed = strip_invisible_text(data)
        if changed:
            # One stream for all: an operator may straddle two of the page's content streams.
            doc.update_stream(xrefs[0], new)
            doc.xref_set_key(page.xref, "Contents", f"{xrefs[0]} 0 R")
            removed = True
    seen: set[int] = set()
    for xref, *_ in page.get_xobjects():
        removed |= _strip_form(doc, xref, seen)
    return removed


def _strip_form(doc, xref: int, seen: set[int]) -> bool:
    if xref in seen or doc.xref_get_key(xref, "Subtype")[1] != "/Form":
        return False
    seen.add(xref)
    new, _, changed = strip_invisible_text(doc.xref_stream(xref) or b"")
    if changed:
        doc.update_stream(xref, new)
    kind, value = doc.xref_get_key(xref, "Resources/XObject")
    if kind == "xref":  # an indirect XObject dictionary
        value = doc.xref_object(int(value.split()[0]))
    for ref in re.findall(r"(\d+) 0 R", value or ""):
        changed |= _strip_form(doc, int(ref), seen)
    return changed


def count_by_source(pages: Sequence[Page]) -> tuple[int, int]:
    """(pages read by the model, pages taken from the PDF's own text), failed pages excluded."""
    from_pdf = sum(1 for p in pages if p.source == PDF_TEXT_SOURCE and not p.error)
    return sum(1 for p in pages if not p.error) - from_pdf, from_pdf
