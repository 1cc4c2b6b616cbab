"""The `varco-ocr` command as a user runs it: real processes, the tiny model, real files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from schema_check import assert_valid_document

REPO = Path(__file__).resolve().parents[1]
# every JSON a test here writes under its tmp_path is validated against the shipped schema afterwards
pytestmark = pytest.mark.usefixtures("documents_are_schema_valid")
ANSWER = "<char>백범로</char><bbox>0.172, 0.266, 0.328, 0.341</bbox>\n<char>Apt</char><bbox>0.28, 0.601, 0.327, 0.651</bbox>"
FAST = ["--min-long-side", "384", "--max-grid", "2", "--max-new-tokens", "16"]


def run(*args, stdin=None, env=None):
    proc = subprocess.run(
        [sys.executable, "-m", "varco_ocr", *map(str, args)],
        capture_output=True, text=True, input=stdin, cwd=REPO, env={**os.environ, **(env or {})}, timeout=600,
    )
    if "--json" in map(str, args) and proc.returncode == 0:
        _validate_documents_on_stdout(proc.stdout)
    return proc


def _validate_documents_on_stdout(stdout: str) -> None:
    """Documents printed with --json (one indented, or one per line) must be schema-valid too."""
    try:
        printed = [json.loads(stdout)]
    except json.JSONDecodeError:
        printed = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    for data in printed:
        if isinstance(data, dict) and "pages" in data:  # `parse --grounding --json` prints boxes, not a document
            assert_valid_document(data, "stdout")


def assert_one_line_error(proc, code):
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("varco-ocr:")]
    assert lines, proc.stderr
    return lines


def test_help_lists_subcommands_with_examples():
    proc = run("--help")
    assert proc.returncode == 0
    for cmd in ("ocr", "parse", "ground"):
        assert cmd in proc.stdout
    for cmd in ("ocr", "parse", "ground"):
        assert "Example:" in run(cmd, "--help").stdout


def test_parse_maps_issue_example_to_pixels(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text(ANSWER, encoding="utf-8")
    image = tmp_path / "page.png"
    Image.new("RGB", (1000, 500), "white").save(image)
    proc = run("parse", raw, "--image", image, "--json")
    assert proc.returncode == 0, proc.stderr
    words = json.loads(proc.stdout)["pages"][0]["words"]
    got = [(w["text"], w["bbox"]) for w in words]
    expected = [("백범로", [172, 133, 328, 170]), ("Apt", [280, 300, 327, 325])]
    for (t, b), (te, be) in zip(got, expected):
        assert t == te and all(abs(x - y) <= 1 for x, y in zip(b, be))
    # The same normalised answer for an image the model saw upscaled: same original pixels.
    upscaled = tmp_path / "small.png"
    Image.new("RGB", (100, 50), "white").save(upscaled)
    proc = run("parse", raw, "--image", upscaled, "--json")
    small = [w["bbox"] for w in json.loads(proc.stdout)["pages"][0]["words"]]
    assert small == [[17, 13, 33, 17], [28, 30, 33, 33]]
    # stdin and --size work too; plain text is the reading-order text
    proc = run("parse", "-", "--size", "1000x500", stdin=ANSWER)
    assert proc.stdout.split() == ["백범로", "Apt"]


def test_parse_grounding(tmp_path):
    proc = run("parse", "-", "--size", "200x100", "--grounding", "--json",
               stdin="<obj>sign</obj><bbox>0.1, 0.2, 0.3, 0.4<delim>0.5, 0.5, 1.0, 1.0</bbox>")
    assert json.loads(proc.stdout) == [{"phrase": "sign", "bbox": [20, 20, 60, 40]}, {"phrase": "sign", "bbox": [100, 50, 200, 100]}]


@pytest.mark.slow
def test_ocr_json_with_tiny_model(tiny_model_dir, samples):
    proc = run(samples / "receipt.png", "--json", "--model", tiny_model_dir, "--keep-raw", *FAST)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["version"] and doc["model"] == str(tiny_model_dir)
    page = doc["pages"][0]
    assert (page["width"], page["height"]) == Image.open(samples / "receipt.png").size
    for key in ("index", "words", "lines", "blocks", "text", "truncated", "raw"):
        assert key in page


@pytest.mark.slow
def test_several_inputs_to_output_folder_and_bad_file_exit_code(tiny_model_dir, samples, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really")
    out = tmp_path / "out"
    proc = run("ocr", samples / "receipt.png", bad, samples / "dense-page.png", "-o", out, "--json",
               "--model", tiny_model_dir, "--batch-size", "2", *FAST)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "broken.jpg" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["dense-page.json", "receipt.json", "varco-ocr.log.jsonl"]
    doc = json.loads((out / "receipt.json").read_text(encoding="utf-8"))
    assert doc["source"].endswith("receipt.png")


def test_missing_model_is_one_line_naming_the_fix(samples, tmp_path):
    proc = run(samples / "receipt.png", "--model", tmp_path / "no-such-model", env={"HF_HUB_OFFLINE": "1"})
    (line,) = assert_one_line_error(proc, 2)
    assert "--model PATH" in line and "HF_HUB_OFFLINE" in line


def test_missing_input_file(tmp_path):
    proc = run(tmp_path / "nope.png", "--model", tmp_path)
    (line,) = assert_one_line_error(proc, 1)
    assert "nope.png" in line and "no such file" in line


def test_usage_error_exit_code():
    proc = run("parse", "-", stdin=ANSWER)  # neither --image nor --size
    assert_one_line_error(proc, 2)
