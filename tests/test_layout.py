import random

from varco_ocr.document import Word
from varco_ocr.layout import build_page, group_lines, order_words


def W(text, x1, y1, x2, y2):
    return Word(text, (x1, y1, x2, y2))


def texts(blocks):
    return [[line.text for line in block.lines] for block in blocks]


def shuffled(words, seed=0):
    words = list(words)
    random.Random(seed).shuffle(words)
    return words


def test_lines_top_to_bottom_words_left_to_right():
    words = [W("b", 200, 10, 260, 30), W("a", 10, 12, 90, 31), W("d", 120, 50, 200, 70), W("c", 10, 50, 100, 70)]
    assert texts(order_words(shuffled(words))) == [["a b", "c d"]]


def test_slanted_line_stays_one_line():
    # Each word 8 px lower than the previous: the line drops 56 px over its length, more than a word
    # height (30), but neighbours always overlap.
    top = [W(f"t{i}", i * 100, 100 + i * 8, i * 100 + 90, 130 + i * 8) for i in range(8)]
    bottom = [W(f"b{i}", i * 100, 150 + i * 8, i * 100 + 90, 180 + i * 8) for i in range(8)]
    lines = group_lines(shuffled(top + bottom))
    assert [line.text for line in lines] == [" ".join(f"t{i}" for i in range(8)), " ".join(f"b{i}" for i in range(8))]


def test_two_column_page_reads_column_by_column():
    words = [W("Title", 100, 10, 300, 40)]
    for col, x0 in ((0, 50), (1, 550)):
        for li in range(3):
            for wi in range(3):
                words.append(W(f"c{col}l{li}w{wi}", x0 + wi * 120, 100 + li * 40, x0 + wi * 120 + 100, 130 + li * 40))
    blocks = order_words(shuffled(words))
    assert texts(blocks) == [
        ["Title"],
        [f"c0l{i}w0 c0l{i}w1 c0l{i}w2" for i in range(3)],
        [f"c1l{i}w0 c1l{i}w1 c1l{i}w2" for i in range(3)],
    ]


def test_receipt_prices_stay_on_their_rows():
    # A narrow price column far to the right is not a text column: rows stay whole.
    words = [
        W("Coffee", 10, 10, 200, 30), W("4.50", 900, 12, 980, 32),
        W("Tea", 10, 50, 100, 70), W("3.00", 900, 50, 980, 71),
        W("TOTAL", 10, 90, 150, 110), W("7.50", 900, 91, 980, 111),
    ]
    assert texts(order_words(shuffled(words))) == [["Coffee 4.50", "Tea 3.00", "TOTAL 7.50"]]


def test_blank_gap_separates_blocks():
    words = [W("one", 10, 10, 60, 30), W("two", 10, 40, 60, 60), W("far", 10, 200, 60, 220)]
    page = build_page(shuffled(words), index=0, width=100, height=300)
    assert texts(page.blocks) == [["one", "two"], ["far"]]
    assert page.text == "one\ntwo\n\nfar"
    assert [w.text for w in page.words] == ["one", "two", "far"]


def test_korean_words_join_with_single_spaces_never_inside():
    words = [W("서울특별시", 10, 10, 110, 30), W("마포구", 120, 10, 180, 30), W("백범로", 190, 11, 250, 31)]
    assert order_words(words)[0].lines[0].text == "서울특별시 마포구 백범로"


def test_empty_and_degenerate_input():
    assert order_words([]) == ()
    blocks = order_words([W("x", 5, 5, 5, 5), W("", 1, 1, 2, 2)])
    assert texts(blocks) == [["x"]]


def test_sample_receipt_ground_truth_reads_in_drawn_order(samples):
    import json

    meta = json.loads((samples / "receipt.words.json").read_text(encoding="utf-8"))
    words = [Word(w["text"], tuple(w["bbox"])) for w in meta["words"]]
    page = build_page(shuffled(words, 3), index=0, width=meta["width"], height=meta["height"])
    assert [w.text for w in page.words] == [w.text for w in words]


# -- the indexed line clustering gives what comparing with every line gave ---------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from varco_ocr import layout  # noqa: E402
from varco_ocr.document import Block, Line  # noqa: E402


