"""Reading + CLEval scoring time of an ICDAR2015 submission zip, before and after streaming (issue 13).

"Before" is ``varco_ocr/eval/predictions.py`` as of --before (default 6e22c62, the last commit that read
each member whole with ``zf.read``), loaded from git into this process; "after" is the working tree's.
Both read the SAME zip (the `noisy` predictions of eval_agreement.py: jittered boxes, typos, misses,
false alarms), alternately, --repeats times; the figure is the median. The scored images are the 50
real ICDAR2015 test images of the shared sample, and the same 50 repeated --copies times under new
names (there are only 50 real images on this machine, not the 500 of the test set).

    python benchmarks/eval_read_speed.py --shared ../shared
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_agreement import variant_noisy  # noqa: E402

from varco_ocr.eval import cleval  # noqa: E402
from varco_ocr.eval import predictions as after  # noqa: E402
from varco_ocr.eval.datasets import load_icdar2015  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def load_before(commit: str, tmp: Path):
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:varco_ocr/eval/predictions.py"],
                         check=True, capture_output=True, text=True).stdout
    path = tmp / "predictions_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("predictions_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--before", default="6e22c62")
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    base = load_icdar2015(Path(args.shared) / "data" / "icdar2015-test-sample")
    with tempfile.TemporaryDirectory() as tmp:
        before = load_before(args.before, Path(tmp))
        for copies in (1, args.copies):
            rng = random.Random(0)
            gt = {f"{s.key}_r{c}" if copies > 1 else s.key: s.regions for c in range(copies) for s in base}
            sub = Path(tmp) / f"sub{copies}.zip"
            after.write_rrc_zip(sub, {k: variant_noisy(v, rng) for k, v in gt.items()})
            times: dict[str, dict[str, list[float]]] = {"before": {"read": [], "total": []}, "after": {"read": [], "total": []}}
            results = {}
            for _ in range(args.repeats):
                for name, module in (("before", before), ("after", after)):
                    t0 = time.perf_counter()
                    preds = module.read_predictions(sub)
                    t1 = time.perf_counter()
                    result, _ = cleval.evaluate([(regions, preds[k].regions) for k, regions in gt.items()])
                    t2 = time.perf_counter()
                    times[name]["read"].append(t1 - t0)
                    times[name]["total"].append(t2 - t0)
                    results[name] = (result.det, result.e2e)
            assert results["before"] == results["after"], "the two readers gave different predictions"
            med = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in times.items()}
            print(f"{len(gt)} images ({sub.stat().st_size:,} B zip), median of {args.repeats}:")
            for k in ("read", "total"):
                label = "reading the zip" if k == "read" else "reading + CLEval scoring"
                print(f"  {label:26s} before {med['before'][k]:7.3f}s  after {med['after'][k]:7.3f}s  "
                      f"after/before {med['after'][k] / med['before'][k]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
