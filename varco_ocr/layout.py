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
from math import ceil, floor
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


def _span_overlap(a1: int, a2: int, b1: int, b2: int) -> float:
    """Shared height of the vertical spans [a1, a2] and [b1, b2] over the smaller height (0..1). A
    word of zero height (``y1 == y2``, a box the model drew flat) has no height to share: it counts
    as wholly overlapping a span that holds its y (edges included), so flat words on one baseline,
    or on a line's words, join that line instead of each starting a line of its own."""
    if a1 == a2 or b1 == b2:
        return 1.0 if a1 <= b2 and b1 <= a2 else 0.0
    # (min(a2, b2) - max(a1, b1)) / min(max(1, a2 - a1), max(1, b2 - b1)), without the builtin
    # calls: this runs a few times per word of every page.
    ha, hb = a2 - a1, b2 - b1
    ha, hb = (ha if ha > 1 else 1), (hb if hb > 1 else 1)
    return ((a2 if a2 < b2 else b2) - (a1 if a1 > b1 else b1)) / (ha if ha < hb else hb)


def _vertical_overlap(a: Word, b: Word) -> float:
    return _span_overlap(a.bbox[1], a.bbox[3], b.bbox[1], b.bbox[3])


def group_lines(words: Iterable[Word]) -> list[Line]:
    """Cluster words into lines (words left to right), lines sorted top to bottom.

    Words are taken left to right; each joins the line whose last word it overlaps most vertically
    (at least LINE_OVERLAP; on a tie the line started last), else starts a line.

    Only lines whose last word's span meets the word's span can reach LINE_OVERLAP (> 0), so only
    those are compared: lines are filed by the height class of their last word (``h.bit_length()``,
    heights within a factor of two; 0 for flat words) and, within a class, in cells of ``2 ** class``
    pixels by that word's top. A last word of class k is under 2**k tall, so it meets the span
    [top, bottom] only if its top lies in (top - 2**k, bottom]: a few cells per class (floor and
    ceil keep this true for float coordinates). A page of n words costs about n log n, not n times
    its number of lines."""
    words = list(words)
    # Left to right: (x1, y1), ties in input order (a stable sort). The loop reads the tops and
    # bottoms from two lists in that order rather than chasing Word -> bbox objects spread over the
    # heap: on a 50k-word page those cache misses cost as much as the clustering itself.
    boxes = [w.bbox for w in words]
    order = sorted(range(len(boxes)), key=lambda i: (boxes[i][0], boxes[i][1]))
    tops = [boxes[i][1] for i in order]
    bottoms = [boxes[i][3] for i in order]
    lines: list[list[int]] = []  # word numbers of each line
    # class -> cell -> {line number (creation order): (top, bottom) of the line's last word}
    classes: dict[int, dict[int, dict[int, tuple[int, int]]]] = {}
    filed: list[tuple[int, int]] = []  # per line: (class, cell) where it is filed
    for w, top, bottom in zip(order, tops, bottoms):
        best, best_overlap = -1, LINE_OVERLAP
        for k, cells in classes.items():
            first, last = (floor(top) - (1 << k)) >> k, floor(bottom) >> k
            if last - first >= len(cells):  # a tall word over few filed cells: scan those
                found = [m for cell, m in cells.items() if first <= cell <= last]
            else:
                found = [m for m in map(cells.get, range(first, last + 1)) if m]
            for members in found:
                for line_no, (a1, a2) in members.items():
                    overlap = _span_overlap(a1, a2, top, bottom)
                    if overlap > best_overlap or (overlap == best_overlap and line_no > best):
                        best, best_overlap = line_no, overlap
        k = ceil(bottom - top).bit_length()
        cell = floor(top) >> k
        if best < 0:
            best = len(lines)
            lines.append([w])
            filed.append((k, cell))
        else:
            lines[best].append(w)
            old = filed[best]
            if old != (k, cell):  # the line's last word moves to another cell
                members = classes[old[0]][old[1]]
                del members[best]
                if not members:
                    del classes[old[0]][old[1]]
                filed[best] = (k, cell)
        classes.setdefault(k, {}).setdefault(cell, {})[best] = (top, bottom)

    def centre_y(line: list[int]) -> float:
        return statistics.fmean((boxes[i][1] + boxes[i][3]) / 2 for i in line)

    lines.sort(key=lambda line: (centre_y(line), boxes[line[0]][0]))
    return [Line(tuple(words[i] for i in line)) for line in lines]


def _gaps(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Blank stretches between the union of ``intervals`` (start, end), in order."""
    gaps = []
    intervals = sorted(intervals)
    reach = intervals[0][1]
    for start, end in intervals[1:]:
        if start > reach:
            gaps.append((reach, start))
        if end > reach:
            reach = end
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
