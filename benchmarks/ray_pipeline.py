"""The Ray pipeline against the local runner, with an instant OpenAI-compatible server as the model
stage (issue 15), measured side by side in one run.

The server is benchmarks/client_floor.py's: its own process (its CPU is not counted), answering every
page at once with 400 OCR entries (~22 tokens each, with per-token log-probabilities as vLLM returns
them). The input is one PDF of N A4 text pages rendered at 300 dpi (client_floor.make_inputs).
Each configuration runs in a fresh child process that reads the PDF once to warm up (imports, Ray's
workers) and then once timed:

  local    batch.run with the ServerBackend (what ``varco-ocr PDF -o OUT --server URL`` runs)
  ray-1    ray_pipeline.run_ray on a local Ray (``--ray local --workers 1``), 1 model actor
  ray-2    the same with 2 model actors (``--workers 2``)

For each: wall seconds and pages/s of the timed run, and the client's CPU seconds per page: user +
system time of the child process and every process under it (Ray's GCS, raylet, workers and
actors are all started under the driver by a local Ray), sampled every 50 ms so processes that end
are counted up to their last sample, taken as the difference across the timed run. Documents are
checked equal across the three (JSON pages). The warm-up run reads a 2-page PDF, so the two runs
together split each configuration's CPU into a fixed part per run (starting actors, planning, the
manifest) and a part per extra page: (timed CPU - warm-up CPU) / (N - 2).

    python benchmarks/ray_pipeline.py [--pages 20] [--concurrency 8] [--cpus 2]

A written estimate of how many GPU nodes one client node feeds in each design follows from the
CPU seconds per page (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


class TreeCPU:
    """CPU seconds of this process and all its descendants, sampled so that ended processes keep
    their last reading."""

    def __init__(self, interval: float = 0.05) -> None:
        import psutil

        self._psutil = psutil
        self._last: dict[tuple[int, float], float] = {}  # (pid, create_time) -> user + system
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        me = self._psutil.Process()
        for p in [me, *me.children(recursive=True)]:
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    key = (p.pid, p.create_time())
                with self._lock:
                    self._last[key] = t.user + t.system
            except self._psutil.Error:
                pass

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._sample()

    def total(self) -> float:
        self._sample()
        with self._lock:
            return sum(self._last.values())

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def child(config: str, url: str, pdf: Path, warm: Path, out: Path, concurrency: int, cpus: int) -> None:
    """One configuration: warm up on ``warm``, then read ``pdf`` once, timed; print a JSON line."""
    from varco_ocr.batch import BatchOptions, run
    from varco_ocr.server import ServerBackend

    cpu = TreeCPU()
    factory = functools.partial(ServerBackend, [url], model="NCSOFT/VARCO-VISION-2.0-1.7B-OCR", concurrency=concurrency)

    def options(folder: Path) -> BatchOptions:
        # as cli._run_batch sets them with --server: batches that keep every request slot busy
        return BatchOptions(out_dir=folder, formats=("json",), progress="none", batch_size=2 * concurrency,
                            prefetch=2 * concurrency, model="NCSOFT/VARCO-VISION-2.0-1.7B-OCR")

    if config == "local":
        backend = factory()
        go = lambda source, folder: run([source], backend, options(folder))  # noqa: E731
    else:
        import ray

        from varco_ocr.ray_pipeline import RayOptions, run_ray

        ray.init(num_cpus=cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        workers = int(config.split("-")[1])
        go = lambda source, folder: run_ray([source], factory, options(folder), RayOptions(workers=workers))  # noqa: E731
    before, start = cpu.total(), time.perf_counter()
    summary = go(warm, out / "warm")
    warm_wall, warm_cpu = time.perf_counter() - start, cpu.total() - before
    assert summary.exit_code == 0, [o.error for o in summary.outcomes]
    warm_pages = summary.pages
    before, start = cpu.total(), time.perf_counter()
    summary = go(pdf, out / "timed")
    wall, used = time.perf_counter() - start, cpu.total() - before
    assert summary.exit_code == 0, [o.error for o in summary.outcomes]
    cpu.close()
    print(json.dumps({"config": config, "wall": wall, "cpu": used, "pages": summary.pages, "warm_wall": warm_wall,
                      "warm_cpu": warm_cpu, "warm_pages": warm_pages}), flush=True)


def normalised(folder: Path) -> str:
    docs = []
    for path in sorted(folder.rglob("*.json")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue  # the Ray pipeline's manifest
        doc = json.loads(path.read_text(encoding="utf-8"))
        docs.append(json.dumps(doc["pages"], sort_keys=True))
    return "\n".join(docs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray")
    parser.add_argument("--configs", default="local,ray-1,ray-2")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        config, url, pdf, warm, out, concurrency, cpus = args.child
        return child(config, url, Path(pdf), Path(warm), Path(out), int(concurrency), int(cpus))

    import client_floor

    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = subprocess.Popen([sys.executable, client_floor.__file__, "--serve"], stdout=subprocess.PIPE, env=env)
    port = int(server.stdout.readline())  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/lp/v1"
    tmp = Path(tempfile.mkdtemp(prefix="ray-pipeline-"))
    try:
        pdf_dir, _, _ = client_floor.make_inputs(tmp / "in", args.pages)
        warm_dir, _, _ = client_floor.make_inputs(tmp / "warm", 2)
        rows = []
        for config in args.configs.split(","):
            out = tmp / "out" / config
            line = subprocess.run([sys.executable, __file__, "--child", config, url, str(pdf_dir / "doc.pdf"),
                                   str(warm_dir / "doc.pdf"), str(out), str(args.concurrency), str(args.cpus)],
                                  env=env, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            rows.append(json.loads(line))
        same = len({normalised(tmp / "out" / r["config"] / "timed") for r in rows}) == 1
        local = next((r for r in rows if r["config"] == "local"), rows[0])
        print(f"{args.pages}-page PDF at 300 dpi, instant server (400 entries/page, log-probabilities), "
              f"concurrency {args.concurrency}, local Ray with {args.cpus} CPUs; machine load "
              f"{os.getloadavg()[0]:.1f}")
        print(f"{'config':8} {'wall s':>8} {'pages/s':>8} {'CPU s/page':>11} {'x local':>8} "
              f"{'fixed CPU s':>12} {'CPU s/extra page':>17} {'x local':>8}")

        def marginal(r):  # the timed run against the warm-up run: CPU per extra page, and the fixed part
            per_page = (r["cpu"] - r["warm_cpu"]) / (r["pages"] - r["warm_pages"])
            return per_page, r["cpu"] - per_page * r["pages"]

        for r in rows:
            per_page, fixed = marginal(r)
            print(f"{r['config']:8} {r['wall']:8.2f} {r['pages'] / r['wall']:8.2f} {r['cpu'] / r['pages']:11.3f} "
                  f"{(r['cpu'] / r['pages']) / (local['cpu'] / local['pages']):8.2f} {fixed:12.2f} "
                  f"{per_page:17.3f} {per_page / marginal(local)[0]:8.2f}")
        by = {r["config"]: r for r in rows}
        if "ray-1" in by and "ray-2" in by:
            print(f"ray-2 / ray-1 pages/s: {by['ray-1']['wall'] / by['ray-2']['wall']:.2f}")
        print(f"documents identical across configurations: {same}")
    finally:
        server.kill()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
