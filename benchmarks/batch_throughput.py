"""Throughput of the batch runner against a naive page-by-page loop (tiny model, measured side by side).

Corpus: several multi-page scanned-style PDFs and single-page images. Variants, same engine, same pages:
  naive      open each document, render a page, OCR it alone, next page (no overlap, no batching)
  thread     varco_ocr.batch, batch size 1, pages rendered by a thread (render_in_process=False)
  overlap    varco_ocr.batch, batch size 1, pages rendered by the default child process
  overlap-q1 the same with a render-ahead queue of one item (the default before MIN_PREFETCH)
  batched    varco_ocr.batch, batch size 4: overlap plus pages of several documents per generate
torch uses one thread in every variant, so the renderer has the second core (2-core machine).

    python benchmarks/batch_throughput.py [--dpi 150] [--docs 6] [--pages-per-doc 3] [--images 4]
        [--max-grid 6] [--min-long-side 2304] [--repeat 1]

At the model card's resolution (default) the model's prefill of ~5,800 visual tokens per page dominates
and rendering is a small share; ``--max-grid 1 --min-long-side 0 --dpi 300`` makes the tiny model cheap
so rendering and decoding dominate, which shows what the overlap buys when the model is fast (a GPU).
With --repeat N the variants run interleaved N times and the median time of each is reported.
``--full-answers --max-new-tokens 256`` makes every answer as long as a short real page's (the random
model otherwise often ends its answer at once), which is where cross-document batching pays.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from batch_memory import scanned_pdf


def naive(engine, files: list[Path], dpi: float, out: Path) -> int:
    from varco_ocr.document import Document
    from varco_ocr.inputs import open_document

    pages_done = 0
    out.mkdir(parents=True, exist_ok=True)
    for path in files:
        pages = []
        with open_document(path, dpi=dpi) as doc:
            for page in doc.iter_pages():
                pages.append(engine.ocr_batch([page.image], batch_size=1, indices=[page.index])[0])
        Document(source=str(path), pages=tuple(pages), model=engine.model_name).save(out / f"{path.stem}.json")
        pages_done += len(pages)
    return pages_done


def pipelined(engine, folder: Path, dpi: float, out: Path, batch_size: int, in_process: bool = True, prefetch: int | None = None) -> int:
    from varco_ocr.batch import BatchOptions, run

    options = BatchOptions(out_dir=out, formats=("json",), dpi=dpi, batch_size=batch_size, progress="none",
                           render_in_process=in_process, prefetch=prefetch)
    summary = run([folder], engine, options)
    assert summary.exit_code == 0
    return summary.pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dpi", type=float, default=150)
    parser.add_argument("--docs", type=int, default=6)
    parser.add_argument("--pages-per-doc", type=int, default=3)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--max-grid", type=int, default=6)
    parser.add_argument("--min-long-side", type=int, default=2304)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--full-answers", action="store_true",
                        help="every answer runs to --max-new-tokens (no end token, no loop guard), as a real "
                             "page's long answer does; the random tiny model otherwise often stops at once")
    args = parser.parse_args()

    import torch
    from PIL import Image

    torch.set_num_threads(1)
    from varco_ocr.engine import OCREngine
    from varco_ocr.testing.tiny_model import write_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus"
        corpus.mkdir()
        for i in range(args.docs):
            scanned_pdf(corpus / f"doc{i}.pdf", args.pages_per_doc, args.dpi)
        for i in range(args.images):
            Image.new("RGB", (1240 + 10 * i, 1754), (250, 250, 250)).save(corpus / f"img{i}.png")
        files = sorted(corpus.iterdir())
        engine = OCREngine(
            str(write_tiny_model(tmp / "tiny")),
            max_new_tokens=args.max_new_tokens,
            max_grid=args.max_grid,
            min_long_side=args.min_long_side,
            loop_guard=not args.full_answers,
        )
        if args.full_answers:
            engine._end_ids = set()
            engine.model.generation_config.eos_token_id = None
        engine.ocr_batch([Image.new("RGB", (800, 600), "white")])  # warm-up

        variants = (
            ("naive", lambda out: naive(engine, files, args.dpi, out)),
            ("thread", lambda out: pipelined(engine, corpus, args.dpi, out, 1, in_process=False)),
            ("overlap", lambda out: pipelined(engine, corpus, args.dpi, out, 1)),
            ("overlap-q1", lambda out: pipelined(engine, corpus, args.dpi, out, 1, prefetch=1)),
            ("batched", lambda out: pipelined(engine, corpus, args.dpi, out, 4)),
        )
        times: dict[str, list[float]] = {name: [] for name, _ in variants}
        pages = 0
        for rep in range(args.repeat):
            for name, fn in variants:
                start = time.monotonic()
                pages = fn(tmp / f"out-{name}-{rep}")
                times[name].append(time.monotonic() - start)
                print(f"run {rep + 1} {name:10s} {pages} pages in {times[name][-1]:6.1f} s", flush=True)
        median = {name: statistics.median(t) for name, t in times.items()}
        print(f"settings: dpi {args.dpi:.0f}, max_grid {args.max_grid}, min_long_side {args.min_long_side}, "
              f"max_new_tokens {args.max_new_tokens}{' (full answers)' if args.full_answers else ''}, {pages} pages in {len(files)} documents, torch threads 1")
        for name, seconds in median.items():
            print(f"{name:10s} median {seconds:6.1f} s: {pages / seconds:.3f} pages/s, "
                  f"{median['naive'] / seconds:.2f}x the naive loop")


if __name__ == "__main__":
    main()
