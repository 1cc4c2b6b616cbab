"""How long scoring 500 ICDAR2015-sized images takes: varco_ocr.eval beside the reference tools.

The shared sample has 50 test images; it is repeated 10 times under new names (img_1_r0 ...) to make
500 images of real ground truth, and scored against perturbed predictions (jittered boxes, typos,
misses, false alarms; the `noisy` variant of eval_agreement.py). Each of our metrics is timed in
this process; the official RRC end-to-end script and NAVER's cleval CLI are timed as subprocesses
on the very same zips when available. Ratios are printed side by side.

    python benchmarks/eval_speed.py --shared ../shared
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_agreement import variant_noisy  # noqa: E402

from varco_ocr.eval import cleval, deteval, rrc_detection, rrc_e2e, text_metrics  # noqa: E402
from varco_ocr.eval.datasets import load_icdar2015  # noqa: E402
from varco_ocr.eval.predictions import read_predictions, write_rrc_zip  # noqa: E402
from varco_ocr.eval.regions import reading_order_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--ref-python", default="/tmp/cleval-venv/bin/python")
    ap.add_argument("--rrc-dir", default="/tmp/rrc_official")
    ap.add_argument("--cleval", default="/tmp/cleval-venv/bin/cleval")
    args = ap.parse_args()
    base = load_icdar2015(Path(args.shared) / "data" / "icdar2015-test-sample")
    rng = random.Random(0)
    gt = {f"{s.key}_r{c}": s.regions for c in range(args.copies) for s in base}
    with tempfile.TemporaryDirectory() as tmp:
        gt_zip, sub_zip = Path(tmp) / "gt.zip", Path(tmp) / "sub.zip"
        write_rrc_zip(gt_zip, gt, prefix="gt_")
        write_rrc_zip(sub_zip, {k: variant_noisy(v, rng) for k, v in gt.items()}, prefix="res_")
        t0 = time.perf_counter()
        preds = read_predictions(sub_zip)
        t_read = time.perf_counter() - t0
        images = [(regions, preds[k].regions) for k, regions in gt.items()]
        timings = {}
        for name, fn in (
            ("rrc det", lambda: rrc_detection.evaluate(images)),
            ("rrc e2e", lambda: rrc_e2e.evaluate(images)),
            ("deteval", lambda: deteval.evaluate(images)),
            ("cleval", lambda: cleval.evaluate(images)),
            ("text", lambda: text_metrics.evaluate([(reading_order_text(g), reading_order_text(d)) for g, d in images])),
        ):
            t0 = time.perf_counter()
            fn()
            timings[name] = time.perf_counter() - t0
        print(f"{len(images)} images, {sum(len(g) for g, _ in images)} GT regions; reading the zip: {t_read:.2f}s")
        for name, t in timings.items():
            print(f"  ours {name:8s} {t:7.2f}s")
        print(f"  ours total    {sum(timings.values()) + t_read:7.2f}s")
        ref = {}
        params = '{"GT_SAMPLE_NAME_2_ID": "gt_(.+)\\\\.txt", "DET_SAMPLE_NAME_2_ID": "res_(.+)\\\\.txt"}'
        if Path(args.ref_python).exists() and (Path(args.rrc_dir) / "script_e2e.py").exists():
            t0 = time.perf_counter()
            subprocess.run([args.ref_python, "script_e2e.py", f"-g={gt_zip}", f"-s={sub_zip}", f"-p={params}"],
                           cwd=args.rrc_dir, check=True, capture_output=True)
            ref["rrc e2e"] = time.perf_counter() - t0
        if Path(args.cleval).exists():
            t0 = time.perf_counter()
            subprocess.run([args.cleval, "-g", str(gt_zip), "-s", str(sub_zip), "--E2E", "--TRANSCRIPTION",
                            "-o", str(Path(tmp) / "cl")], check=True, capture_output=True)
            ref["cleval"] = time.perf_counter() - t0
        for name, t in ref.items():
            print(f"  reference {name:8s} {t:7.2f}s  (ours {timings[name]:.2f}s: {t / timings[name]:.1f}x faster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
