"""Truncation recovery (``--split-truncated``): read a page again as overlapping horizontal bands.

A dense page can need more answer tokens than the budget (or the model can fall into a loop): its
answer stops part-way down, the page is flagged ``truncated``. Cutting the page into full-width
horizontal bands gives each band its own budget; the model also sees each band at a higher
resolution (a wide, short image gets more tiles per text line).

Bands overlap so that a text line cut by one band's edge lies whole inside its neighbour (true for
every line no taller than the overlap). The merge keeps, for every place on the page, the reading
made furthest from a cut: words are taken in order of their distance to their band's interior cut
edges (page edges are not cuts), and a word is dropped when it covers the same place as a word
already kept (intersection over the smaller box of at least one half). A word seen whole in the
overlap of two bands is kept once; a word cut in half by a band edge loses against its whole
reading from the other band.

Planning and merging are pure; :func:`reread_in_bands` runs them around any OCR function, so the
local engine and the server backend share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from PIL import Image

from varco_ocr.document import Page, Word
from varco_ocr.layout import build_page

DEFAULT_MAX_BANDS = 8
MIN_OVERLAP = 64  # pixels: a line of body text at 300 dpi is 35-50 px tall
OVERLAP_FRACTION = 0.06  # of the page height: headings scale with the page
DUPLICATE_COVER = 0.5  # intersection / smaller area at which two words are one


@dataclass(frozen=True)
class Band:
    top: int  # first row, in page pixels
    bottom: int  # one past the last row

    @property
    def height(self) -> int:
        return self.bottom - self.top


def default_overlap(height: int) -> int:
    return max(MIN_OVERLAP, round(OVERLAP_FRACTION * height))


def band_count(height: int, read_bottom: int, max_bands: int = DEFAULT_MAX_BANDS) -> int:
    """How many bands a truncated page needs: the answer covered the page down to ``read_bottom``
    (the lowest word read, in pixels) before it was cut, so each band should be at most that tall,
    with a quarter to spare. Nothing read at all (a loop from the start): the most bands."""
    if height <= 0 or read_bottom <= 0:
        return max_bands
    return max(2, min(max_bands, math.ceil(1.25 * height / read_bottom)))


def plan_bands(height: int, count: int, overlap: int) -> list[Band]:
    """``count`` bands covering rows 0..height, consecutive bands sharing ``overlap`` rows."""
    if count < 1 or height < 1:
        raise ValueError("a band plan needs a positive height and count")
    overlap = max(0, min(overlap, height // 2))
    count = min(count, max(1, height - overlap))  # every band must advance by at least a row
    if count == 1:
        return [Band(0, height)]
    stride = (height - overlap) / count
    bands = [Band(round(k * stride), round(k * stride + stride + overlap)) for k in range(count)]
    return [Band(b.top, min(b.bottom, height)) for b in bands[:-1]] + [Band(bands[-1].top, height)]


def to_page_coordinates(word: Word, band: Band) -> Word:
    x1, y1, x2, y2 = word.bbox
    return replace(word, bbox=(x1, y1 + band.top, x2, y2 + band.top))


def distance_to_cut(bbox: Sequence[int], band: Band, page_height: int) -> int:
    """Pixels between a box (page coordinates) and the nearest edge of its band that is a cut
    through the page; a band's edges at the page's top and bottom are not cuts."""
    gaps = []
    if band.top > 0:
        gaps.append(bbox[1] - band.top)
    if band.bottom < page_height:
        gaps.append(band.bottom - bbox[3])
    return min(gaps) if gaps else page_height


def _covered(a: Sequence[int], b: Sequence[int]) -> float:
    """Intersection area over the smaller box's area (1.0 when one box holds the other)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return (w * h) / smaller if smaller > 0 else 0.0


def merge_band_words(bands: Sequence[Band], words_per_band: Sequence[Sequence[Word]], page_height: int) -> list[Word]:
    """Words of every band (band coordinates) -> one list in page coordinates, each place once."""
    candidates = []
    for order, (band, words) in enumerate(zip(bands, words_per_band)):
        for position, word in enumerate(words):
            moved = to_page_coordinates(word, band)
            candidates.append((-distance_to_cut(moved.bbox, band, page_height), order, position, moved))
    candidates.sort(key=lambda c: c[:3])
    kept: list[Word] = []
    for *_, word in candidates:
        if all(_covered(word.bbox, other.bbox) < DUPLICATE_COVER for other in kept):
            kept.append(word)
    return kept


# What a band reader returns for each band: its words in band pixels, whether that answer was cut
# short, and how many boxes the parser dropped as lying wholly outside the band (engine.read_words).
BandReading = tuple[list[Word], bool, int]


def reread_in_bands(
    image: Image.Image,
    page: Page,
    ocr_images: Callable[[list[Image.Image]], list[BandReading]],
    *,
    max_bands: int = DEFAULT_MAX_BANDS,
    overlap: int | None = None,
) -> Page:
    """Read a truncated ``page`` of ``image`` (the original page) again as bands.

    ``ocr_images`` OCRs band images and returns, per band, a :data:`BandReading`. The page stays
    ``truncated`` if any band's answer was; its ``dropped_boxes`` is the sum over the bands (the
    first reading is replaced, so its own count is too).
    """
    width, height = image.size
    read_bottom = max((w.bbox[3] for w in page.words), default=0)
    bands = plan_bands(height, band_count(height, read_bottom, max_bands), default_overlap(height) if overlap is None else overlap)
    results = ocr_images([image.crop((0, b.top, width, b.bottom)) for b in bands])
    words = merge_band_words(bands, [r[0] for r in results], height)
    return build_page(words, index=page.index, width=page.width, height=page.height,
                      truncated=any(r[1] for r in results), raw=page.raw, dpi=page.dpi,
                      dropped_boxes=sum(r[2] for r in results))
