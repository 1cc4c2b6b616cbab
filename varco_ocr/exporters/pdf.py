"""Searchable PDF export: page images (or the original PDF pages) with an invisible text layer.

The technique follows what OCRmyPDF's hOCR renderer does (ideas, not code): every word is drawn in
text render mode 3 (neither fill nor stroke, so invisible but selectable), its font size chosen so
the font's ascent-to-descent span equals the word box height, and horizontally scaled (``Tz``) so
its advance width equals the box width; between two words of a line a space is stretched over the
gap, so extractors see a real space there and none anywhere else. The font is the glyphless font of
``varco_ocr.exporters.glyphless`` (one per output file, shared by its pages): every code point gets
a CID whose ToUnicode entry is that exact code point, so any text the model read comes back out,
with the exceptions ``layer_clusters`` documents (control characters). Right-to-left words are drawn
in display order (``glyphless.visual_order``), as a typesetter would.

Memory: see ``write_searchable_pdf`` (the output is flushed to disk every few pages).

Coordinates: a word box in page pixels is first scaled to *visible* page points (the page as shown,
rotation applied, origin at the crop box's top-left), then mapped into PDF user space by undoing the
page rotation and the crop-box offset. Text is drawn along the visible page's x axis, so on a rotated
page it reads the right way up in a viewer.
"""

from __future__ import annotations

import io
import struct
import unicodedata
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image

from varco_ocr.document import Document, Page, atomic_path
from varco_ocr.exporters import glyphless
from varco_ocr.exporters.common import ocr_system, resolve_source
from varco_ocr.errors import InputError
from varco_ocr.exporters.glyphless import ClusterCodes, grapheme_clusters, visual_order

TEXT_FONT_NAME = "VarcoOCRText"  # resource name; unlikely to clash with the original page's fonts
DEFAULT_IMAGE_DPI = 300.0  # page size of image inputs whose files record no resolution
# Pages copied into the output before it is flushed to disk and reopened: bounds the export's memory
# by this many pages' worth of source objects, whatever the length of the document (see module doc).
FLUSH_EVERY_PAGES = 8

Matrix6 = tuple[float, float, float, float, float, float]


@dataclass(frozen=True)
class PlacedWord:
    text: str
    box: tuple[float, float, float, float]  # visible page points, y down


def _num(v: float) -> str:
    s = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def _matrix(m: Matrix6) -> str:
    return " ".join(_num(v) for v in m)


def _mul(m: Matrix6, n: Matrix6) -> Matrix6:
    a, b, c, d, e, f = m
    A, B, C, D, E, F = n
    return (a * A + b * C, a * B + b * D, c * A + d * C, c * B + d * D, e * A + f * C + E, e * B + f * D + F)


def layer_clusters(text: str) -> list[str]:
    """What the text layer carries of ``text``: its grapheme clusters, in logical order.

    Everything is carried exactly (format characters such as ZWJ, ZWNJ, ZWSP, LRM/RLM and the soft
    hyphen included: pymupdf and poppler give them back), except what no PDF extractor gives back
    faithfully: a control character that is whitespace (TAB, LF, CR, NEL, ...) becomes a space,
    which is how every extractor reads it anyway (a word break); any other control character (C0/C1,
    category Cc) and a lone surrogate (not encodable in the UTF-16 of a ToUnicode map) become
    U+FFFD, so the text keeps a visible mark where the model wrote something unprintable instead of
    MuPDF's arbitrary substitutes. The JSON keeps the exact text in all cases."""
    out = []
    for cluster in grapheme_clusters(text):
        if len(cluster) == 1 and unicodedata.category(cluster) == "Cc":
            cluster = " " if cluster.isspace() else "\ufffd"
        elif any(unicodedata.category(ch) == "Cs" for ch in cluster):
            cluster = "".join("\ufffd" if unicodedata.category(ch) == "Cs" else ch for ch in cluster)
        out.append(cluster)
    return out


