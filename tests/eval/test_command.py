"""`varco-ocr eval` as a user runs it: real processes, real files, the tiny model."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "varco_ocr", "eval", *map(str, args)],
        capture_output=True, text=True, cwd=REPO, env=dict(os.environ), timeout=900,
    )


def assert_one_line_error(proc, code, fragment):
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr


@pytest.fixture
def tiny_icdar(tmp_path):
    """Two images in the ICDAR2015 layout, and a submission that reads one word wrong."""
    data = tmp_path / "data"
    data.mkdir()
    for n, lines in ((1, "10,10,60,10,60,30,10,30,HELLO\n70,10,120,10,120,30,70,30,###\n"), (2, "5,5,45,5,45,25,5,25,WORLD\n")):
        (data / f"gt_img_{n}.txt").write_text(lines)
        Image.new("RGB", (200, 100), "white").save(data / f"img_{n}.jpg")
    sub = tmp_path / "sub.zip"
    with zipfile.ZipFile(sub, "w") as zf:
        zf.writestr("res_img_1.txt", "10,10,60,10,60,30,10,30,HELLO\n")
        zf.writestr("res_img_2.txt", "5,5,45,5,45,25,5,25,WORD\n")
    return data, sub


def test_scores_saved_predictions_and_writes_json(tiny_icdar, tmp_path):
    data, sub = tiny_icdar
    proc = run("icdar2015", "--data", data, "--predictions", sub, "--json", tmp_path / "r.json", "--per-image", "1")
    assert proc.returncode == 0, proc.stderr
    # RRC end-to-end: one of two words right -> P = R = H = 0.5
    assert "e2e generic" in proc.stdout and "0.5000" in proc.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["metrics"]["e2e generic"] == {"precision": 0.5, "recall": 0.5, "hmean": 0.5}
    assert report["metrics"]["det"]["hmean"] == 1.0
    # CLEval end to end: HELLO 5/5; WORD vs WORLD: LCS 4 of 5 GT chars, 4 of 4 detected chars
    cl = report["metrics"]["cleval e2e"]
    assert cl["recall"] == pytest.approx(9 / 10) and cl["precision"] == pytest.approx(1.0)
    assert report["headline"]["value"] == pytest.approx(100 * 2 * 0.9 / 1.9)
    assert [r["image"] for r in report["per_image"]] == ["img_1", "img_2"]
    assert report["per_image"][1]["e2e hmean"] == 0.0
    assert "1 worst images" in proc.stdout and "img_2" in proc.stdout


def test_word_spotting_and_metric_choice(tiny_icdar):
    data, sub = tiny_icdar
    proc = run("icdar2015", "--data", data, "-p", sub, "--metric", "deteval", "--word-spotting")
    assert proc.returncode == 0, proc.stderr
    assert "deteval" in proc.stdout and "e2e word spotting" in proc.stdout and "cleval" not in proc.stdout


def test_bad_inputs_are_one_line_errors(tiny_icdar, tmp_path):
    data, sub = tiny_icdar
    assert_one_line_error(run("icdar2015", "--data", tmp_path / "nope", "-p", sub), 1, "data folder not found")
    assert_one_line_error(run("coco", "--data", data, "-p", sub), 2, "unknown data set")
    assert_one_line_error(run("icdar2015", "--data", data, "-p", sub, "--metric", "map"), 2, "unknown metric")
    (data / "gt_img_2.txt").write_text("5,5,45,5,45,25,5,25,WORLD\n5,5,oops\n")
    assert_one_line_error(run("icdar2015", "--data", data, "-p", sub), 1, "gt_img_2.txt:2:")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    (data / "gt_img_2.txt").write_text("5,5,45,5,45,25,5,25,WORLD\n")
    assert_one_line_error(run("icdar2015", "--data", data, "-p", bad), 1, "bad.jsonl:1: invalid JSON")


def test_shared_ground_truth_scores_100(tmp_path):
    from varco_ocr.eval.datasets import load_icdar2015
    from varco_ocr.eval.predictions import write_rrc_zip

    shared = Path(os.environ.get("VARCO_SHARED", REPO.parent / "shared")) / "data" / "icdar2015-test-sample"
    if not shared.is_dir():
        pytest.skip("shared ICDAR2015 sample not found")
    samples = load_icdar2015(shared)
    write_rrc_zip(tmp_path / "gt.zip", {s.key: [r for r in s.regions if not r.dont_care] for s in samples})
    proc = run("icdar2015", "--data", shared, "-p", tmp_path / "gt.zip", "--json", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["headline"]["value"] == 100.0
    assert all(v.get("hmean", 1.0) == 1.0 for v in report["metrics"].values())
    assert report["metrics"]["text"]["cer"] == 0.0


@pytest.mark.slow
def test_runs_the_tiny_model_end_to_end(tiny_model_dir, tmp_path):
    shared = Path(os.environ.get("VARCO_SHARED", REPO.parent / "shared")) / "data" / "icdar2015-test-sample"
    if not shared.is_dir():
        pytest.skip("shared ICDAR2015 sample not found")
    out = tmp_path / "preds"
    proc = run("icdar2015", "--data", shared, "--model", tiny_model_dir, "--max-images", "3", "--device", "cpu", "--max-new-tokens", "16",
               "--batch-size", "2", "--save-predictions", out, "--json", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    assert "CLEval end-to-end H-mean x 100" in proc.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["images"] == 3 and len(report["per_image"]) == 3
    # a random-weight model reads nothing right: whatever it says, the scores are valid fractions
    for name, figures in report["metrics"].items():
        for k, v in figures.items():
            assert v >= 0.0 and (k == "cer" or v <= 1.0), (name, k, v)
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 3
    sources = [json.loads(line)["source"] for line in lines]
    assert [Path(s).stem for s in sources] == ["img_1", "img_2", "img_3"]
    with zipfile.ZipFile(out / "submit.zip") as zf:
        assert sorted(zf.namelist()) == ["res_img_1.txt", "res_img_2.txt", "res_img_3.txt"]
    # the saved predictions score exactly as the run did
    again = run("icdar2015", "--data", shared, "--max-images", "3", "-p", out / "predictions.jsonl", "--json", tmp_path / "r2.json")
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "r2.json").read_text())["metrics"] == report["metrics"]


def test_cord_parquet_runs_the_tiny_model_from_image_bytes(tiny_model_dir, tmp_path):
    """CORD as the Hugging Face parquet files hold it: images are bytes in the rows, not files."""
    import io

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from eval.test_datasets import cord_annotation

    rows = []
    for colour in ("white", "lightgrey"):
        buf = io.BytesIO()
        Image.new("RGB", (100, 200), colour).save(buf, format="PNG")
        rows.append({"bytes": buf.getvalue(), "path": None})
    data = tmp_path / "cord"
    data.mkdir()
    pq.write_table(pa.table({"image": rows, "ground_truth": [json.dumps(cord_annotation())] * 2}),
                   data / "test-00000-of-00001.parquet")
    out = tmp_path / "preds"
    proc = run("cord", "--data", data, "--model", tiny_model_dir, "--device", "cpu", "--max-new-tokens", "16",
               "--save-predictions", out, "--json", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["images"] == 2 and len((out / "predictions.jsonl").read_text().splitlines()) == 2
    again = run("cord", "--data", data, "-p", out / "predictions.jsonl", "--json", tmp_path / "r2.json")
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "r2.json").read_text())["metrics"] == report["metrics"]