def _reference_order_words(words):
    """Layout as it was before the line index: each word compared with every line so far, and each
    column candidate clustered in full. Kept only here, as the oracle for the randomized test."""
    import statistics

    def height(w):
        return max(1, w.bbox[3] - w.bbox[1])

    def overlap(a, b):
        return (min(a.bbox[3], b.bbox[3]) - max(a.bbox[1], b.bbox[1])) / min(height(a), height(b))

    def group(ws):
        lines = []
        for w in sorted(ws, key=lambda w: (w.bbox[0], w.bbox[1])):
            best, best_overlap = None, layout.LINE_OVERLAP
            for line in lines:
                o = overlap(line[-1], w)
                if o >= best_overlap:
                    best, best_overlap = line, o
            if best is None:
                lines.append([w])
            else:
                best.append(w)
        lines.sort(key=lambda line: (statistics.fmean((w.bbox[1] + w.bbox[3]) / 2 for w in line), line[0].bbox[0]))
        return [Line(tuple(line)) for line in lines]

    def bands(ws, min_gap):
        gaps = [g for g in layout._gaps([(w.bbox[1], w.bbox[3]) for w in ws]) if g[1] - g[0] >= min_gap]
        if not gaps:
            return [ws]
        cuts = [(a + b) / 2 for a, b in gaps]
        out = [[] for _ in range(len(cuts) + 1)]
        for w in ws:
            out[sum((w.bbox[1] + w.bbox[3]) / 2 > c for c in cuts)].append(w)
        return [b for b in out if b]

    def columns(ws, min_gutter):
        x0, x1 = min(w.bbox[0] for w in ws), max(w.bbox[2] for w in ws)
        band_width = max(1, x1 - x0)
        gutters = sorted((g for g in layout._gaps([(w.bbox[0], w.bbox[2]) for w in ws]) if g[1] - g[0] >= min_gutter),
                         key=lambda g: g[0] - g[1])
        for a, b in gutters:
            cut = (a + b) / 2
            left = [w for w in ws if (w.bbox[0] + w.bbox[2]) / 2 < cut]
            right = [w for w in ws if (w.bbox[0] + w.bbox[2]) / 2 >= cut]
            if not left or not right:
                continue
            if (max(w.bbox[2] for w in left) - x0 >= layout.COLUMN_MIN_WIDTH * band_width
                    and x1 - min(w.bbox[0] for w in right) >= layout.COLUMN_MIN_WIDTH * band_width
                    and len(group(left)) >= layout.COLUMN_MIN_LINES and len(group(right)) >= layout.COLUMN_MIN_LINES):
                return [left, right]
        return [ws]

    def xy_cut(ws, unit):
        blocks = []
        for band in bands(ws, layout.BLOCK_GAP * unit):
            cols = columns(band, layout.COLUMN_GUTTER * unit)
            if len(cols) == 1:
                blocks.append(Block(tuple(group(band))))
            else:
                for part in cols:
                    blocks.extend(xy_cut(part, unit))
        return blocks

    words = [w for w in words if w.text]
    if not words:
        return ()
    return tuple(xy_cut(words, statistics.median(height(w) for w in words)))


def _page_words(draw):
    """Pages that stress the clustering: rows and columns with jitter, slanted runs, tall and tiny
    words, exact ties (equal boxes, equal x), overlapping lines. No flat (zero-height) words: their
    policy changed on purpose (test_flat_words_on_one_baseline_form_one_line)."""
    kind = draw(st.sampled_from(["grid", "columns", "random", "ties", "floats"]))
    rnd = random.Random(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 120))
    words = []
    for i in range(n):
        if kind == "grid":
            row, col = divmod(i, rnd.randint(3, 12))
            x, y, h = col * rnd.randint(40, 90), row * rnd.randint(18, 40) + rnd.randint(-6, 6), rnd.randint(8, 30)
        elif kind == "columns":
            col = rnd.randint(0, 2)
            x, y, h = col * 400 + rnd.randint(0, 3) * 90, rnd.randint(0, 30) * 30 + rnd.randint(-4, 4), rnd.randint(10, 26)
        elif kind == "random":
            x, y, h = rnd.randint(0, 1000), rnd.randint(0, 1000), rnd.choice([1, 2, 5, 20, 60, 300])
        elif kind == "ties":
            x, y, h = rnd.choice([0, 10, 20]), rnd.choice([0, 5, 10, 15]), rnd.choice([1, 10, 20])
        else:  # not what the engine gives (integer pixels), but callers may pass float boxes
            x, y, h = rnd.uniform(0, 500), rnd.uniform(-50, 300), rnd.choice([0.5, 3.25, 17.7, 40.0])
        words.append(Word(f"w{i}", (x, y, x + rnd.randint(1, 80), y + h)))
    return words


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_indexed_layout_equals_the_quadratic_reference(data):
    words = _page_words(data.draw)
    assert order_words(words) == _reference_order_words(words)