def _drawn_code_points(text: str) -> list[str]:
    """The code points drawn for a word, in display order. Printable ASCII (most words) is its own
    clusters, left to right, nothing replaced: the same list as the general path, without a regex
    and a bidi lookup per character (measured: most of the text layer's time for a 400-word page)."""
    if text.isascii() and text.isprintable():
        return list(text)
    return [ch for c in visual_order(layer_clusters(text)) for ch in c]


def text_layer_operators(lines: Iterable[Sequence[PlacedWord]], codes: ClusterCodes, to_user_space: Matrix6) -> str:
    """PDF content-stream operators drawing ``lines`` of words invisibly in the glyphless font
    (pure apart from allocating CIDs in ``codes``; see module doc).

    ``to_user_space`` maps visible page points (y down) to PDF user space. Each word gets its own
    text matrix, so a slanted or ragged line still puts every word on its own box.
    """
    ops = ["q", "BT", "3 Tr"]
    em = glyphless.ADVANCE / glyphless.UNITS_PER_EM  # every cluster's advance, in units of the font size
    ascent, descent = glyphless.ASCENT / glyphless.UNITS_PER_EM, glyphless.DESCENT / glyphless.UNITS_PER_EM
    for line in lines:
        # Clusters are reordered for display, then drawn one CID per code point (see glyphless).
        words = [(w, _drawn_code_points(w.text)) for w in line]
        words = [(w, c) for w, c in words if c and w.box[2] > w.box[0] and w.box[3] > w.box[1]]
        for i, (word, clusters) in enumerate(words):
            x1, y1, x2, y2 = word.box
            size = (y2 - y1) / (ascent - descent)
            baseline = y2 + descent * size  # descent < 0: the baseline sits above the bottom
            natural = (len(clusters) if word.text.isascii() else sum(0 if glyphless.is_mark(c) else 1 for c in clusters)) * em * size
            if natural <= 0:
                continue
            # Text space: x along the visible page, y up; (1, 0, 0, -1) flips our y-down page points.
            tm = _mul((1.0, 0.0, 0.0, -1.0, x1, baseline), to_user_space)
            ops.append(f"/{TEXT_FONT_NAME} {_num(size)} Tf {_num(100 * (x2 - x1) / natural)} Tz {_matrix(tm)} Tm <{codes.hex(clusters)}> Tj")
            if i + 1 < len(words):
                gap = words[i + 1][0].box[0] - x2
                if gap > 0:
                    # The pen is at the word's right edge: stretch one space over the gap to the next word.
                    ops.append(f"{_num(100 * gap / (em * size))} Tz <{codes.hex(' ')}> Tj")
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


def _new_object(doc, source: str) -> int:
    xref = doc.get_new_xref()
    doc.update_object(xref, source)
    return xref


def _new_stream(doc, data: bytes, dictionary: str = "<<>>") -> int:
    xref = _new_object(doc, dictionary)
    doc.update_stream(xref, data)  # compressed (FlateDecode) by pymupdf
    return xref


@dataclass(frozen=True)
class GlyphlessFontObjects:
    """Object numbers of the one glyphless font of an output PDF. The ToUnicode CMap and the
    CIDToGIDMap are filled in last, once every page's text has allocated its CIDs."""

    font: int  # the Type0 font the pages' resources name
    to_unicode: int
    cid_to_gid: int
    cid_font: int  # the CIDFontType2, whose /W gives combining marks zero width


