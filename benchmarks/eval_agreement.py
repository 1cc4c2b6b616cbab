"""Agreement of varco_ocr.eval's metrics with the reference implementations, side by side.

For each data set (the shared ICDAR2015 and FUNSD samples) and each prediction variant made from the
ground truth (exact copy; jittered boxes with text errors, dropped words and false alarms; jittered
boxes only; dropped words only; random text edits only; pairs of words merged into one box; line-level
boxes, with and without text edits; words split in two), this script writes the RRC zips once and
scores the SAME zips with
  - ours: varco_ocr.eval (rrc_detection, rrc_e2e generic / word spotting, cleval det / e2e);
  - the official RRC scripts (Task 4.1 localisation, Task 4.4 end-to-end, ICDAR2013 DetEval on the
    boxes' bounding rectangles), run from --rrc-dir with
    --ref-python (they need Polygon3 and numpy, e.g. the /tmp/cleval-venv interpreter);
  - NAVER's ``cleval`` CLI (``cleval -g GT.zip -s SUBMIT.zip --E2E --TRANSCRIPTION``) from --cleval.
and prints every figure with the absolute difference. With the cleval venv's python (--cleval-python,
found beside --cleval by default) it also runs the package's own zip reader, parser and evaluation
function image by image and compares every image's character counts with ours. Exit status 1 when a
CLEval figure differs by more than --tolerance (1e-9) or any image's counts differ. Reference tools
that are absent are skipped.

    python benchmarks/eval_agreement.py --shared ../shared \
        --ref-python /tmp/cleval-venv/bin/python --rrc-dir /tmp/rrc_official \
        --cleval /tmp/cleval-venv/bin/cleval
    python benchmarks/eval_agreement.py --datasets icdar2015 --cleval /work/venv-cleval/bin/cleval   # CLEval only
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from varco_ocr.eval import cleval, deteval, rrc_detection, rrc_e2e
from varco_ocr.eval.datasets import load_funsd, load_icdar2015
from varco_ocr.eval.predictions import read_predictions, write_rrc_zip
from varco_ocr.eval.regions import TextRegion

ROOT = Path(__file__).resolve().parents[1]


# --- prediction variants made from the ground truth -------------------------------------------------


def _care(regions):
    return [r for r in regions if not r.dont_care]


def variant_self(regions, rng):
    return _care(regions)


def _typo(text, rng):
    if not text:
        return text
    roll = rng.random()
    if roll < 0.15:  # one substituted character
        i = rng.randrange(len(text))
        return text[:i] + rng.choice("aeoXZ17") + text[i + 1:]
    if roll < 0.25:
        return text.lower() if rng.random() < 0.5 else text.upper()
    if roll < 0.33:
        return text + rng.choice(".!,")  # a special character the GT does not have
    if roll < 0.40 and len(text) > 1 and text[-1] in "!?.:,*\"()·[]/'":
        return text[:-1]
    if roll < 0.45:
        return text[: max(1, len(text) // 2)]
    return text


def variant_noisy(regions, rng):
    out = []
    for r in _care(regions):
        if rng.random() < 0.1:
            continue  # missed word
        j = [(x + rng.randint(-3, 3), y + rng.randint(-2, 2)) for x, y in r.points]
        out.append(TextRegion(tuple(j), _typo(r.text, rng)))
    for _ in range(rng.randint(0, 2)):  # false alarms
        x, y = rng.randint(0, 600), rng.randint(0, 600)
        out.append(TextRegion.from_ltrb(x, y, x + rng.randint(10, 80), y + rng.randint(8, 30), "noise"))
    return out


def _union(group, text):
    l = min(r.ltrb[0] for r in group)
    t = min(r.ltrb[1] for r in group)
    rr = max(r.ltrb[2] for r in group)
    b = max(r.ltrb[3] for r in group)
    return TextRegion.from_ltrb(int(l), int(t), int(rr), int(b), text)


def _lines(regions):
    """Cluster words into lines by vertical overlap, left to right."""
    words = sorted(_care(regions), key=lambda r: (r.ltrb[1] + r.ltrb[3]) / 2)
    lines: list[list[TextRegion]] = []
    for w in words:
        cy = (w.ltrb[1] + w.ltrb[3]) / 2
        for line in lines:
            t = min(r.ltrb[1] for r in line)
            b = max(r.ltrb[3] for r in line)
            if t <= cy <= b:
                line.append(w)
                break
        else:
            lines.append([w])
    return [sorted(line, key=lambda r: r.ltrb[0]) for line in lines]


def variant_merged(regions, rng):
    out = []
    for line in _lines(regions):
        i = 0
        while i < len(line):
            group = line[i:i + 2]
            out.append(_union(group, " ".join(r.text for r in group)) if len(group) > 1 else group[0])
            i += 2
    return out


def variant_lines(regions, rng):
    return [_union(line, " ".join(_typo(r.text, rng) if rng.random() < 0.3 else r.text for r in line)) for line in _lines(regions)]


def variant_split(regions, rng):
    out = []
    for r in _care(regions):
        l, t, rr, b = (int(v) for v in r.ltrb)
        if len(r.text) >= 4 and rr - l >= 8:
            m = (l + rr) // 2
            k = len(r.text) // 2
            out += [TextRegion.from_ltrb(l, t, m, b, r.text[:k]), TextRegion.from_ltrb(m + 1, t, rr, b, r.text[k:])]
        else:
            out.append(r)
    return out


def variant_jitter(regions, rng):
    """Every corner moved by up to +-4 px, text unchanged."""
    return [TextRegion(tuple((x + rng.randint(-4, 4), y + rng.randint(-4, 4)) for x, y in r.points), r.text) for r in _care(regions)]


def variant_dropped(regions, rng):
    """A quarter of the words missing, the rest exact."""
    return [r for r in _care(regions) if rng.random() >= 0.25]


def _edit(text, rng):
    """One random edit: insert, delete, substitute or transpose a character (repeated letters make the
    LCS consumption order matter)."""
    if not text:
        return text
    i = rng.randrange(len(text))
    op = rng.randrange(4)
    alphabet = "AEIOUaeiou0123456789-."
    if op == 0:
        return text[:i] + rng.choice(alphabet) + text[i:]
    if op == 1 and len(text) > 1:
        return text[:i] + text[i + 1:]
    if op == 2:
        return text[:i] + rng.choice(alphabet) + text[i + 1:]
    if len(text) > 1 and i + 1 < len(text):
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    return text + text[-1]


def variant_text_edits(regions, rng):
    """Exact boxes; half the words with one to three random edits."""
    out = []
    for r in _care(regions):
        t = r.text
        if rng.random() < 0.5:
            for _ in range(rng.randint(1, 3)):
                t = _edit(t, rng)
        out.append(TextRegion(r.points, t))
    return out


def variant_lines_edits(regions, rng):
    """Line boxes (many-to-one) whose text has random edits: several ground truths share one
    detection's characters, so the order in which ground truths consume them matters."""
    return [_union(line, _edit(" ".join(r.text for r in line), rng) if rng.random() < 0.5 else " ".join(r.text for r in line))
            for line in _lines(regions)]


