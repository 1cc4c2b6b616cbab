"""Document inputs: files and folders -> documents -> pages as PIL images, produced lazily.

A *document* is one input file: an image (one page), a multi-page TIFF (one page per frame) or a PDF
(one page per PDF page, rendered with pymupdf at a chosen DPI). Pages are opened, decoded or rendered
only when iterated, and nothing keeps a reference to a page once it is handed out, so memory holds at
most the pages a consumer has in flight, whatever the document length.

For PDF pages the geometry needed to express pixel boxes in PDF points (``Word.bbox_pt``) is kept
with each page: see :class:`PdfPageGeometry`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Iterator, Sequence

from PIL import Image

from varco_ocr.document import BBox, BBoxPt, Page
from varco_ocr.errors import InputError
from varco_ocr.preprocessing import DEFAULT_MAX_PIXELS

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif"})
TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
PDF_SUFFIXES = frozenset({".pdf"})
SUPPORTED_SUFFIXES = IMAGE_SUFFIXES | PDF_SUFFIXES
DEFAULT_DPI = 300.0


# --------------------------------------------------------------------------------------------
# --pages: "1-5,9,12-" -> 0-based indices
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageRanges:
    """1-based inclusive page ranges as the user wrote them; ``None`` as an end means "to the last"."""

    ranges: tuple[tuple[int, int | None], ...]

    def indices(self, page_count: int) -> list[int]:
        """The selected 0-based page indices that exist in a document of ``page_count`` pages,
        in ascending order, each once."""
        chosen: set[int] = set()
        for first, last in self.ranges:
            end = page_count if last is None else min(last, page_count)
            chosen.update(range(first - 1, end))
        return sorted(chosen)

    def beyond(self, page_count: int) -> "PageRanges | None":
        """The requested pages a document of ``page_count`` pages does not have (``indices`` leaves
        them out), merged and in ascending order, or None when every requested page exists. An
        open range (``3-``) asks only for pages that exist, unless it starts past the last."""
        past: list[tuple[int, int | None]] = []
        for first, last in sorted(self.ranges, key=lambda r: r[0]):
            if last is not None and last <= page_count or last is None and first <= page_count:
                continue
            first = max(first, page_count + 1)
            if past and (past[-1][1] is None or first <= past[-1][1] + 1):  # overlaps or touches the previous
                end = past[-1][1]
                past[-1] = (past[-1][0], None if end is None or last is None else max(end, last))
            else:
                past.append((first, last))
        return PageRanges(tuple(past)) if past else None

    def __str__(self) -> str:
        return ",".join(f"{a}" if a == b else f"{a}-{'' if b is None else b}" for a, b in self.ranges)


def missing_pages_note(requested: PageRanges, missing: PageRanges, page_count: int) -> str:
    """One line naming the requested pages a document does not have."""
    many = len(missing.ranges) > 1 or missing.ranges[0][0] != missing.ranges[0][1]
    return (f"--pages {requested}: page{'s' if many else ''} {missing} not in the document "
            f"(it has {page_count} page{'s' if page_count != 1 else ''})")


_RANGE_RE = re.compile(r"^\s*(\d+)\s*(?:(-)\s*(\d*)\s*)?$")


def parse_page_ranges(spec: str) -> PageRanges:
    """Parse ``--pages`` (``"1-5,9"``, ``"3-"``). Raises ValueError with a one-line reason."""
    ranges: list[tuple[int, int | None]] = []
    for part in spec.split(","):
        m = _RANGE_RE.match(part)
        if not m:
            raise ValueError(f"bad page range {part.strip()!r} in --pages {spec!r} (expected e.g. 1-5,9)")
        first = int(m.group(1))
        last: int | None = first if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
        if first < 1 or (last is not None and last < first):
            raise ValueError(f"bad page range {part.strip()!r} in --pages {spec!r} (pages count from 1)")
        ranges.append((first, last))
    return PageRanges(tuple(ranges))


# --------------------------------------------------------------------------------------------
# Finding documents in files and folders
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputFile:
    path: Path
    # Where outputs go, relative to the output folder and without a suffix: the file's stem, or its
    # path inside the folder that was given, so equal names in sub-folders do not collide.
    output_stem: Path


@dataclass(frozen=True)
class SkippedFile:
    path: Path
    reason: str


@dataclass(frozen=True)
class InputListing:
    files: tuple[InputFile, ...]
    skipped: tuple[SkippedFile, ...] = ()  # unsupported files met in folders: a note, not an error
    missing: tuple[Path, ...] = ()  # paths given that do not exist: an error for each
    # files named explicitly that are outputs (under the output folder, or recorded as written by
    # varco-ocr): an error for each, never read
    refused: tuple[SkippedFile, ...] = ()


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def collect_inputs(
    paths: Sequence[Path],
    glob: str | None = None,
    exclude_dir: Path | None = None,
    exclude_files: Collection[Path] = (),
) -> InputListing:
    """Expand folders (recursively, optionally filtered by ``glob`` on the path relative to the
    folder, e.g. ``*.pdf`` or ``2023/**/*.tif``) into document files in a stable sorted order.

    Files named explicitly are kept whatever their suffix (opening them reports the problem);
    unsupported files met inside folders are skipped with a note. Missing paths are listed apart.
    What a run writes is never read back as its input: inside a given folder, ``exclude_dir`` (the
    output folder) and everything under it is left out, and so are ``exclude_files`` (resolved paths:
    the files the run log says varco-ocr wrote, which matters when the output folder *is* the input
    folder). A file named explicitly is refused (listed in ``refused``) when it is one of
    ``exclude_files`` or lies below ``exclude_dir``; only when it sits directly in the output folder
    (``varco-ocr scan.png -o .``: the inputs' own folder is the output folder, as for a folder given
    as its own output folder) is it read, unless recorded as an output.
    """
    files: list[InputFile] = []
    skipped: list[SkippedFile] = []
    missing: list[Path] = []
    refused: list[SkippedFile] = []
    excluded_dir = exclude_dir.resolve() if exclude_dir is not None else None
    excluded_files = frozenset(exclude_files)
    for given in paths:
        given = Path(given)
        if given.is_dir():
            found = sorted((p for p in given.rglob("*") if p.is_file()), key=lambda p: p.relative_to(given).as_posix())
            # the output folder is pruned when it lies *inside* the given folder; when the given
            # folder is the output folder (-o in/ for in/) or inside it, only the files the log
            # records as outputs are left out
            root = given.resolve()
            prune = excluded_dir is not None and excluded_dir != root and excluded_dir.is_relative_to(root)
            for p in found:
                rel = p.relative_to(given)
                if any(part.startswith(".") for part in rel.parts):
                    continue  # hidden files and folders (.git, .DS_Store, our own temp files)
                if prune or excluded_files:
                    resolved = p.resolve()
                    if resolved in excluded_files or (prune and resolved.is_relative_to(excluded_dir)):  # type: ignore[arg-type]
                        continue
                if glob and not (rel.match(glob) or p.match(glob)):
                    continue
                if not is_supported(p):
                    skipped.append(SkippedFile(p, f"unsupported file type {p.suffix or '(none)'}"))
                    continue
                files.append(InputFile(p, rel.with_suffix("")))
        elif given.exists():
            reason = _output_not_input(given, excluded_dir, excluded_files)
            if reason is not None:
                refused.append(SkippedFile(given, reason))
                continue
            files.append(InputFile(given, Path(given.stem)))
        else:
            missing.append(given)
    return InputListing(_disambiguate(files), tuple(skipped), tuple(missing), tuple(refused))


def _output_not_input(path: Path, out_dir: Path | None, outputs: Collection[Path]) -> str | None:
    """Why a file named explicitly is an output, never an input (see ``collect_inputs``), or None."""
    resolved = path.resolve()
    if resolved in outputs:
        return "it is an output varco-ocr wrote (the output folder's run log names it); outputs are never inputs"
    if out_dir is not None and resolved.parent != out_dir and resolved.is_relative_to(out_dir):
        return f"it lies inside the output folder {out_dir}; the output folder, and anything under it, is never an input"
    return None


def _disambiguate(files: list[InputFile]) -> tuple[InputFile, ...]:
    """Two inputs with the same output stem (``a/x.pdf`` and ``b/x.pdf`` given as files, or ``x.png``
    beside ``x.pdf``) would overwrite each other's outputs: keep the suffix in the stem for those,
    then number any that still collide."""
    counts: dict[Path, int] = {}
    for f in files:
        counts[f.output_stem] = counts.get(f.output_stem, 0) + 1
    out: list[InputFile] = []
    used: set[Path] = set()
    for f in files:
        stem = f.output_stem
        if counts[stem] > 1:
            stem = stem.with_name(f"{stem.name}{f.path.suffix.lower().replace('.', '_')}")
        base, n = stem, 1
        while stem in used:
            n += 1
            stem = base.with_name(f"{base.name}-{n}")
        used.add(stem)
        out.append(InputFile(f.path, stem))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# PDF geometry: rendered pixels -> PDF points
# --------------------------------------------------------------------------------------------

Matrix6 = tuple[float, float, float, float, float, float]


def _mul(m: Matrix6, n: Matrix6) -> Matrix6:
    """Row-vector affine product ``m`` then ``n`` (PDF / pymupdf convention: p' = p * m * n)."""
    a, b, c, d, e, f = m
    A, B, C, D, E, F = n
    return (a * A + b * C, a * B + b * D, c * A + d * C, c * B + d * D, e * A + f * C + E, e * B + f * D + F)


def _apply(m: Matrix6, x: float, y: float) -> tuple[float, float]:
    a, b, c, d, e, f = m
    return (x * a + y * c + e, x * b + y * d + f)


@dataclass(frozen=True)
class PdfPageGeometry:
    """How a page rendered from a PDF maps to the PDF's own coordinates.

    ``pixel_to_pt`` maps a pixel of the rendered (visible, rotated) page to pymupdf's *unrotated*
    page coordinates: points, y downwards, the system of ``page.cropbox`` (x as in the PDF, y measured
    down from the top of the MediaBox). That is the space of ``Word.bbox_pt``.
    ``mediabox_top`` (the MediaBox's upper y in PDF user space) turns it into PDF user space, where
    a content stream draws: ``(x, mediabox_top - y)``. ``rotation`` is the page's /Rotate.
    """

    pixel_to_pt: Matrix6
    mediabox_top: float
    rotation: int
    visible_size_pt: tuple[float, float]  # page.rect: the crop box as displayed (rotation applied)

    def bbox_pt(self, bbox: Sequence[float]) -> BBoxPt:
        """A pixel box of the rendered page as a box in unrotated page points. Rotation by a multiple
        of 90 degrees keeps boxes axis-aligned, so mapping two corners and re-ordering is exact."""
        x1, y1 = _apply(self.pixel_to_pt, bbox[0], bbox[1])
        x2, y2 = _apply(self.pixel_to_pt, bbox[2], bbox[3])
        return (round(min(x1, x2), 3), round(min(y1, y2), 3), round(max(x1, x2), 3), round(max(y1, y2), 3))

    def pt_to_user_space(self) -> Matrix6:
        """Unrotated page points (``bbox_pt`` space) -> PDF user space (y up)."""
        return (1.0, 0.0, 0.0, -1.0, 0.0, self.mediabox_top)


def pdf_page_geometry(page, pixel_width: int, pixel_height: int) -> PdfPageGeometry:
    """Geometry of a pymupdf ``page`` rendered to ``pixel_width`` x ``pixel_height`` pixels.

    The pixmap covers ``page.rect`` (the crop box, rotated for display). Scale pixels to points with
    the pixmap's actual size (pymupdf rounds it), undo the rotation with ``derotation_matrix`` (which
    yields coordinates relative to the crop box's top-left), then shift by the crop box's origin.
    """
    rect = page.rect
    scale: Matrix6 = (rect.width / pixel_width, 0.0, 0.0, rect.height / pixel_height, 0.0, 0.0)
    d = page.derotation_matrix
    derotate: Matrix6 = (d.a, d.b, d.c, d.d, d.e, d.f)
    crop = page.cropbox
    shift: Matrix6 = (1.0, 0.0, 0.0, 1.0, crop.x0, crop.y0)
    return PdfPageGeometry(
        pixel_to_pt=_mul(_mul(scale, derotate), shift),
        mediabox_top=float(page.mediabox.y1),
        rotation=int(page.rotation),
        visible_size_pt=(float(rect.width), float(rect.height)),
    )


# --------------------------------------------------------------------------------------------
# Documents and their pages
# --------------------------------------------------------------------------------------------


@dataclass
class PageImage:
    """One page ready for the model (or the reason it could not be produced)."""

    index: int  # 0-based page number in the document
    image: Image.Image | None
    dpi: float | None = None
    geometry: PdfPageGeometry | None = None
    error: str | None = None
    # With InputDocument.raw_pixels, PDF pages come as (mode, (width, height), pymupdf Pixmap) here
    # instead of ``image``: the batch runner's renderer process copies the samples straight into
    # shared memory, skipping two full-page copies through Pillow.
    raw: tuple[str, tuple[int, int], object] | None = None
    # A page that rendered, but with MuPDF reporting damage (a broken content stream, a missing
    # resource): its pixels are OCR'd as far as they go and the page is reported, never silently blank.
    warning: str | None = None
    # With text_mode "skip-text": a page whose own text covers it comes as its finished document page
    # here (words from the PDF, see varco_ocr.pdf_text) instead of pixels for the model.
    text_page: Page | None = None
    # (width, height) in pixels of a page that failed (``image`` None), when the file tells it (a PDF
    # page's rect at the dpi, an image's header): a failed page keeps its real size in the outputs.
    size: tuple[int, int] | None = None

    def bbox_pt(self, bbox: BBox) -> BBoxPt | None:
        return None if self.geometry is None else self.geometry.bbox_pt(bbox)


@dataclass
class InputDocument:
    """An opened input file. ``page_indices`` are the pages that will be produced; ``iter_pages``
    produces them one at a time. Use as a context manager (or call ``close``)."""

    path: Path
    kind: str  # "pdf" | "tiff" | "image"
    page_count: int
    page_indices: list[int]
    dpi: float | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    raw_pixels: bool = False  # PDF pages as PageImage.raw (pixmaps) rather than PIL images
    text_mode: str = "force"  # varco_ocr.pdf_text.TEXT_MODES; "skip-text" yields text pages as such
    _pdf: object | None = field(default=None, repr=False)

    def iter_pages(self) -> Iterator[PageImage]:
        if self.kind == "pdf":
            yield from self._iter_pdf_pages()
        elif self.kind == "tiff":
            yield from self._iter_tiff_pages()
        else:
            yield self._image_page()

    def close(self) -> None:
        if self._pdf is not None:
            self._pdf.close()  # type: ignore[attr-defined]
            self._pdf = None

    def __enter__(self) -> "InputDocument":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- producers ------------------------------------------------------------------------

    def _image_page(self) -> PageImage:
        from varco_ocr.preprocessing import load_image

        try:
            image = load_image(self.path, max_pixels=self.max_pixels)
        except InputError as e:
            return PageImage(0, None, error=str(e), size=_header_size(self.path))
        return PageImage(0, image, dpi=image_dpi(image))

    def _iter_tiff_pages(self) -> Iterator[PageImage]:
        from varco_ocr.preprocessing import load_image

        # Frames are decoded one at a time; a damaged frame is reported as a page error and the
        # following frames are still tried (seek re-reads the frame directory from the file).
        with Image.open(self.path) as tiff:
            for i in self.page_indices:
                size = None
                try:
                    tiff.seek(i)
                    size = _frame_size(tiff)
                    tiff.load()
                    dpi = image_dpi(tiff)
                    # copy(): the frame must outlive the open file, and conversion may return it as is
                    image = load_image(tiff.copy(), max_pixels=self.max_pixels, name=f"page {i + 1}")
                except (OSError, ValueError, EOFError, InputError) as e:
                    yield PageImage(i, None, error=str(e) if isinstance(e, InputError) else f"page {i + 1}: {_reason(e)}", size=size)
                    continue
                yield PageImage(i, image, dpi=dpi)

    def _iter_pdf_pages(self) -> Iterator[PageImage]:
        import pymupdf

        from varco_ocr.preprocessing import check_pixel_limit

        doc = self._pdf
        assert doc is not None, "document is closed"
        dpi = self.dpi or DEFAULT_DPI
        for i in self.page_indices:
            pymupdf.TOOLS.mupdf_warnings(reset=True)  # start this page's damage report empty
            size = None
            try:
                page = doc.load_page(i)  # type: ignore[attr-defined]
                if self.text_mode == "skip-text":
                    from varco_ocr.pdf_text import page_has_text, pdf_text_page

                    if page_has_text(page):
                        yield PageImage(i, None, dpi=dpi, text_page=pdf_text_page(page, i, dpi))
                        continue
                rect = page.rect
                zoom = dpi / 72.0  # a matrix, not dpi=, so fractional resolutions work too
                # the pixmap's size, known before rendering (MuPDF rounds the scaled rect the same way)
                pixels = (rect * pymupdf.Matrix(zoom, zoom)).irect
                size = (pixels.width, pixels.height) if pixels.width > 0 and pixels.height > 0 else None
                check_pixel_limit(
                    int(rect.width * dpi / 72), int(rect.height * dpi / 72), self.max_pixels, f"page {i + 1}"
                )
                pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), colorspace=pymupdf.csRGB, alpha=False)
                geometry = pdf_page_geometry(page, pix.width, pix.height)
                if self.raw_pixels:
                    image, raw = None, ("RGB", (pix.width, pix.height), pix)
                else:
                    # samples_mv: the pixmap's own memory, copied once into the image (samples would copy it twice)
                    image, raw = Image.frombytes("RGB", (pix.width, pix.height), pix.samples_mv), None
                del pix
                # MuPDF caches decoded resources (a scan's page image) in a store of up to 256 MB;
                # a scanned page's image is never needed again, so empty it to keep memory flat.
                pymupdf.TOOLS.store_shrink(100)
            except Exception as e:  # noqa: BLE001 - MuPDF raises plain RuntimeError/ValueError for damaged pages
                reason = str(e) if isinstance(e, InputError) else f"page {i + 1}: {_reason(e)}"
                yield PageImage(i, None, dpi=dpi, error=reason, size=size)
                continue
            yield PageImage(i, image, dpi=dpi, geometry=geometry, raw=raw, warning=_damage_report(i, pymupdf.TOOLS.mupdf_warnings(reset=True)))


