"""Batched vs one-by-one throughput of OCREngine.ocr_batch, measured side by side in one run.

    python benchmarks/engine_batching.py [--model DIR] [--pages 16] [--batch-size 4] [--new-tokens 64]

Without --model it builds the tiny random-weight model (CPU): the figures then measure the engine's
own overhead and the effect of batching on a model whose compute is negligible, not VARCO's speed.
Every answer runs to the full token budget (the loop guard is off), so both sides generate exactly the
same number of tokens; the batched results are checked equal to the one-by-one results.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from PIL import Image, ImageDraw


def make_pages(n: int) -> list[Image.Image]:
    pages = []
    for i in range(n):
        # Slightly different sizes, as scans are; all share one tile layout at --min-long-side 384.
        im = Image.new("RGB", (360 + (i % 3) * 8, 480 + (i % 4) * 8), "white")
        ImageDraw.Draw(im).text((20, 20 + i), f"page {i} 영수증 TOTAL {i * 1000}", fill="black")
        pages.append(im)
    return pages


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--pages", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args()

    import torch

    from varco_ocr.engine import OCREngine

    if args.threads:
        torch.set_num_threads(args.threads)
    model = args.model
    if model is None:
        from varco_ocr.testing.tiny_model import write_tiny_model

        model = str(write_tiny_model(tempfile.mkdtemp(prefix="tiny-model-")))
    engine = OCREngine(model, max_new_tokens=args.new_tokens, min_long_side=384, max_grid=2, loop_guard=False,
                        keep_raw=True)
    # Force every answer to the full budget: no end-of-turn token may stop it early.
    engine._end_ids = set()
    engine.model.generation_config.eos_token_id = None
    pages = make_pages(args.pages)
    engine.ocr_batch(pages[:2], batch_size=2)  # warm-up

    t = time.perf_counter()
    one = [engine.ocr(p) for p in pages]
    t_one = time.perf_counter() - t
    t = time.perf_counter()
    batched = engine.ocr_batch(pages, batch_size=args.batch_size)
    t_batch = time.perf_counter() - t

    # The raw answers are compared too: a random-weight model often answers no well-formed word at all.
    same = [(p.raw, p.words) for p in one] == [(p.raw, p.words) for p in batched]
    n_words = sum(len(p.words) for p in one)
    print(f"model: {model}")
    print(f"pages: {args.pages}, new tokens per page: {args.new_tokens}, torch threads: {torch.get_num_threads()}")
    print(f"one-by-one: {t_one:.2f} s ({args.pages / t_one:.2f} pages/s)")
    print(f"batched (batch size {args.batch_size}): {t_batch:.2f} s ({args.pages / t_batch:.2f} pages/s)")
    print(f"speed-up: {t_one / t_batch:.2f}x; raw answers, words and boxes identical: {same} ({n_words} words)")


if __name__ == "__main__":
    main()
