"""Issue 15: does a long PDF stream through the Ray pipeline, or sit whole in Ray's object store?

Two PDFs of N and 2.5 x N pages (the sample receipt on A4, rendered at 300 dpi: 26 MB of RGB per page)
go through ``run_ray`` on a local Ray of 2 CPUs, with an instant fake OpenAI-compatible server as the
model stage (so the pipeline, not a model, is measured). A thread samples the object store's use
(cluster total minus available, every 0.2 s). Bounded memory means the peak does not grow with the
document: the ratio of the two peaks stays near 1 while the page ratio is 2.5.

    python benchmarks/ray_streaming_memory.py            # 60 and 150 pages
    python benchmarks/ray_streaming_memory.py --pages 20
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _pdf(path: Path, pages: int) -> Path:
    import pymupdf

    doc = pymupdf.open()
    for _ in range(pages):
        page = doc.new_page(width=595, height=842)
        page.insert_image(page.rect, filename=str(REPO / "samples" / "receipt.png"))
    doc.save(path)
    return path


def measure(pages: int, folder: Path, url: str, model: str) -> tuple[float, float, int]:
    """(peak object store bytes, seconds, pages read) for one PDF of ``pages`` pages."""
    import ray

    from varco_ocr.batch import BatchOptions
    from varco_ocr.ray_pipeline import RayOptions, run_ray
    from varco_ocr.server import ServerBackend

    pdf = _pdf(folder / f"long-{pages}.pdf", pages)
    peak, stop = [0.0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            total = ray.cluster_resources().get("object_store_memory", 0)
            peak[0] = max(peak[0], total - ray.available_resources().get("object_store_memory", total))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.perf_counter()
    summary = run_ray([str(pdf)], functools.partial(ServerBackend, [url], model=model, concurrency=4),
                      BatchOptions(out_dir=folder / f"out-{pages}", formats=("json",), dpi=300, batch_size=8, model=model,
                                   progress="none"), RayOptions(workers=1))
    seconds = time.perf_counter() - started
    stop.set()
    watcher.join()
    return peak[0], seconds, summary.pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=60, help="pages of the shorter PDF (the longer has 2.5 x)")
    args = parser.parse_args()
    import ray

    from varco_ocr.testing.fake_server import SERVED_MODEL, FakeServer

    server = FakeServer()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = [(n, *measure(n, Path(tmp), server.url, SERVED_MODEL)) for n in (args.pages, int(args.pages * 2.5))]
    finally:
        ray.shutdown()
        server.stop()
    page_mb = 2480 * 3508 * 3 / 1e6
    print(f"{'pages':>6} {'whole document MB':>18} {'peak object store MB':>21} {'pages/s':>8}")
    for n, peak, seconds, read in rows:
        print(f"{n:>6} {n * page_mb:>18.0f} {peak / 1e6:>21.0f} {read / seconds:>8.2f}")
    print(f"peak ratio (long / short): {rows[1][1] / max(rows[0][1], 1):.2f} for a page ratio of {rows[1][0] / rows[0][0]:.2f}")


if __name__ == "__main__":
    main()