def _damage_report(index: int, mupdf_warnings: str) -> str | None:
    """One line for a page MuPDF warned about while rendering, or None for a clean page."""
    lines = [line.strip() for line in mupdf_warnings.splitlines() if line.strip()]
    if not lines:
        return None
    more = f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""
    return f"page {index + 1}: damaged, read as far as it renders: {lines[0]}{more}"


def _frame_size(image: Image.Image) -> tuple[int, int] | None:
    width, height = image.size
    return (width, height) if width > 0 and height > 0 else None


def _header_size(path: Path) -> tuple[int, int] | None:
    """An image's size from its header alone (no decoding), or None when even that is unreadable."""
    try:
        with Image.open(path) as im:
            size = _frame_size(im)
            if size and im.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF turns it a quarter: as load_image does
                size = (size[1], size[0])
            return size
    except Exception:  # noqa: BLE001 - Pillow raises many kinds for broken files; unknown is the answer
        return None


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def image_dpi(image: Image.Image) -> float | None:
    """Scan resolution recorded in the file, if any and plausible (many files carry 1 or 72 by default)."""
    dpi = image.info.get("dpi")
    try:
        x = float(dpi[0]) if dpi else 0.0
    except (TypeError, ValueError, IndexError):
        return None
    return x if x >= 50 else None


