"""Per-document export cost of each format for a one-page PNG document (issue 17 item 2).

The page is client_floor.py's: an A4 text page scanned at 200 dpi (RGB PNG) with the instant server's
400-entry answer parsed into a Document, as the batch runner holds it. Each format is written with
``write_exports`` ``--repeat`` times warm (after one untimed round); printed: ms per document per
format, all five together and their ratio to JSON alone. ``--profile pdf`` prints a cProfile of that
format's export instead.

    python benchmarks/export_formats.py [--repeat 20] [--profile pdf]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

FORMATS = ("json", "txt", "hocr", "alto", "pdf")


def make_document(folder: Path):
    from client_floor import answer_tokens, make_inputs

    from varco_ocr.document import Document
    from varco_ocr.engine import Generation, page_from_generation

    _, png_dir, _ = make_inputs(folder, 1)
    png = next(png_dir.glob("*.png"))
    from PIL import Image

    with Image.open(png) as im:
        w, h = im.size
    gen = Generation(text="".join(answer_tokens("scan-001")), hit_token_limit=False, looped=False)
    page = page_from_generation(gen, width=w, height=h, index=0, dpi=200.0)
    return Document(source=str(png), pages=(page,), model="NCSOFT/VARCO-VISION-2.0-1.7B-OCR",
                    metadata={"source_path": str(png)}), png


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--profile", choices=FORMATS)
    args = ap.parse_args()

    from varco_ocr.exporters import write_exports

    folder = Path(tempfile.mkdtemp(prefix="export-formats-"))
    document, png = make_document(folder)
    out = folder / "out"
    out.mkdir()
    print(f"one page {document.pages[0].width}x{document.pages[0].height}, {len(document.words)} words")

    def export(fmt: str) -> None:
        write_exports(document, out, (fmt,), stem=Path("scan-001"), source=png)

    for fmt in FORMATS:
        export(fmt)  # warm: imports, caches
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.repeat):
            export(args.profile)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
        return
    ms = {}
    for fmt in FORMATS:
        t = time.process_time()
        for _ in range(args.repeat):
            export(fmt)
        ms[fmt] = (time.process_time() - t) / args.repeat * 1000
    print("| format | " + " | ".join(FORMATS) + " | all five | all / json |")
    print("| --- | " + " | ".join("---:" for _ in FORMATS) + " | ---: | ---: |")
    total = sum(ms.values())
    print("| CPU ms per document | " + " | ".join(f"{ms[f]:.1f}" for f in FORMATS) + f" | {total:.1f} | {total / ms['json']:.2f}x |")


if __name__ == "__main__":
    main()
