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
from bisect import bisect_left
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
COLUMN_MIN_LINES = 2  # _two_lines_or_more counts exactly this many


def _height(w: Word) -> int:
    return max(1, w.bbox[3] - w.bbox[1])


def _vertical_overlap(a: Word, b: Word) -> float:
    """Shared height of two words over the smaller height (0..1). A word of zero height (``y1 == y2``,
    a box the model drew flat) has no height to share: it counts as wholly overlapping a word whose
    span holds its y (edges included), so flat words on one baseline, or on a line's words, join
    that line instead of each starting a line of its own."""
    a1, a2, b1, b2 = a.bbox[1], a.bbox[3], b.bbox[1], b.bbox[3]
    if a1 == a2 or b1 == b2:
        return 1.0 if a1 <= b2 and b1 <= a2 else 0.0
    return (min(a2, b2) - max(a1, b1)) / min(_height(a), _height(b))


class _LineIndex:
    """The lines built so far, findable by the vertical span of their last word.

    A word can only join a line whose last word's span meets its own (an overlap of at least
    LINE_OVERLAP > 0 needs a shared stretch, or a flat word inside the span). Lines are filed by the
    height class of their last word (``height.bit_length()``: heights within a factor of two) and,
    within a class, in cells of ``2 ** class`` pixels by the top of that word. A word's candidates in
    a class are then the cells from (its top - the class's largest height) to its bottom: a handful of
    cells per class and some twenty classes at most, instead of every line of the page."""

    def __init__(self) -> None:
        # class -> cell -> {line number: last word}; line numbers are creation order.
        self._classes: dict[int, dict[int, dict[int, Word]]] = {}
        self._sizes: dict[int, int] = {}
        self._where: dict[int, tuple[int, int]] = {}

    @staticmethod
    def _key(w: Word) -> tuple[int, int]:
        k = (w.bbox[3] - w.bbox[1]).bit_length()  # 0 for flat words, else heights in [2**(k-1), 2**k)
        return k, w.bbox[1] >> k

    def put(self, line_no: int, last: Word) -> None:
        old = self._where.pop(line_no, None)
        if old is not None:
            cells = self._classes[old[0]]
            del cells[old[1]][line_no]
            if not cells[old[1]]:
                del cells[old[1]]
            self._sizes[old[0]] -= 1
        k, cell = self._key(last)
        self._classes.setdefault(k, {}).setdefault(cell, {})[line_no] = last
        self._sizes[k] = self._sizes.get(k, 0) + 1
        self._where[line_no] = (k, cell)

    def candidates(self, w: Word) -> Iterable[tuple[int, Word]]:
        top, bottom = w.bbox[1], w.bbox[3]
        for k, cells in self._classes.items():
            # A last word of class k is at most 2**k - 1 tall: it meets [top, bottom] only if its
            # own top lies in [top - 2**k + 1, bottom].
            first, last = (top - (1 << k) + 1) >> k, bottom >> k
            if last - first + 1 > len(cells):  # a tall word over few cells: scan what there is
                for cell, members in cells.items():
                    if first <= cell <= last:
                        yield from members.items()
            else:
                for cell in range(first, last + 1):
                    members = cells.get(cell)
                    if members:
                        yield from members.items()


def group_lines(words: Iterable[Word]) -> list[Line]:
    """Cluster words into lines (words left to right), lines sorted top to bottom.

    Words are taken left to right; each joins the line whose last word it overlaps most vertically
    (at least LINE_OVERLAP; on a tie the line started last), else starts a line. Only lines whose
    last word meets the word's vertical span are compared (``_LineIndex``), so a page of n words
    costs about n log n, not n times the number of lines."""
    lines: list[list[Word]] = []
    index = _LineIndex()
    for w in sorted(words, key=lambda w: (w.bbox[0], w.bbox[1])):
        best, best_overlap = -1, LINE_OVERLAP
        for line_no, last in index.candidates(w):
            overlap = _vertical_overlap(last, w)
            if overlap > best_overlap or (overlap == best_overlap and line_no > best):
                best, best_overlap = line_no, overlap
        if best < 0:
            best = len(lines)
            lines.append([w])
        else:
            lines[best].append(w)
        index.put(best, w)

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
    cuts = [(a + b) / 2 for a, b in gaps]  # ascending: gaps come in order
    bands: list[list[Word]] = [[] for _ in range(len(cuts) + 1)]
    for w in words:
        # The band index is the number of cuts above the word's centre.
        bands[bisect_left(cuts, (w.bbox[1] + w.bbox[3]) / 2)].append(w)
    return [b for b in bands if b]


def _two_lines_or_more(ordered: list[Word]) -> bool:
    """``len(group_lines(words)) >= COLUMN_MIN_LINES`` (that is, 2) without clustering: for words
    already in group_lines' order (left to right), a second line starts exactly when a word fails to
    overlap the word before it, the last word of the only line so far. One scan, stopping early."""
    return any(_vertical_overlap(a, b) < LINE_OVERLAP for a, b in zip(ordered, ordered[1:]))


def _split_columns(words: list[Word], min_gutter: float) -> list[list[Word]]:
    x0 = min(w.bbox[0] for w in words)
    x1 = max(w.bbox[2] for w in words)
    band_width = max(1, x1 - x0)
    gutters = sorted(
        (g for g in _gaps([(w.bbox[0], w.bbox[2]) for w in words]) if g[1] - g[0] >= min_gutter),
        key=lambda g: g[0] - g[1],  # widest first
    )
    if not gutters:
        return [words]
    ordered = sorted(words, key=lambda w: (w.bbox[0], w.bbox[1]))  # group_lines' order, kept by the filters
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
            and _two_lines_or_more([w for w in ordered if (w.bbox[0] + w.bbox[2]) / 2 < cut])
            and _two_lines_or_more([w for w in ordered if (w.bbox[0] + w.bbox[2]) / 2 >= cut])
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
    dropped_boxes: int = 0,
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
        dropped_boxes=dropped_boxes,
    )