def _add_glyphless_font(doc) -> GlyphlessFontObjects:
    ttf = glyphless.glyphless_truetype()
    name = "/VarcoOCRGlyphless"
    file_xref = _new_stream(doc, ttf, f"<< /Length1 {len(ttf)} >>")
    descriptor = _new_object(
        doc,
        f"<< /Type /FontDescriptor /FontName {name} /Flags 4 "
        f"/FontBBox [0 {glyphless.DESCENT} {glyphless.ADVANCE} {glyphless.ASCENT}] /ItalicAngle 0 "
        f"/Ascent {glyphless.ASCENT} /Descent {glyphless.DESCENT} /CapHeight {glyphless.ASCENT} /StemV 80 "
        f"/FontFile2 {file_xref} 0 R >>",
    )
    cid_to_gid = _new_stream(doc, glyphless.cid_to_gid_map(0))
    cid_font = _new_object(
        doc,
        f"<< /Type /Font /Subtype /CIDFontType2 /BaseFont {name} "
        "/CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> "
        f"/FontDescriptor {descriptor} 0 R /DW {glyphless.ADVANCE} /CIDToGIDMap {cid_to_gid} 0 R >>",
    )
    to_unicode = _new_stream(doc, glyphless.to_unicode_cmap({}))
    font = _new_object(
        doc,
        f"<< /Type /Font /Subtype /Type0 /BaseFont {name} /Encoding /Identity-H "
        f"/DescendantFonts [{cid_font} 0 R] /ToUnicode {to_unicode} 0 R >>",
    )
    return GlyphlessFontObjects(font, to_unicode, cid_to_gid, cid_font)


def _finish_glyphless_font(doc, objects: GlyphlessFontObjects, codes: ClusterCodes) -> None:
    doc.update_stream(objects.to_unicode, glyphless.to_unicode_cmap(codes.mapping))
    doc.update_stream(objects.cid_to_gid, glyphless.cid_to_gid_map(codes.max_cid))
    doc.xref_set_key(objects.cid_font, "W", glyphless.widths_array(codes.mapping))


def _append_text_layer(doc, page, operators: str, font_xref: int) -> None:
    # The font goes into the page's font dictionary, following an indirect /Resources or /Font
    # (pymupdf's key paths do not); if that dictionary is shared with other pages, the name then
    # names the same font on them, harmlessly.
    owner, key = page.xref, "Resources"
    kind, value = doc.xref_get_key(owner, key)
    if kind == "xref":
        owner, key = int(value.split()[0]), ""
    font_key = f"{key}/Font" if key else "Font"
    kind, value = doc.xref_get_key(owner, font_key)
    if kind == "xref":
        doc.xref_set_key(int(value.split()[0]), TEXT_FONT_NAME, f"{font_xref} 0 R")
    else:
        doc.xref_set_key(owner, f"{font_key}/{TEXT_FONT_NAME}", f"{font_xref} 0 R")
    # Deflated here at zlib's default level: MuPDF's own (best) compression of this ~40 KB stream took
    # ~9 ms of a one-page document's ~17 ms export, for ~6% fewer bytes of a stream ~1% of the file.
    xref = _new_object(doc, "<<>>")
    doc.update_stream(xref, zlib.compress(operators.encode("ascii"), 6), compress=False)
    doc.xref_set_key(xref, "Filter", "/FlateDecode")
    refs = " ".join(f"{x} 0 R" for x in (*page.get_contents(), xref))
    doc.xref_set_key(page.xref, "Contents", f"[{refs}]")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class PngStream:
    """A PNG whose compressed pixel data a PDF can carry as it is: non-interlaced, 8 bits, grey or
    RGB, no transparency, no palette. The IDAT data is a zlib stream of rows, each led by its PNG
    filter byte, which is exactly what PDF's FlateDecode with ``/Predictor 15`` decodes."""

    width: int
    height: int
    colors: int  # 1 grey, 3 RGB
    data: bytes  # the IDAT chunks' data, concatenated
    exif: bytes | None  # an eXIf chunk's data, if any (its orientation decides whether it is shown as stored)


