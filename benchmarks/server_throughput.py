"""Server backend throughput at several concurrencies, and local batched vs one-by-one, side by side.

    python benchmarks/server_throughput.py [--pages 16] [--new-tokens 32] [--concurrency 1 4 16] [--batch-size 8]

Builds the tiny random-weight model (task tags as ordinary tokens), starts a real `transformers serve` on
127.0.0.1 serving it, and OCRs the same pages:

- through the server backend (`varco_ocr.server.ServerBackend`) at each concurrency;
- locally with `OCREngine.ocr_batch` at --batch-size and one by one (batch size 1).

Every answer runs to the token budget (a random model rarely stops; the loop guard is off locally), so
every variant generates about the same number of tokens. On this CPU the figures measure the client,
the HTTP path and the server's scheduling on a model whose compute is negligible, not VARCO's speed on a
GPU (see the estimate in benchmarks/RESULTS.md). The server is stopped at the end whatever happens.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image, ImageDraw


def make_pages(n: int) -> list[Image.Image]:
    pages = []
    for i in range(n):
        im = Image.new("RGB", (384, 160 + (i % 4) * 8), "white")
        ImageDraw.Draw(im).text((20, 20), f"page {i} TOTAL {i * 1000}", fill="black")
        pages.append(im)
    return pages


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cache = work / "hf-cache"
    cache.mkdir()
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([shutil.which("transformers") or "transformers", "serve", "--host", "127.0.0.1", "--port",
                             str(port), "--device", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                sys.exit("transformers serve did not start (pip install 'transformers[serving]')")
            time.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from varco_ocr.engine import OCREngine
    from varco_ocr.server import ServerBackend
    from varco_ocr.testing.tiny_model import write_tiny_model

    pages = make_pages(args.pages)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = str(write_tiny_model(work / "model", ordinary_tags=True))
        proc, url = start_server(work)
        rows = []
        try:
            warm = ServerBackend([url], model=model, concurrency=1, min_long_side=384, max_new_tokens=args.new_tokens,
                                 notify=lambda m: None)
            warm.ocr_batch(pages[:1])  # model load on first request
            warm.close()
            for c in args.concurrency:
                backend = ServerBackend([url], model=model, concurrency=c, min_long_side=384,
                                        max_new_tokens=args.new_tokens, notify=lambda m: None)
                t = time.perf_counter()
                got = backend.ocr_batch(pages, indices=list(range(len(pages))))
                seconds = time.perf_counter() - t
                backend.close()
                assert all(p.error is None for p in got), [p.error for p in got if p.error]
                rows.append((f"server, concurrency {c}", seconds))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        engine = OCREngine(model, max_new_tokens=args.new_tokens, min_long_side=384, loop_guard=False)
        engine.ocr_batch(pages[:1], batch_size=1)  # warm-up
        t = time.perf_counter()
        one = [engine.ocr(p, index=i) for i, p in enumerate(pages)]
        rows.append(("local, one by one", time.perf_counter() - t))
        t = time.perf_counter()
        batched = engine.ocr_batch(pages, batch_size=args.batch_size, indices=list(range(len(pages))))
        rows.append((f"local, ocr_batch batch {args.batch_size}", time.perf_counter() - t))
        same = [w.text for p in one for w in p.words] == [w.text for p in batched for w in p.words]

    print(f"{args.pages} pages of 384 x 160-184 px, {args.new_tokens} new tokens each, tiny random model, "
          f"torch threads 1, {os.cpu_count()} CPUs")
    print("| variant | seconds | pages/s |")
    print("| --- | ---: | ---: |")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {args.pages / seconds:.2f} |")
    base = dict(rows)
    c1 = base.get("server, concurrency 1")
    for c in args.concurrency[1:]:
        if c1:
            print(f"server concurrency {c} / 1: {c1 / base[f'server, concurrency {c}']:.2f}x")
    print(f"local ocr_batch / one by one: {base['local, one by one'] / base[f'local, ocr_batch batch {args.batch_size}']:.2f}x"
          f" (words equal: {same})")


if __name__ == "__main__":
    main()