def open_document(
    path: Path,
    pages: PageRanges | None = None,
    dpi: float = DEFAULT_DPI,
    password: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> InputDocument:
    """Open ``path`` and decide which pages it will produce. Raises InputError (one line naming the
    file) for missing, unsupported, encrypted, corrupt or empty documents, or an empty --pages choice."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES or looks_like_pdf(path):
        doc = _open_pdf(path, pages, dpi, password)
        doc.max_pixels = max_pixels
        return doc
    if suffix in TIFF_SUFFIXES:
        try:
            with Image.open(path) as im:
                count = getattr(im, "n_frames", 1)
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: not a readable TIFF ({_reason(e)})") from None
        return InputDocument(path, "tiff", count, _select(path, pages, count), max_pixels=max_pixels)
    if suffix in IMAGE_SUFFIXES:
        return InputDocument(path, "image", 1, _select(path, pages, 1) if pages else [0], max_pixels=max_pixels)
    raise InputError(f"{path}: unsupported file type {suffix or '(none)'} (expected a PDF, TIFF or image)")


def looks_like_pdf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(5) == b"%PDF-"
    except OSError:
        return False


def _select(path: Path, pages: PageRanges | None, count: int) -> list[int]:
    if pages is None:
        return list(range(count))
    chosen = pages.indices(count)
    if not chosen:
        raise InputError(f"{path}: --pages {pages} selects no page (the document has {count})")
    return chosen


def _open_pdf(path: Path, pages: PageRanges | None, dpi: float, password: str | None) -> InputDocument:
    import pymupdf

    try:
        doc = pymupdf.open(path, filetype="pdf")
    except Exception as e:  # noqa: BLE001 - pymupdf raises FileDataError/RuntimeError for broken files
        raise InputError(f"{path}: not a readable PDF ({_reason(e)})") from None
    try:
        if doc.needs_pass:
            if not password:
                raise InputError(f"{path}: the PDF is encrypted; give its password with --password")
            if not doc.authenticate(password):
                raise InputError(f"{path}: wrong --password for this encrypted PDF")
        count = doc.page_count
        if count == 0:
            raise InputError(f"{path}: the PDF has no pages")
        return InputDocument(path, "pdf", count, _select(path, pages, count), dpi=dpi, _pdf=doc)
    except BaseException:
        doc.close()
        raise


def selected_pages(path: Path, pages: PageRanges | None = None, password: str | None = None) -> list[int]:
    """The 0-based pages a document will produce (for progress totals and output names); none when
    it cannot be opened."""
    try:
        with open_document(path, pages, password=password) as doc:
            return list(doc.page_indices)
    except InputError:
        return []


def count_pages(path: Path, pages: PageRanges | None = None, password: str | None = None) -> int:
    """How many pages a document will produce (for progress totals); 0 when it cannot be opened."""
    return len(selected_pages(path, pages, password))


def attach_pdf_points(page: Page, geometry: PdfPageGeometry | None) -> Page:
    """``page`` with every word's ``bbox_pt`` filled in from the PDF page geometry (pure)."""
    if geometry is None:
        return page
    from dataclasses import replace

    blocks = tuple(
        replace(
            block,
            lines=tuple(
                replace(line, words=tuple(replace(w, bbox_pt=geometry.bbox_pt(w.bbox)) for w in line.words))
                for line in block.lines
            ),
        )
        for block in page.blocks
    )
    return replace(page, blocks=blocks)
