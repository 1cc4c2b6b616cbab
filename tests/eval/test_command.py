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


def test_a_cord_or_funsd_annotation_of_the_wrong_shape_is_one_line(tiny_icdar, tmp_path):
    """The eval command names the file and the place in it (before: a ValueError traceback, exit 1)."""
    _, sub = tiny_icdar
    cord = tmp_path / "cord"
    for folder in ("json", "image"):
        (cord / folder).mkdir(parents=True)
    Image.new("RGB", (60, 40)).save(cord / "image" / "r1.png")
    (cord / "json" / "r1.json").write_text(json.dumps({"valid_line": [], "meta": {"image_size": {"width": "abc"}}}))
    assert_one_line_error(run("cord", "--data", cord, "-p", sub), 1,
                          "r1.json: meta.image_size.width: expected a whole number of pixels, got 'abc'")
    funsd = tmp_path / "funsd"
    for folder in ("annotations", "images"):
        (funsd / folder).mkdir(parents=True)
    Image.new("RGB", (60, 40)).save(funsd / "images" / "f1.png")
    (funsd / "annotations" / "f1.json").write_text(json.dumps({"form": ["x"]}))
    assert_one_line_error(run("funsd", "--data", funsd, "-p", sub), 1, "f1.json: form[0]: expected an object, got str")


def test_shared_ground_truth_scores_100(tmp_path, icdar2015_sample):
    from varco_ocr.eval.datasets import load_icdar2015
    from varco_ocr.eval.predictions import write_rrc_zip

    shared = icdar2015_sample
    samples = load_icdar2015(shared)
    write_rrc_zip(tmp_path / "gt.zip", {s.key: [r for r in s.regions if not r.dont_care] for s in samples})
    proc = run("icdar2015", "--data", shared, "-p", tmp_path / "gt.zip", "--json", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["headline"]["value"] == 100.0
    assert all(v.get("hmean", 1.0) == 1.0 for v in report["metrics"].values())
    assert report["metrics"]["text"]["cer"] == 0.0


def _icdar_line(word) -> str:
    x1, y1, x2, y2 = word["bbox"]
    return f"{x1},{y1},{x2},{y1},{x2},{y2},{x1},{y2},{word['text']}"


@pytest.mark.slow
def test_runs_the_taught_model_end_to_end(taught, samples, tmp_path):
    """The two samples as an ICDAR2015-style set with all their words as ground truth; the taught model
    reads the first 6 and 5 of them, exactly (text and box): every detection is right, and recall is
    11 of 88 words (RRC) and those words' share of the characters (CLEval), computed here by hand."""
    data = tmp_path / "data"
    data.mkdir()
    truth = {}
    for n, name in ((1, "receipt"), (2, "dense-page")):
        meta = json.loads((samples / f"{name}.words.json").read_text(encoding="utf-8"))
        truth[n] = meta["words"]
        (data / f"gt_img_{n}.txt").write_text("\n".join(_icdar_line(w) for w in meta["words"]) + "\n", encoding="utf-8")
        (data / f"img_{n}.png").write_bytes((samples / f"{name}.png").read_bytes())
    out = tmp_path / "preds"
    proc = run("icdar2015", "--data", data, "--device", "cpu", "--batch-size", "2", "--save-predictions", out,
               "--json", tmp_path / "r.json", *taught.cli_args)
    assert proc.returncode == 0, proc.stderr
    assert "CLEval end-to-end H-mean x 100" in proc.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["images"] == 2
    read = {1: taught.page("receipt").words, 2: taught.page("dense-page").words}
    n_gt, n_read = sum(map(len, truth.values())), sum(map(len, read.values()))
    assert (n_gt, n_read) == (88, 11)
    e2e = report["metrics"]["e2e generic"]
    assert e2e["precision"] == 1.0 and e2e["recall"] == pytest.approx(n_read / n_gt)
    assert e2e["hmean"] == pytest.approx(2 * (n_read / n_gt) / (1 + n_read / n_gt))
    chars_read = sum(len(t) for words in read.values() for t, _ in words)
    chars_gt = sum(len(w["text"]) for words in truth.values() for w in words)
    cl = report["metrics"]["cleval e2e"]
    assert cl["precision"] == 1.0 and cl["recall"] == pytest.approx(chars_read / chars_gt)
    lines = (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    saved = [json.loads(line) for line in lines]
    assert [Path(d["source"]).stem for d in saved] == ["img_1", "img_2"]
    assert [[(w["text"], tuple(w["bbox"])) for w in d["pages"][0]["words"]] for d in saved] == [list(read[1]), list(read[2])]
    with zipfile.ZipFile(out / "submit.zip") as zf:
        assert sorted(zf.namelist()) == ["res_img_1.txt", "res_img_2.txt"]
        assert zf.read("res_img_1.txt").decode("utf-8").splitlines()[0] == "28,33,72,33,72,62,28,62,카페"
    # the saved predictions score exactly as the run did
    again = run("icdar2015", "--data", data, "-p", out / "predictions.jsonl", "--json", tmp_path / "r2.json")
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "r2.json").read_text())["metrics"] == report["metrics"]


def test_cord_parquet_runs_the_taught_model_from_image_bytes(taught, samples, tmp_path, require_module):
    """CORD as the Hugging Face parquet files hold it: images are bytes in the rows, not files."""
    pa = require_module("pyarrow")
    import pyarrow.parquet as pq

    from eval.test_datasets import cord_annotation

    rows = [{"bytes": (samples / f"{name}.png").read_bytes(), "path": None} for name in ("receipt", "dense-page")]
    data = tmp_path / "cord"
    data.mkdir()
    pq.write_table(pa.table({"image": rows, "ground_truth": [json.dumps(cord_annotation())] * 2}),
                   data / "test-00000-of-00001.parquet")
    out = tmp_path / "preds"
    proc = run("cord", "--data", data, "--device", "cpu", "--save-predictions", out, "--json", tmp_path / "r.json", *taught.cli_args)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    saved = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert report["images"] == 2 and len(saved) == 2
    # the images were decoded from the rows' bytes: the model read each sample's taught words
    assert [[(w["text"], tuple(w["bbox"])) for w in d["pages"][0]["words"]] for d in saved] == [
        list(taught.page("receipt").words), list(taught.page("dense-page").words)]
    again = run("cord", "--data", data, "-p", out / "predictions.jsonl", "--json", tmp_path / "r2.json")
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "r2.json").read_text())["metrics"] == report["metrics"]
