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
