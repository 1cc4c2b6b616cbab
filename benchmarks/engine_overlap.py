"""How busy the accelerator stays: OCREngine.ocr_batch with the next batch prepared in a thread
(prefetch, issue 17 item 3) against preparing it on the main thread between generate calls.

No GPU here, so a stand-in "accelerator": the model's ``generate`` runs the real tiny random-weight
model, then sleeps ``--sleep`` seconds per batch (the GPU's time; a sleep holds no GIL, as a CUDA
wait does not). Busy fraction = time inside the stand-in's generate / wall time of ``ocr_batch``, for the whole run
and from the moment the first batch is ready (preparing the first batch cannot overlap anything:
that fill is the same with and without prefetch, and a long run amortises it).
Pages are A4 text pages at ``--dpi`` (default 200: 1654x2339, the model card's 2304 px target and
6x6 grid, so the processor does the real tiling work: ~30 tiles of 384 px per page).

    python benchmarks/engine_overlap.py [--batches 3] [--batch-size 8] [--sleep 1 8] [--dpi 200]
        [--min-long-side 2304] [--max-grid 6] [--threads 1]

With ``--runner``, the same stand-in through the batch runner (``varco_ocr.batch.run`` over a folder of
the pages saved as PNG, JSON output): "one call per batch" is the runner calling ``ocr_batch`` once per
batch (a backend without ``ocr_batches``: the runner before issue 17's second part), "overlapped" the
runner feeding the engine's ``ocr_batches``. Busy = time in the stand-in's generate / wall time of ``run``.

    python benchmarks/engine_overlap.py --runner [--batches 4] [--sleep 1] ...

Also printed: the preparation cost per batch measured alone (load, upscale, processor), which is what
the accelerator waits for without the overlap; with the overlap it waits only when preparing a batch
takes longer than generating one. Results with and without prefetch are compared (raw answers too).
"""

from __future__ import annotations

import argparse
import tempfile
import time


def make_pages(n: int, dpi: float):
    from PIL import Image, ImageDraw

    w, h = int(8.27 * dpi), int(11.69 * dpi)
    pages = []
    for i in range(n):
        im = Image.new("RGB", (w, h), "white")
        draw = ImageDraw.Draw(im)
        for line in range(int(h / 40) - 2):
            draw.text((40, 40 + line * 40), f"page {i} line {line} " + "lorem ipsum dolor sit amet " * 3, fill="black")
        pages.append(im)
    return pages