def png_stream(data: bytes) -> PngStream | None:
    """The PNG ``data`` as a PngStream, reading chunk headers only (no pixel is decoded), or None
    when it cannot be embedded as stored (not a PNG, interlaced, 16-bit, palette, alpha, tRNS, a
    damaged chunk). Pure: whatever the bytes, it never raises."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    pos, idat, exif, header = len(PNG_SIGNATURE), [], None, None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length or len(data) < pos + 12 + length:
            return None  # cut short
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            return None  # damaged: let the decoder path report or repair it
        if kind == b"IHDR":
            if length != 13:
                return None
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"eXIf":
            exif = body
        elif kind == b"tRNS":
            return None  # transparency: the page is composited over white first
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None or not idat:
        return None
    width, height, depth, color_type, compression, filtering, interlace = header
    if depth != 8 or color_type not in (0, 2) or compression or filtering or interlace or not width or not height:
        return None
    return PngStream(width, height, 1 if color_type == 0 else 3, b"".join(idat), exif)


def _add_png_image(doc, png: PngStream) -> int:
    """The PNG's pixels as an image XObject, its compressed data copied unchanged (no decode, no
    recompression): FlateDecode with the PNG predictors."""
    colorspace = "/DeviceGray" if png.colors == 1 else "/DeviceRGB"
    xref = _new_object(doc, "<<>>")
    doc.update_stream(xref, png.data, compress=False)
    for key, value in (("Type", "/XObject"), ("Subtype", "/Image"), ("Width", str(png.width)), ("Height", str(png.height)),
                       ("ColorSpace", colorspace), ("BitsPerComponent", "8"), ("Filter", "/FlateDecode"),
                       ("DecodeParms", f"<</Predictor 15/Colors {png.colors}/BitsPerComponent 8/Columns {png.width}>>")):
        doc.xref_set_key(xref, key, value)
    return xref


def _insert_page_image(out, out_page, source: Path, page_index: int, password: str | None) -> None:
    """Draw an image input's page over ``out_page``: a PNG shown as stored by its own compressed
    data, a JPEG shown as stored by its own bytes (pymupdf embeds a JPEG as DCTDecode unchanged),
    anything else (EXIF rotation, transparency, 16 bits, TIFF, ...) as the normalised page, encoded
    once."""
    suffix = source.suffix.lower()
    if suffix == ".png":
        png = png_stream(source.read_bytes())
        if png is not None and _orientation(png.exif) == 1:
            out_page.insert_image(out_page.rect, xref=_add_png_image(out, png))
            return
    elif suffix in (".jpg", ".jpeg"):
        with Image.open(source) as im:  # JPEG headers (EXIF in APP1) are read at open, no decoding
            plain = im.format == "JPEG" and im.getexif().get(0x0112, 1) == 1 and im.mode in ("RGB", "L")
        if plain:
            out_page.insert_image(out_page.rect, stream=source.read_bytes())
            return
    from varco_ocr.inputs import open_document

    with open_document(source, password=password) as doc:
        doc.page_indices = [page_index]
        produced = next(doc.iter_pages())
    if produced.image is None:
        raise ValueError(produced.error or f"page {page_index + 1} unreadable")
    buf = io.BytesIO()
    produced.image.save(buf, format="PNG")
    out_page.insert_image(out_page.rect, stream=buf.getvalue())


def _orientation(exif: bytes | None) -> int:
    if not exif:
        return 1
    parsed = Image.Exif()
    try:
        parsed.load(exif if exif.startswith(b"Exif\x00\x00") else b"Exif\x00\x00" + exif)
        return int(parsed.get(0x0112, 1))
    except Exception:  # noqa: BLE001 - an unreadable EXIF: take the decoding path, which decides
        return 0


def _open_source_pdf(source: Path, password: str | None):
    import pymupdf

    src = pymupdf.open(source, filetype="pdf")
    if src.needs_pass and not src.authenticate(password or ""):
        src.close()
        raise ValueError(f"{source}: encrypted PDF; the right --password is needed to export it")
    return src


def _add_page(out, src, page: Page, source: Path, password: str | None, codes: ClusterCodes, font_xref: int, strip_old_layer: bool = False) -> None:
    """Append ``page`` to ``out``: the source PDF's page as it is, or the page image, and over it
    the page's words as the invisible text layer. A page whose words are the PDF's own text
    (``--skip-text``) is copied as it is, without a second layer; with ``strip_old_layer`` a page
    the model read loses any invisible text it had (an old OCR layer) before ours goes on."""
    from varco_ocr.pdf_text import PDF_TEXT_SOURCE, strip_invisible_text_from_page

    if src is not None:
        # final=0 keeps pymupdf's map of objects already copied from ``src`` into ``out``, so what
        # pages share (an ICC profile, fonts, a repeated image) is copied once, not once per page.
        out.insert_pdf(src, from_page=page.index, to_page=page.index, final=0)
        out_page = out[-1]
        if page.source == PDF_TEXT_SOURCE:
            return
        if strip_old_layer:
            try:
                strip_invisible_text_from_page(out, out_page)
            except ValueError as e:  # never a second layer silently beside the old one
                raise ValueError(f"page {page.index + 1}: cannot remove its old text layer ({e})") from None
        if page.width <= 0 or page.height <= 0 or not page.words:
            return
        out_page.wrap_contents()  # isolate the original's graphics state from our layer
        rect = out_page.rect
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
            return
        w_pt, h_pt = page.width * 72.0 / dpi, page.height * 72.0 / dpi
        out_page = out.new_page(width=w_pt, height=h_pt)
        try:
            _insert_page_image(out, out_page, source, page.index, password)
        except (ValueError, InputError):
            if page.error is None:
                raise
            return  # a page that failed keeps its size but may not decode: blank, at that size
        to_user = (1.0, 0.0, 0.0, -1.0, 0.0, h_pt)
        scale_x = scale_y = 72.0 / dpi
        if not page.words:
            return
    operators = text_layer_operators(_visible_lines(page, scale_x, scale_y), codes, to_user)
    _append_text_layer(out, out_page, operators, font_xref)


def write_searchable_pdf(document: Document, source: Path, path: Path, password: str | None = None, flush_every: int | None = None) -> None:
    """Write the searchable PDF of ``document`` to ``path`` (a temporary path: the caller renames it).

    Memory stays bounded whatever the source's size: every ``flush_every`` pages the output is
    written to ``path`` (the first time in full, then as incremental updates) and reopened from
    disk, so pages already copied are no longer held in memory; the source is read from its file
    page by page. The glyphless font's ToUnicode map, complete only after the last page, goes in
    the last update.
    """
    import pymupdf

    from varco_ocr.inputs import looks_like_pdf

    flush_every = flush_every or FLUSH_EVERY_PAGES
    is_pdf = source.suffix.lower() == ".pdf" or looks_like_pdf(source)
    src = _open_source_pdf(source, password) if is_pdf else None
    codes = ClusterCodes()
    # --skip-text / --redo-ocr: pages the model read must not keep an old OCR layer beside ours.
    strip_old_layer = document.metadata.get("text_mode") in ("skip-text", "redo-ocr")
    out = pymupdf.open()
    try:
        font = _add_glyphless_font(out)
        saved = False
        for n, page in enumerate(document.pages, 1):
            _add_page(out, src, page, source, password, codes, font.font, strip_old_layer)
            if n % flush_every == 0 and n < len(document.pages):
                # Copied pages live in memory until written: flush them and continue from the file.
                out.save(path, incremental=saved, encryption=pymupdf.PDF_ENCRYPT_KEEP if saved else pymupdf.PDF_ENCRYPT_NONE, deflate=True)
                saved = True
                out.close()
                out = pymupdf.open(path)
                if src is not None:  # MuPDF keeps every object it parsed: start the source afresh too
                    src.close()
                    src = _open_source_pdf(source, password)
                pymupdf.TOOLS.store_shrink(100)
        _finish_glyphless_font(out, font, codes)
        out.set_metadata({"producer": ocr_system(document), "creator": ocr_system(document)})
        if saved:
            out.save(path, incremental=True, encryption=pymupdf.PDF_ENCRYPT_KEEP, deflate=True)
        else:
            out.save(path, garbage=3, deflate=True)
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
    with atomic_path(Path(out_path)) as tmp:
        write_searchable_pdf(document, src, tmp, password)
    return [Path(out_path)]
