"""Tesseract baseline: OCR a data set with Tesseract and write the project's document JSONL, so any
engine is scored by `varco-ocr eval` on the same footing as VARCO.

Needs the `tesseract` binary with the `kor` and `eng` traineddata (Debian: apt-get install
tesseract-ocr tesseract-ocr-kor tesseract-ocr-eng); it reads Tesseract's TSV output, so no Python
binding is needed. Words keep Tesseract's boxes (pixel LTRB of the original image) and its
block/paragraph/line structure; confidences are Tesseract's 0-100 mapped to 0-1.

    python benchmarks/eval_tesseract.py icdar2015 ../shared/data/icdar2015-test-sample out/tesseract-ic15.jsonl
    varco-ocr eval icdar2015 --data ../shared/data/icdar2015-test-sample --predictions out/tesseract-ic15.jsonl
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys
import time
from pathlib import Path

from varco_ocr.document import Block, Document, Line, Page, Word, write_atomic
from varco_ocr.eval.datasets import load_dataset


def parse_tesseract_tsv(tsv: str, width: int, height: int) -> Page:
    """Tesseract TSV (level 5 rows are words) -> a Page with blocks and lines in Tesseract's order."""
    blocks: dict[int, dict[tuple[int, int], list[Word]]] = {}
    for row in csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE):
        if row.get("level") != "5":
            continue
        text = (row.get("text") or "").strip()
        if not text:
            continue
        left, top, w, h = (int(row[k]) for k in ("left", "top", "width", "height"))
        conf = float(row["conf"])
        word = Word(text, (left, top, left + w, top + h), None if conf < 0 else conf / 100.0)
        blocks.setdefault(int(row["block_num"]), {}).setdefault((int(row["par_num"]), int(row["line_num"])), []).append(word)
    page_blocks = tuple(
        Block(tuple(Line(tuple(words)) for _, words in sorted(lines.items()))) for _, lines in sorted(blocks.items())
    )
    return Page(index=0, width=width, height=height, blocks=page_blocks)


def run_tesseract(image_path: Path, langs: str, psm: int) -> str:
    out = subprocess.run(
        ["tesseract", str(image_path), "stdout", "-l", langs, "--psm", str(psm), "tsv"],
        capture_output=True, text=True, env={"OMP_THREAD_LIMIT": "1", "PATH": "/usr/bin:/bin"},
    )
    if out.returncode != 0:
        raise RuntimeError(f"{image_path}: tesseract failed: {out.stderr.strip()[:200]}")
    return out.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("data", type=Path)
    ap.add_argument("output", type=Path, help="document JSONL to write")
    ap.add_argument("--langs", default="kor+eng")
    ap.add_argument("--psm", type=int, default=3, help="Tesseract page segmentation mode (3: automatic)")
    ap.add_argument("--max-images", type=int, default=None)
    args = ap.parse_args()
    from PIL import Image

    samples = load_dataset(args.dataset, args.data, args.max_images)
    docs = []
    t0 = time.perf_counter()
    for s in samples:
        with Image.open(s.image_path) as im:
            width, height = im.size
        page = parse_tesseract_tsv(run_tesseract(s.image_path, args.langs, args.psm), width, height)
        docs.append(Document(source=str(s.image_path), pages=(page,), model=f"tesseract ({args.langs}, psm {args.psm})"))
    write_atomic(args.output, "".join(d.dumps(indent=None) + "\n" for d in docs))
    dt = time.perf_counter() - t0
    print(f"{len(docs)} images in {dt:.1f}s ({dt / max(1, len(docs)):.2f} s/image) -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