class StandIn:
    """The model with a fake accelerator: the real generate, then ``sleep`` seconds per call."""

    def __init__(self, model, sleep: float) -> None:
        self.model, self.sleep = model, sleep
        self.busy = 0.0
        self.real = 0.0
        self.first: float | None = None  # when the first batch was ready: the pipeline is full from here

    def generate(self, **kwargs):
        t = time.perf_counter()
        self.first = self.first or t
        out = self.model.generate(**kwargs)
        self.real += time.perf_counter() - t
        time.sleep(self.sleep)
        self.busy += time.perf_counter() - t
        return out

    def __getattr__(self, name):
        return getattr(self.model, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--sleep", type=float, nargs="+", default=[1.0, 8.0], help="stand-in seconds per batch")
    ap.add_argument("--dpi", type=float, default=200)
    ap.add_argument("--min-long-side", type=int, default=2304)
    ap.add_argument("--max-grid", type=int, default=6)
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--runner", action="store_true", help="measure through varco_ocr.batch.run")
    args = ap.parse_args()

    import torch

    from varco_ocr.engine import OCREngine
    from varco_ocr.preprocessing import prepare_for_model
    from varco_ocr.testing.tiny_model import write_tiny_model

    torch.set_num_threads(args.threads)
    model_dir = write_tiny_model(tempfile.mkdtemp(prefix="tiny-model-"))
    engine = OCREngine(str(model_dir), max_new_tokens=args.new_tokens, min_long_side=args.min_long_side,
                       max_grid=args.max_grid, keep_raw=True)
    real_model = engine.model
    pages = make_pages(args.batches * args.batch_size, args.dpi)

    engine.prefetch = False
    engine.ocr_batch(pages[:2], batch_size=2)  # warm-up
    t = time.perf_counter()
    engine.model_inputs([prepare_for_model(engine._load(p), args.min_long_side) for p in pages[: args.batch_size]], "<ocr>")
    prep = time.perf_counter() - t
    print(f"{len(pages)} pages of {pages[0].size[0]}x{pages[0].size[1]}, batches of {args.batch_size}, "
          f"min_long_side {args.min_long_side}, max_grid {args.max_grid}, torch threads {args.threads}")
    print(f"preparing one batch alone (load, upscale, processor): {prep:.2f} s ({prep / args.batch_size * 1000:.0f} ms/page)")
    if args.runner:
        return runner(engine, real_model, pages, args)
    print("| stand-in s/batch | prefetch | wall s | real generate s/batch | busy, whole run | busy, after the first batch is ready |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    results = {}
    for sleep in args.sleep:
        for prefetch in (False, True):
            engine.prefetch = prefetch
            engine.model = StandIn(real_model, sleep)
            t = time.perf_counter()
            out = engine.ocr_batch(pages, batch_size=args.batch_size)
            end = time.perf_counter()
            wall = end - t
            busy, steady = engine.model.busy / wall, engine.model.busy / (end - engine.model.first)
            results.setdefault(prefetch, out)
            print(f"| {sleep:g} | {'on' if prefetch else 'off'} | {wall:.2f} | {engine.model.real / args.batches:.2f} "
                  f"| {busy:.0%} | **{steady:.0%}** |", flush=True)
    engine.model = real_model
    same = [(p.raw, p.words) for p in results[True]] == [(p.raw, p.words) for p in results[False]]
    print(f"pages with and without prefetch identical (raw answers, words, boxes, confidences): {same}")


class OneCallPerBatch:
    """The engine seen through ``ocr_batch`` only: the runner calls it once per batch."""

    def __init__(self, engine) -> None:
        self.engine, self.model_name = engine, engine.model_name

    def ocr_batch(self, images, batch_size=4, indices=None):
        return self.engine.ocr_batch(images, batch_size=batch_size, indices=indices)


def runner(engine, real_model, pages, args) -> None:
    import json
    from pathlib import Path

    from varco_ocr.batch import BatchOptions, run

    folder = Path(tempfile.mkdtemp(prefix="overlap-pages-"))
    for i, page in enumerate(pages):
        page.save(folder / f"page{i:03d}.png")
    engine.prefetch = True
    print("batch runner (`varco_ocr.batch.run`, JSON output), pages from PNG files")
    print("| stand-in s/batch | runner path | wall s | real generate s/batch | busy, whole run | busy, after the first batch is ready |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    outputs = {}
    for sleep in args.sleep:
        for name, backend in (("one call per batch", OneCallPerBatch(engine)), ("overlapped", engine)):
            engine.model = StandIn(real_model, sleep)
            out = Path(tempfile.mkdtemp(prefix="overlap-out-"))
            t = time.perf_counter()
            summary = run([folder], backend, BatchOptions(out_dir=out, batch_size=args.batch_size, progress="none"))
            end = time.perf_counter()
            assert summary.exit_code == 0, summary.outcomes
            wall = end - t
            busy, steady = engine.model.busy / wall, engine.model.busy / (end - engine.model.first)
            outputs.setdefault(name, {p.name: json.loads(p.read_text())["pages"] for p in sorted(out.glob("*.json"))})
            print(f"| {sleep:g} | {name} | {wall:.2f} | {engine.model.real / args.batches:.2f} "
                  f"| {busy:.0%} | **{steady:.0%}** |", flush=True)
    engine.model = real_model
    same = outputs["overlapped"] == outputs["one call per batch"]
    print(f"documents (JSON pages: raw answers, words, boxes, confidences) identical on both paths: {same}")


if __name__ == "__main__":
    main()
