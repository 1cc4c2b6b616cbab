"""Peak memory of the batch runner: a 200-page PDF against a 10-page PDF (issue 3 acceptance: <= 1.3x).

Each run is a separate child process, sampled every 0.1 s for the proportional set size of it and its
page-renderer process (the renderer is forked, so PSS is what avoids counting shared pages twice), OCRing a scanned-style PDF (every
page a full-page grey image, rendered at --dpi like a real scan) with the tiny random-weight model and
writing json, txt, hocr, alto and the searchable PDF. Pages are produced lazily and at most
``prefetch + batch_size`` rendered pages are alive at once, so the peak should not grow with length.

    python benchmarks/batch_memory.py [--dpi 300] [--pages 10 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import json, resource, sys, time, torch
    torch.set_num_threads(1)
    from pathlib import Path
    from varco_ocr.batch import BatchOptions, run
    from varco_ocr.engine import OCREngine
    model, pdf, out, dpi = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
    engine = OCREngine(model, max_new_tokens=8, min_long_side=0, max_grid=1)
    start = time.monotonic()
    summary = run([pdf], engine, BatchOptions(out_dir=out, formats=("json", "txt", "hocr", "alto", "pdf"), dpi=dpi,
                  batch_size=4, progress="none"))
    assert summary.exit_code == 0, summary.outcomes
    print(json.dumps({"pages": summary.pages, "seconds": time.monotonic() - start,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    """
)


def scanned_pdf(path: Path, pages: int, dpi: float) -> Path:
    """A PDF of ``pages`` A4 pages, each holding one greyscale JPEG scan at ``dpi`` (distinct pixels
    per page, so nothing is shared between pages)."""
    import io

    import numpy as np
    import pymupdf
    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = int(595 * dpi / 72), int(842 * dpi / 72)
    doc = pymupdf.open()
    for i in range(pages):
        arr = np.full((h, w), 245, np.uint8)
        for _ in range(40):  # dark "text" bars, different on every page
            y, x = int(rng.integers(50, h - 80)), int(rng.integers(50, w // 2))
            arr[y : y + 30, x : x + int(rng.integers(100, w // 2))] = 20
        buf = io.BytesIO()
        Image.fromarray(arr, "L").save(buf, format="JPEG", quality=60)
        page = doc.new_page(width=595, height=842)
        page.insert_image(page.rect, stream=buf.getvalue())
    doc.save(path)
    return path


def _pss_mib(pid: int) -> float:
    """Proportional set size of ``pid`` and its descendants (the page renderer is a child process;
    PSS splits pages shared after fork, so nothing is counted twice)."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) / 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def measure(model: Path, pdf: Path, out: Path, dpi: float) -> dict:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(model), str(pdf), str(out), str(dpi)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    peak = 0.0
    while child.poll() is None:
        peak = max(peak, _pss_mib(child.pid))
        time.sleep(0.1)
    stdout, stderr = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(stderr)
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_pss_mb"] = peak
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dpi", type=float, default=300)
    parser.add_argument("--pages", type=int, nargs=2, default=[10, 200])
    args = parser.parse_args()
    from varco_ocr.testing.tiny_model import write_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = write_tiny_model(tmp / "tiny")
        results = {}
        for n in args.pages:
            pdf = scanned_pdf(tmp / f"scan{n}.pdf", n, args.dpi)
            results[n] = measure(model, pdf, tmp / f"out{n}", args.dpi)
            r = results[n]
            print(f"{n:4d} pages at {args.dpi:.0f} dpi: peak PSS (runner + renderer) {r['peak_pss_mb']:.0f} MiB, "
                  f"peak RSS of the runner {r['peak_rss_mb']:.0f} MiB, "
                  f"{r['seconds']:.1f} s ({r['pages'] / r['seconds']:.2f} pages/s), source {pdf.stat().st_size / 1e6:.1f} MB")
        small, large = args.pages
        ratio = results[large]["peak_pss_mb"] / results[small]["peak_pss_mb"]
        rss_ratio = results[large]["peak_rss_mb"] / results[small]["peak_rss_mb"]
        print(f"peak memory ratio {large} / {small} pages: {ratio:.3f} PSS, {rss_ratio:.3f} runner RSS (goal <= 1.3)")


if __name__ == "__main__":
    main()
