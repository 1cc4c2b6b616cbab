"""Reading order: words -> lines -> blocks. Pure functions on pixel boxes.

The model lists words roughly in reading order but not reliably (columns, tables and loops confuse
it), so the order is rebuilt from geometry, as VARCO's own OCR targets were: words clustered into lines
by their y coordinate, lines top to bottom, words left to right. On top of that, blocks:

1. the page is cut into horizontal bands at blank vertical gaps taller than a line (paragraphs, regions);
2. a band is cut into columns at a clear vertical gutter only when both sides look like text columns
   (each at least a quarter of the band wide and at least two lines tall), so a two-column article
   reads column by column while a receipt's item/price rows stay whole lines;
3. each part is cut again recursively (an X-Y cut), and what can no longer be cut is one block.

Line clustering compares a word with the *rightmost word so far* of each candidate line, not with the
line's mean height, so a slightly slanted line (a photographed receipt) stays one line.
"""

from __future__ import annotations

import statistics
from typing import Iterable, Sequence

from varco_ocr.document import Block, Line, Page, Word

# A word joins a line when it overlaps the line's last word vertically by at least this fraction of the
# smaller of the two heights.
LINE_OVERLAP = 0.5
# A blank vertical gap at least this many median word heights starts a new block.
BLOCK_GAP = 1.0
# A vertical gutter at least this many median word heights wide may separate columns...
COLUMN_GUTTER = 1.5
# ...when each side is at least this fraction of the band's width and holds at least COLUMN_MIN_LINES lines.
COLUMN_MIN_WIDTH = 0.25
COLUMN_MIN_LINES = 2


def _height(w: Word) -> int:
    return max(1, w.bbox[3] - w.bbox[1])


def _vertical_overlap(a: Word, b: Word) -> float:
    inter = min(a.bbox[3], b.bbox[3]) - max(a.bbox[1], b.bbox[1])
    return inter / min(_height(a), _height(b))


def group_lines(words: Iterable[Word]) -> list[Line]:
    """Cluster words into lines (words left to right), lines sorted top to bottom."""
    lines: list[list[Word]] = []
    for w in sorted(words, key=lambda w: (w.bbox[0], w.bbox[1])):
        best, best_overlap = None, LINE_OVERLAP
        for line in lines:
            overlap = _vertical_overlap(line[-1], w)
            if overlap >= best_overlap:
                best, best_overlap = line, overlap
        if best is None:
            lines.append([w])
        else:
            best.append(w)

    def centre_y(line: list[Word]) -> float:
        return statistics.fmean((w.bbox[1] + w.bbox[3]) / 2 for w in line)

    lines.sort(key=lambda line: (centre_y(line), line[0].bbox[0]))
    return [Line(tuple(line)) for line in lines]


def _gaps(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Blank stretches between the union of ``intervals`` (start, end), in order."""
    gaps = []
    intervals = sorted(intervals)
    reach = intervals[0][1]
    for start, end in intervals[1:]:
        if start > reach:
            gaps.append((reach, start))
        reach = max(reach, end)
    return gaps


def _split_bands(words: list[Word], min_gap: float) -> list[list[Word]]:
    gaps = [g for g in _gaps([(w.bbox[1], w.bbox[3]) for w in words]) if g[1] - g[0] >= min_gap]
    if not gaps:
        return [words]
    cuts = [(a + b) / 2 for a, b in gaps]
    bands: list[list[Word]] = [[] for _ in range(len(cuts) + 1)]
    for w in words:
        centre = (w.bbox[1] + w.bbox[3]) / 2
        bands[sum(centre > c for c in cuts)].append(w)
    return [b for b in bands if b]


def _split_columns(words: list[Word], min_gutter: float) -> list[list[Word]]:
    x0 = min(w.bbox[0] for w in words)
    x1 = max(w.bbox[2] for w in words)
    band_width = max(1, x1 - x0)
    gutters = sorted(
        (g for g in _gaps([(w.bbox[0], w.bbox[2]) for w in words]) if g[1] - g[0] >= min_gutter),
        key=lambda g: g[0] - g[1],  # widest first
    )
    for a, b in gutters:
        cut = (a + b) / 2
        left = [w for w in words if (w.bbox[0] + w.bbox[2]) / 2 < cut]
        right = [w for w in words if (w.bbox[0] + w.bbox[2]) / 2 >= cut]
        if not left or not right:
            continue
        left_width = max(w.bbox[2] for w in left) - x0
        right_width = x1 - min(w.bbox[0] for w in right)
        if (
            left_width >= COLUMN_MIN_WIDTH * band_width
            and right_width >= COLUMN_MIN_WIDTH * band_width
            and len(group_lines(left)) >= COLUMN_MIN_LINES
            and len(group_lines(right)) >= COLUMN_MIN_LINES
        ):
            return [left, right]
    return [words]


def _xy_cut(words: list[Word], unit: float) -> list[Block]:
    blocks: list[Block] = []
    for band in _split_bands(words, BLOCK_GAP * unit):
        columns = _split_columns(band, COLUMN_GUTTER * unit)
        if len(columns) == 1:
            blocks.append(Block(tuple(group_lines(band))))
        else:
            # Each column may hold paragraphs (or columns) of its own: cut again.
            for part in columns:
                blocks.extend(_xy_cut(part, unit))
    return blocks


def order_words(words: Sequence[Word]) -> tuple[Block, ...]:
    """Group ``words`` into blocks of lines in reading order."""
    words = [w for w in words if w.text]
    if not words:
        return ()
    unit = statistics.median(_height(w) for w in words)
    return tuple(_xy_cut(words, unit))


def build_page(
    words: Sequence[Word],
    *,
    index: int,
    width: int,
    height: int,
    truncated: bool = False,
    raw: str | None = None,
    dpi: float | None = None,
    error: str | None = None,
) -> Page:
    """A Page whose words (pixel boxes of the original page) are put in reading order."""
    return Page(
        index=index,
        width=width,
        height=height,
        blocks=order_words(words),
        truncated=truncated,
        raw=raw,
        dpi=dpi,
        error=error,
    )
