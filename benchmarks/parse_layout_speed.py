"""Parse + layout time of one page of n words: how the pure steps scale (issue 12, item 14).

    python benchmarks/parse_layout_speed.py [--sizes 1000,5000,10000,50000] [--layouts grid,columns]
                                            [--repeat 1] [--skip-after 600]

For each layout and size it writes the answer the model would give for the page (entries in reading
order, coordinates with six decimals so that even 50,000 words keep distinct boxes), then times
``parse_ocr_answer`` and the layout (``to_pixels`` + ``layout.build_page``) separately, and prints the
ratio of the 50k time to the 5k time per layout (linear scaling: 10x; the goal is at most 12x).

- ``grid``: one block of dense text, 40 words a line, lines 30 px apart (every word of a line
  overlaps its neighbours; no blank gap or gutter anywhere, so the page is one band and one block).
- ``columns``: a two-column article, 8 words a line per column, a 100 px gutter: the X-Y cut splits
  it into two columns, each read as one block.

Only the public functions that existed before the item-14 rewrite are used, so the same script
measures old code too (``PYTHONPATH=<old checkout> python benchmarks/parse_layout_speed.py``). The
Times are CPU seconds of this process (``time.process_time``), the best of ``--repeat`` runs: on
a machine shared with other jobs, wall time mostly measures waiting for a core. The
``digest`` column hashes the page's reading order (word texts in order, line and block breaks): equal
digests mean old and new code produced the same page. ``--skip-after S`` skips the larger sizes of a
layout once one size took more than S seconds (for the quadratic old code).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time

from varco_ocr.document import Word
from varco_ocr.layout import build_page
from varco_ocr.parsing import parse_ocr_answer, to_pixels

WORD_HEIGHT = 20
LINE_PITCH = 30
WORD_GAP = 12


def page_words(layout: str, n: int, seed: int = 0) -> tuple[list[tuple[str, tuple[int, int, int, int]]], int, int]:
    """``n`` words (text, pixel box) in reading order and the page size, for a layout."""
    rnd = random.Random(seed)
    per_line = 40 if layout == "grid" else 8
    columns = 1 if layout == "grid" else 2
    column_width = per_line * (60 + WORD_GAP)
    gutter = 100
    lines_per_column = -(-n // (per_line * columns))
    words = []
    for i in range(n):
        column, rest = divmod(i, lines_per_column * per_line)
        line, k = divmod(rest, per_line)
        x = column * (column_width + gutter) + k * (60 + WORD_GAP) + rnd.randint(0, 4)
        y = line * LINE_PITCH + rnd.randint(-3, 3) + 10
        width = rnd.randint(30, 60)
        words.append((f"w{i}", (x, y, x + width, y + WORD_HEIGHT)))
    page_width = columns * column_width + (columns - 1) * gutter + 20
    page_height = lines_per_column * LINE_PITCH + 40
    return words, page_width, page_height


def answer_for(words, width: int, height: int) -> str:
    return "\n".join(
        f"<char>{text}</char><bbox>{x1 / width:.6f}, {y1 / height:.6f}, {x2 / width:.6f}, {y2 / height:.6f}</bbox>"
        for text, (x1, y1, x2, y2) in words
    )


def digest(page) -> str:
    order = "\n\n".join("\n".join(" ".join(w.text for w in line.words) for line in block.lines) for block in page.blocks)
    return hashlib.sha1(order.encode()).hexdigest()[:10]


def measure(layout: str, n: int, repeat: int) -> tuple[float, float, int, int, str]:
    words, width, height = page_words(layout, n)
    answer = answer_for(words, width, height)
    best_parse = best_layout = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        parsed = parse_ocr_answer(answer)
        t1 = time.process_time()
        page = build_page([Word(w.text, to_pixels(w.box, width, height)) for w in parsed.words], index=0, width=width, height=height)
        t2 = time.process_time()
        best_parse, best_layout = min(best_parse, t1 - t0), min(best_layout, t2 - t1)
    assert len(page.words) == n, (len(page.words), n)
    return best_parse, best_layout, len(page.lines), len(page.blocks), digest(page)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,5000,10000,50000")
    ap.add_argument("--layouts", default="grid,columns")
    ap.add_argument("--repeat", type=int, default=1, help="runs per size; the best is reported")
    ap.add_argument("--skip-after", type=float, default=float("inf"), help="seconds; skip larger sizes after a slower one")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'layout':8} {'words':>7} {'parse s':>9} {'layout s':>9} {'total s':>9} {'lines':>6} {'blocks':>6}  digest   (CPU s)")
    for layout in args.layouts.split(","):
        totals: dict[int, float] = {}
        for n in sizes:
            if totals and max(totals.values()) > args.skip_after:
                print(f"{layout:8} {n:>7}   skipped (a smaller size took over {args.skip_after:g} s)")
                continue
            parse_s, layout_s, lines, blocks, dig = measure(layout, n, args.repeat)
            totals[n] = parse_s + layout_s
            print(f"{layout:8} {n:>7} {parse_s:>9.3f} {layout_s:>9.3f} {totals[n]:>9.3f} {lines:>6} {blocks:>6}  {dig}", flush=True)
        if 5000 in totals and 50000 in totals:
            print(f"{layout:8} ratio 50k/5k: {totals[50000] / totals[5000]:.1f}x (goal <= 12x)")


if __name__ == "__main__":
    main()