def test_line_clustering_compares_only_nearby_lines(monkeypatch):
    # 60 rows of 40 words: each word has one line near it. Comparing every word with every line
    # so far (the old clustering) makes ~70,000 comparisons; the index makes a few per word (the lines whose cells its span reaches).
    calls = []
    real = layout._span_overlap
    monkeypatch.setattr(layout, "_span_overlap", lambda *spans: calls.append(1) or real(*spans))
    words = [W(f"r{r}c{c}", c * 50, r * 30, c * 50 + 40, r * 30 + 20) for r in range(60) for c in range(40)]
    lines = group_lines(shuffled(words))
    assert len(lines) == 60 and all(len(line.words) == 40 for line in lines)
    assert len(calls) <= 4 * len(words)


def test_flat_words_on_one_baseline_form_one_line():
    # Zero-height boxes (y1 == y2): on one baseline they are one line, and a flat word inside a
    # line's span joins that line; a flat word on another baseline is another line.
    words = [W("a", 10, 50, 40, 50), W("b", 50, 50, 80, 50), W("c", 90, 50, 120, 50),
             W("d", 10, 100, 40, 120), W("e", 50, 110, 80, 110), W("f", 10, 200, 40, 200)]
    assert [line.text for line in group_lines(shuffled(words))] == ["a b c", "d e", "f"]

def test_three_columns_try_the_widest_gutter_first():
    """A text column A beside a narrow quantity column B and a price column C (B and C are a table:
    each row reads quantity then price). The widest gutter (A | B, 170 px) is the column break; B is
    too narrow to be a column of its own, so B and C stay rows. Trying the narrowest gutter first
    (B | C, 30 px) would cut C off and pair A's lines with B's: A0, B0, A1, B1, ..., then C0..C4."""
    cols = {"A": (140, 410), "B": (580, 600), "C": (630, 890)}
    words = [Word(f"{name}{row}", (x0, 10 + 30 * row, x1, 30 + 30 * row)) for name, (x0, x1) in cols.items() for row in range(5)]
    page = build_page(words, index=0, width=1000, height=200)
    assert [w.text for w in page.words] == [f"A{r}" for r in range(5)] + [f"{c}{r}" for r in range(5) for c in "BC"]
    assert [[w.text for w in line.words] for line in page.blocks[1].lines] == [[f"B{r}", f"C{r}"] for r in range(5)]


# --- boundaries found by the mutation run (benchmarks/mutation.sh, RESULTS.md "Mutation testing") ---


def test_build_page_passes_every_field_through_and_defaults_to_a_clean_page():
    words = [W("a", 10, 10, 50, 30)]
    page = build_page(words, index=3, width=100, height=80, truncated=True, raw="r", dpi=150.0, error="e",
                      dropped_boxes=2)
    assert (page.index, page.width, page.height, page.truncated, page.raw, page.dpi, page.error,
            page.dropped_boxes) == (3, 100, 80, True, "r", 150.0, "e", 2)
    page = build_page(words, index=0, width=100, height=80)
    assert (page.truncated, page.raw, page.dpi, page.error, page.dropped_boxes) == (False, None, None, None, 0)


def test_span_overlap_exact_values():
    from varco_ocr.layout import _span_overlap

    assert _span_overlap(15, 15, 10, 20) == 1.0  # a flat word inside a span
    assert _span_overlap(5, 5, 10, 20) == 0.0  # a flat word above it
    assert _span_overlap(0, 10, 20, 20) == 0.0  # a flat word below a span
    assert _span_overlap(0, 10, 0, 2) == 1.0  # over the smaller height (2), not a floor of 1
    assert _span_overlap(0, 10, 5, 20) == 0.5


def test_one_pixel_tall_words_split_blocks_at_a_one_pixel_gap():
    # median height 1, so a blank gap of 1 px (BLOCK_GAP x 1) separates blocks
    words = [W("a", 0, 0, 10, 1), W("b", 0, 2, 10, 3)]
    assert texts(order_words(words)) == [["a"], ["b"]]


def test_a_column_exactly_a_quarter_of_the_band_wide_is_a_column():
    # band 0..400, quarter 100; lines 2 px apart (one band); gutter 100 px wide
    left_exact = [W("L0", 0, 0, 100, 10), W("L1", 0, 12, 100, 22),
                  W("R0", 200, 0, 400, 10), W("R1", 200, 12, 400, 22)]
    assert texts(order_words(left_exact)) == [["L0", "L1"], ["R0", "R1"]]
    right_exact = [W("L0", 0, 0, 200, 10), W("L1", 0, 12, 200, 22),
                   W("R0", 300, 0, 400, 10), W("R1", 300, 12, 400, 22)]
    assert texts(order_words(right_exact)) == [["L0", "L1"], ["R0", "R1"]]
    # just under a quarter: one block, read across
    narrow = [W("L0", 0, 0, 99, 10), W("L1", 0, 12, 99, 22),
              W("R0", 200, 0, 400, 10), W("R1", 200, 12, 400, 22)]
    assert texts(order_words(narrow)) == [["L0 R0", "L1 R1"]]
