"""Overlay export: a PNG per page with the word boxes (red) and line boxes (blue) drawn, for
checking results by eye. A single-page document gives ``NAME.overlay.png``; a multi-page one gives
``NAME.p0001.overlay.png`` ... numbered by the page's number in the source (1-based)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from PIL import Image, ImageDraw

from varco_ocr.document import Document, Page, atomic_path
from varco_ocr.exporters.common import resolve_source

WORD_COLOR = (220, 30, 30)
LINE_COLOR = (30, 90, 220)


def draw_overlay(image: Image.Image, page: Page) -> Image.Image:
    """A copy of ``image`` with ``page``'s line and word boxes drawn (pure). Boxes are in page
    pixels; the image is scaled to them if its size differs (e.g. re-rendered at another DPI)."""
    canvas = image.convert("RGB")
    if canvas.size != (page.width, page.height) and page.width > 0 and page.height > 0:
        canvas = canvas.resize((page.width, page.height), Image.Resampling.BILINEAR)
    else:
        canvas = canvas.copy()
    draw = ImageDraw.Draw(canvas)
    stroke = max(1, round(max(canvas.size) / 1000))
    for line in page.lines:
        x1, y1, x2, y2 = line.bbox
        draw.rectangle((x1 - 2 * stroke, y1 - 2 * stroke, x2 + 2 * stroke, y2 + 2 * stroke), outline=LINE_COLOR, width=stroke)
    for word in page.words:
        draw.rectangle(word.bbox, outline=WORD_COLOR, width=stroke)
    return canvas


def overlay_page_path(out_path: Path, index: int, single_page: bool) -> Path:
    """The overlay of page ``index`` (0-based) given the base ``out_path`` (``NAME.overlay.png``):
    the base itself for a single-page document, ``NAME.p0001.overlay.png`` ... otherwise."""
    out_path = Path(out_path)
    if single_page:
        return out_path
    name = out_path.name.removesuffix(".overlay.png")
    return out_path.with_name(f"{name}.p{index + 1:04d}.overlay.png")


def overlay_paths(out_path: Path, pages: list[Page]) -> list[Path]:
    """Output files for ``pages`` given the base ``out_path`` (``NAME.overlay.png``). Pages that
    could not be read get no overlay."""
    readable = [p for p in pages if p.error is None and p.width > 0]
    return [overlay_page_path(out_path, p.index, len(pages) == 1) for p in readable]


def page_images(document: Document, source: Path, password: str | None = None) -> Iterator[tuple[Page, Image.Image]]:
    """The document's readable pages as images, one at a time: PDF pages re-rendered at the size
    the model read them, other files decoded as the inputs module does."""
    from varco_ocr.inputs import looks_like_pdf, open_document

    pages = [p for p in document.pages if p.error is None and p.width > 0]
    if source.suffix.lower() == ".pdf" or looks_like_pdf(source):
        import pymupdf

        with pymupdf.open(source, filetype="pdf") as pdf:
            if pdf.needs_pass and not pdf.authenticate(password or ""):
                raise ValueError(f"{source}: encrypted PDF; the right --password is needed to export it")
            for page in pages:
                src_page = pdf.load_page(page.index)
                zoom = page.width / src_page.rect.width
                pix = src_page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), colorspace=pymupdf.csRGB, alpha=False)
                yield page, Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
        return
    with open_document(source, password=password) as doc:
        by_index = {p.index: p for p in pages}
        doc.page_indices = sorted(by_index)
        for produced in doc.iter_pages():
            if produced.image is not None:
                yield by_index[produced.index], produced.image


def export_overlay(
    document: Document,
    out_path: Path,
    source: str | Path | None = None,
    source_base: Path | None = None,
    password: str | None = None,
    **_: object,
) -> list[Path]:
    src = resolve_source(document, source, source_base)
    paths = dict(zip((p.index for p in document.pages if p.error is None and p.width > 0), overlay_paths(out_path, list(document.pages))))
    written = []
    for page, image in page_images(document, src, password):
        path = paths[page.index]
        with atomic_path(path) as tmp:
            draw_overlay(image, page).save(tmp, format="PNG")
        written.append(path)
    return written