VARIANTS = {
    "self": variant_self,
    "noisy": variant_noisy,
    "jitter": variant_jitter,
    "dropped": variant_dropped,
    "text-edits": variant_text_edits,
    "merged-pairs": variant_merged,
    "lines": variant_lines,
    "lines-edits": variant_lines_edits,
    "split": variant_split,
}


# --- reference tools ---------------------------------------------------------------------------------


def run_official(ref_python, rrc_dir, script, gt_zip, sub_zip, params):
    cmd = [ref_python, str(Path(rrc_dir) / script), f"-g={gt_zip}", f"-s={sub_zip}", f"-p={json.dumps(params)}"]
    out = subprocess.run(cmd, cwd=rrc_dir, capture_output=True, text=True)
    if out.returncode != 0:
        return None, out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"
    return json.loads(out.stdout.strip().splitlines()[-1]), None


def run_cleval(cleval_bin, gt_zip, sub_zip, workdir, case_sensitive=True):
    outdir = Path(workdir) / "cleval-out"
    cmd = [cleval_bin, "-g", str(gt_zip), "-s", str(sub_zip), "--E2E", "--TRANSCRIPTION", "-o", str(outdir)]
    if not case_sensitive:
        cmd += ["--CASE_SENSITIVE", "False"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return None, out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"
    return json.loads((outdir / "results.json").read_text())["all"], None


# Runs inside the cleval package's venv: per-image character counts from the package's own zip reader,
# line parser and evaluation function (single process, so each image's figures are keyed by its name),
# and the data-set figures from its own accumulation. argv: GT.zip SUBMIT.zip; JSON on stdout.
_PACKAGE_PER_IMAGE = r"""
import argparse, json, sys
from dataclasses import asdict
from cleval.main import parse_single_file
from cleval.eval_functions import evaluation
from cleval.data import GlobalResult, accumulate_result, calculate_global_rph
from cleval.utils import load_zip_file, decode_utf8
args = argparse.Namespace(CASE_SENSITIVE=True, VERTICAL_ASPECT_RATIO_THRESH=0.5, AREA_PRECISION_CONSTRAINT=0.3,
    RECALL_GRANULARITY_PENALTY_WEIGHT=1.0, PRECISION_GRANULARITY_PENALTY_WEIGHT=1.0, E2E=True, ORIENTATION=False,
    DUMP_SAMPLE_RESULT=False, TRANSCRIPTION=True, CONFIDENCES=False, CRLF=False, BOX_TYPE="QUAD")
gt, sub = load_zip_file(sys.argv[1]), load_zip_file(sys.argv[2])
g = GlobalResult()
per = {}
fields = ("num_char_gt", "num_char_det", "num_char_tp_recall", "gran_score_recall", "gran_score_precision")
for key in gt:
    det = decode_utf8(sub[key]) if key in sub else ""
    r = evaluation(args, parse_single_file(decode_utf8(gt[key]), False, True, False, box_type="QUAD"),
                   parse_single_file(det, False, True, False, box_type="QUAD"))
    accumulate_result(g, r, True, False)
    per[key] = {k: [getattr(getattr(r.stats, k), f) for f in fields] for k in ("det", "e2e")}
calculate_global_rph(g, True)
print(json.dumps({"per_image": per, "all": {k: asdict(getattr(g.stats, k)) for k in ("det", "e2e")}}))
"""


def run_cleval_per_image(python, gt_zip, sub_zip):
    out = subprocess.run([python, "-c", _PACKAGE_PER_IMAGE, str(gt_zip), str(sub_zip)], capture_output=True, text=True)
    if out.returncode != 0:
        return None, out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"
    return json.loads(out.stdout), None


def _our_counts(c):
    return [c.num_char_gt, c.num_char_det, c.tp, c.gran_recall, c.gran_precision]


# --- main ----------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--ref-python", default="/tmp/cleval-venv/bin/python")
    ap.add_argument("--rrc-dir", default="/tmp/rrc_official")
    ap.add_argument("--cleval", default="/tmp/cleval-venv/bin/cleval")
    ap.add_argument(
        "--cleval-python", default=None,
        help="the cleval venv's python: also compare every image's character counts with the package's "
        "evaluation function (default: beside --cleval)",
    )
    ap.add_argument("--tolerance", type=float, default=1e-9, help="largest |difference| accepted for CLEval figures")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--datasets", default="icdar2015,funsd")
    ap.add_argument(
        "--extra", action="append", default=[], metavar="DATASET=NAME=PATH",
        help="also score a real engine's saved predictions (document JSONL or RRC zip), e.g. "
        "icdar2015=tesseract=out/tesseract-ic15.jsonl",
    )
    args = ap.parse_args()

    have_rrc = Path(args.ref_python).exists() and (Path(args.rrc_dir) / "script_e2e.py").exists()
    have_cleval = Path(args.cleval).exists()
    cleval_python = Path(args.cleval_python) if args.cleval_python else Path(args.cleval).with_name("python")
    have_cleval_python = cleval_python.exists()
    image_diffs: list[tuple[str, str, int, int]] = []  # (data set, variant, images differing, images)
    shared = Path(args.shared) / "data"
    datasets = {
        "icdar2015": lambda: load_icdar2015(shared / "icdar2015-test-sample"),
        "funsd": lambda: load_funsd(shared / "funsd-test"),
    }
    worst = 0.0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ds_name in args.datasets.split(","):
            loader = datasets[ds_name]
            samples = loader()
            gt_zip = Path(tmp) / f"{ds_name}-gt.zip"
            write_rrc_zip(gt_zip, {s.key: s.regions for s in samples}, prefix="gt_")
            gt_ltrb_zip = Path(tmp) / f"{ds_name}-gt-ltrb.zip"  # DetEval knows only rectangles
            write_rrc_zip(gt_ltrb_zip, {s.key: s.regions for s in samples}, prefix="gt_", ltrb=True)
            # The official scripts map file names to ids with a regex; FUNSD ids are not img_N.
            name_params = {"GT_SAMPLE_NAME_2_ID": r"gt_(.+)\.txt", "DET_SAMPLE_NAME_2_ID": r"res_(.+)\.txt"}
            extra = {}
            for spec in args.extra:
                ds, name, path = spec.split("=", 2)
                if ds == ds_name:
                    extra[name] = read_predictions(path)
            for v_name in [*args.variants.split(","), *extra]:
                rng = random.Random(f"{args.seed}-{ds_name}-{v_name}")
                if v_name in extra:
                    preds = {s.key: list(extra[v_name][s.key].regions) for s in samples if s.key in extra[v_name]}
                else:
                    preds = {s.key: VARIANTS[v_name](s.regions, rng) for s in samples}
                sub_zip = Path(tmp) / f"{ds_name}-{v_name}.zip"
                det_zip = Path(tmp) / f"{ds_name}-{v_name}-det.zip"
                write_rrc_zip(sub_zip, preds, prefix="res_")
                write_rrc_zip(det_zip, preds, prefix="res_", with_text=False)
                ltrb_zip = Path(tmp) / f"{ds_name}-{v_name}-ltrb.zip"
                write_rrc_zip(ltrb_zip, preds, prefix="res_", with_text=False, ltrb=True)
                # Ours, from the very same zip files.
                read = read_predictions(sub_zip)
                images = [(s.regions, read[s.key].regions if s.key in read else ()) for s in samples]
                if have_cleval_python:
                    pkg, err = run_cleval_per_image(str(cleval_python), gt_zip, sub_zip)
                    if pkg is None:
                        print(f"[{ds_name}/{v_name}] cleval per image failed: {err}", file=sys.stderr)
                    else:
                        rows_ours = cleval.evaluate(images)[1]
                        differing = [
                            s.key for s, r in zip(samples, rows_ours)
                            if pkg["per_image"].get(s.key) != {"det": _our_counts(r.det), "e2e": _our_counts(r.e2e)}
                        ]
                        image_diffs.append((ds_name, v_name, len(differing), len(samples)))
                        if differing:
                            print(f"[{ds_name}/{v_name}] per-image counts differ from the package on {differing[:5]}", file=sys.stderr)
                t0 = time.perf_counter()
                ours = {
                    "rrc det": rrc_detection.evaluate(images)[0],
                    "rrc e2e": rrc_e2e.evaluate(images)[0],
                    "rrc e2e ws": rrc_e2e.evaluate(images, word_spotting=True)[0],
                }
                read_ltrb = read_predictions(ltrb_zip, box_format="ltrb")
                ours["deteval"] = deteval.evaluate([(s.regions, read_ltrb[s.key].regions if s.key in read_ltrb else ()) for s in samples])[0]
                cl, _ = cleval.evaluate(images)
                ours["cleval det"] = cl.det
                ours["cleval e2e"] = cl.e2e
                ours_s = time.perf_counter() - t0
                ref: dict = {}
                if have_rrc:
                    r, err = run_official(args.ref_python, args.rrc_dir, "script_det.py", gt_zip, det_zip, name_params)
                    ref["rrc det"] = r or err
                    r, err = run_official(args.ref_python, args.rrc_dir, "script_e2e.py", gt_zip, sub_zip, name_params)
                    ref["rrc e2e"] = r or err
                    r, err = run_official(args.ref_python, args.rrc_dir, "script_e2e.py", gt_zip, sub_zip, {**name_params, "WORD_SPOTTING": True})
                    ref["rrc e2e ws"] = r or err
                    r, err = run_official(args.ref_python, args.rrc_dir, "script_deteval.py", gt_ltrb_zip, ltrb_zip, name_params)
                    ref["deteval"] = r or err
                if have_cleval:
                    t1 = time.perf_counter()
                    r, err = run_cleval(args.cleval, gt_zip, sub_zip, tmp)
                    cl_s = time.perf_counter() - t1
                    ref["cleval det"] = r["det"] if r else err
                    ref["cleval e2e"] = r["e2e"] if r else err
                else:
                    cl_s = float("nan")
                for metric, prh in ours.items():
                    rv = ref.get(metric)
                    for field in ("precision", "recall", "hmean"):
                        mine = getattr(prh, field)
                        if isinstance(rv, dict):
                            theirs = float(rv[field])
                            diff = abs(mine - theirs)
                            worst = max(worst, diff) if not metric.startswith("cleval") else worst
                            rows.append((ds_name, v_name, metric, field, mine, theirs, diff))
                        else:
                            rows.append((ds_name, v_name, metric, field, mine, rv, None))
                print(f"[{ds_name}/{v_name}] ours {ours_s:.2f}s for all five metrics; cleval CLI {cl_s:.2f}s", file=sys.stderr)
    print(f"{'data set':10} {'variant':13} {'metric':11} {'field':9} {'ours':>10} {'reference':>10} {'|diff|':>9}")
    for ds_name, v_name, metric, field, mine, theirs, diff in rows:
        t = f"{theirs:10.6f}" if isinstance(theirs, float) else f"{str(theirs)[:10]:>10}"
        d = f"{diff:9.2e}" if diff is not None else f"{'-':>9}"
        print(f"{ds_name:10} {v_name:13} {metric:11} {field:9} {mine:10.6f} {t} {d}")
    rrc_diffs = [r[6] for r in rows if r[6] is not None and not r[2].startswith("cleval")]
    cl_diffs = [r[6] for r in rows if r[6] is not None and r[2].startswith("cleval")]
    if rrc_diffs:
        print(f"max |diff| vs official RRC scripts: {max(rrc_diffs):.3e} over {len(rrc_diffs)} figures")
    if cl_diffs:
        print(f"max |diff| vs cleval package:       {max(cl_diffs):.3e} over {len(cl_diffs)} figures")
    for ds_name, v_name, n_diff, n in image_diffs:
        print(f"per-image CLEval counts (det and e2e: gt, det, tp, granularity r/p), {ds_name}/{v_name}: "
              f"{n - n_diff}/{n} images equal the package's")
    bad = (cl_diffs and max(cl_diffs) > args.tolerance) or any(d for _, _, d, _ in image_diffs)
    if bad:
        print(f"CLEval DISAGREES with the package (tolerance {args.tolerance:g})")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
