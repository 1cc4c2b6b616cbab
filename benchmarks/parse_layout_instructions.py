"""Instructions (not seconds) that parse + layout of one page execute, 5k vs 50k words (issue 12 item 14).

    python benchmarks/parse_layout_instructions.py [--sizes 5000,50000] [--layouts grid,columns] [--cache-sim]

Times on a shared machine mix the work with waiting, frequency changes and other jobs' cache use;
an instruction count does not. Each measurement runs this script under ``valgrind --tool=callgrind``
twice with ``PYTHONHASHSEED=0``: once only building the page's answer (the setup: the same words
and answer as ``parse_layout_speed.py``), once building it and then parsing it and laying out the
page. The difference of the two totals (Ir, instructions executed) is the parse + layout work;
linear work gives a 50k/5k ratio of 10x (sorts: a little more). ``--cache-sim`` also counts
first-level and last-level data-cache read misses (D1mr, DLmr) of the work, which show what makes
the larger page slower per word when its instruction count per word is unchanged; callgrind
simulates two levels, the last one as the host's last-level cache unless ``--ll SIZE,ASSOC,LINE``
says otherwise (e.g. ``--ll 4194304,16,64`` for a 4 MiB per-core L2, when the L3 is large and shared
by other jobs). The digest of the reading order is printed from the measured run (as
``parse_layout_speed.py`` prints it).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
EVENTS = ("Ir", "D1mr", "DLmr")


def _child(layout: str, n: int, work: bool) -> None:
    sys.path.insert(0, str(HERE))
    from parse_layout_speed import answer_for, digest, page_words

    from varco_ocr.document import Word
    from varco_ocr.layout import build_page
    from varco_ocr.parsing import parse_ocr_answer, to_pixels

    words, width, height = page_words(layout, n)
    answer = answer_for(words, width, height)
    if work:
        parsed = parse_ocr_answer(answer)
        page = build_page([Word(w.text, to_pixels(w.box, width, height)) for w in parsed.words], index=0, width=width, height=height)
        assert len(page.words) == n
        print(digest(page))


def _callgrind(layout: str, n: int, work: bool, cache_sim: bool, ll: str | None = None) -> tuple[dict[str, int], str]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", f"--cache-sim={'yes' if cache_sim else 'no'}",
               *([f"--LL={ll}"] if ll else []), sys.executable, __file__, "--child", layout, str(n), "work" if work else "setup"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"}, check=True)
        text = out.read_text()
    events = re.search(r"^events: (.+)$", text, re.M).group(1).split()  # type: ignore[union-attr]
    totals = re.search(r"^(?:summary|totals): (.+)$", text, re.M).group(1).split()  # type: ignore[union-attr]
    return {e: int(v) for e, v in zip(events, totals) if e in EVENTS}, proc.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="5000,50000")
    ap.add_argument("--layouts", default="grid,columns")
    ap.add_argument("--cache-sim", action="store_true")
    ap.add_argument("--ll", help="simulated last-level cache for --cache-sim: SIZE,ASSOC,LINE (bytes)")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        layout, n, mode = args.child
        _child(layout, int(n), mode == "work")
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'layout':8} {'words':>7} {'work Ir':>15} {'Ir/word':>8} " + (f"{'D1mr':>12} {'DLmr':>10} " if args.cache_sim else "") + "digest")
    for layout in args.layouts.split(","):
        work: dict[int, dict[str, int]] = {}
        for n in sizes:
            setup, _ = _callgrind(layout, n, False, args.cache_sim, args.ll)
            total, dig = _callgrind(layout, n, True, args.cache_sim, args.ll)
            work[n] = {e: total[e] - setup.get(e, 0) for e in total}
            misses = f"{work[n]['D1mr']:>12,} {work[n]['DLmr']:>10,} " if args.cache_sim else ""
            print(f"{layout:8} {n:>7} {work[n]['Ir']:>15,} {work[n]['Ir'] / n:>8.0f} {misses}{dig}", flush=True)
        if len(sizes) >= 2:
            small, large = sizes[0], sizes[-1]
            ratios = ", ".join(f"{e} {work[large][e] / work[small][e]:.2f}x" for e in EVENTS if e in work[large] and work[small].get(e))
            print(f"{layout:8} ratio {large // 1000}k/{small // 1000}k: {ratios}")


if __name__ == "__main__":
    main()
