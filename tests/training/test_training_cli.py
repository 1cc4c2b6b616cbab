"""`varco-train`: commands run, and bad input is one line on stderr with exit status 2, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from training.cli import app

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    # The last line is the error (transformers may have drawn a loading bar before it).
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert lines[-1].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert sum(l.startswith("error: ") for l in lines) == 1
    for f in fragments:
        assert f in lines[-1], lines[-1]


def test_compose_command_writes_a_model(tiny_parts, tmp_path):
    llm, vision = tiny_parts
    result = _invoke("compose", "--llm", llm, "--vision", vision, "--max-grid", 2, "-o", tmp_path / "m")
    assert result.exit_code == 0, result.output
    assert "vision layers" in result.stdout and "<ocr>" in result.stdout
    assert json.loads((tmp_path / "m" / "config.json").read_text())["image_grid_pinpoints"] == [[384, 384], [384, 768], [768, 384], [768, 768]]


def test_bad_inputs_are_one_line_errors(composed_dir, tmp_path):
    _one_line_error(_invoke("stage", 2, "--model", composed_dir, "--data", tmp_path / "missing.jsonl", "-o", tmp_path / "o"), "missing.jsonl: cannot open data file")
    _one_line_error(_invoke("stage", 5, "--model", composed_dir), "stage must be 1, 2 or 3")
    _one_line_error(_invoke("stage", 2, "--set", "learning_rate=1"), "unknown setting 'learning_rate'")
    (tmp_path / "d.jsonl").write_text("{}\n")
    _one_line_error(_invoke("stage", 2, "--model", tmp_path / "nope", "--data", tmp_path / "d.jsonl", "-o", tmp_path / "o"), "cannot load the model")
    _one_line_error(_invoke("compose", "--llm", tmp_path / "nope", "--vision", tmp_path / "nope", "-o", tmp_path / "o"), "cannot load the language model")
    _one_line_error(_invoke("export", tmp_path, "-o", tmp_path / "o"), "not a training run folder")
    _one_line_error(_invoke("synth", "--out", tmp_path / "s", "--lang", "fr"), "--lang")


def test_synth_command(tmp_path):
    result = _invoke("synth", "--out", tmp_path, "--pages", 2, "--lang", "ko", "--kinds", "sign", "--clean")
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines()) == 2
    assert sorted(p.name for p in (tmp_path / "icdar").glob("gt_*.txt")) == ["gt_img_1.txt", "gt_img_2.txt"]


def test_python_dash_m_training_is_the_same_cli():
    proc = subprocess.run([sys.executable, "-m", "training", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "compose" in proc.stdout and "stage" in proc.stdout and "export" in proc.stdout


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("env,expected", [
    ({"HF_HUB_OFFLINE": "1"}, "it is not in the Hugging Face cache and HF_HUB_OFFLINE is set; download it first "
                              "(`hf download varco-tests/no-such-llm`, with a network) or give --llm a local folder"),
    ({"HF_ENDPOINT": "http://127.0.0.1:{port}"}, "is unreachable (Connection refused)"),
])
def test_compose_without_the_hub_fails_at_once(tmp_path, env, expected):
    import os
    import time

    port = _closed_port()
    env = {k: v.format(port=port) for k, v in env.items()}
    base = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "training", "compose", "--llm", "varco-tests/no-such-llm",
                           "--vision", "varco-tests/no-such-vision", "-o", str(tmp_path / "m")],
                          capture_output=True, text=True, timeout=300, env={**base, **env})
    elapsed = time.monotonic() - start
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: cannot load the language model (--llm): cannot load model 'varco-tests/no-such-llm'")
    assert expected in line
    # Before: 30 s (offline) and 67 s (refused) of hub retries, and torch imported to print the error.
    assert elapsed < 5, elapsed
