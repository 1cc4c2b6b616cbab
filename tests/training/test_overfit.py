"""End to end: compose a tiny model, train it (`varco-train stage 2`) on a handful of synthetic pages until
it knows them, and read those pages back with `varco-ocr` on the exported folder: the words must come back
exactly and the boxes within a few pixels. This is what proves the chat template, the loss masks (answer
and <|im_end|>), export and inference agree.

The vision tower is composed with 128 px tiles (64 patches each) instead of 384 px so the run is cheap on
CPU; the processor, grid and engine follow the tower's tile size, exactly as they do at 384.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from training.compose import compose_model
from training.synth import SynthOptions, generate

from conftest import write_tiny_llm, write_tiny_vision

PAGES = 3
STEPS = 250


def _run(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900, **kw)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    return proc


@pytest.mark.slow
def test_tiny_model_learns_synthetic_pages_and_varco_ocr_reads_them_back(tmp_path):
    parts = tmp_path / "parts"
    compose_model(str(write_tiny_llm(parts / "llm", hidden=64)), str(write_tiny_vision(parts / "vision", hidden=64, tile=128)), tmp_path / "stage0", max_grid=1)
    data = tmp_path / "synth"
    generate(data, SynthOptions(pages=PAGES, seed=0, width=256, height=96, max_words=3, kinds=("sign",), clean=True, system_fonts=False))

    run = tmp_path / "run"
    # The projector learns 10x faster: the pages' answers differ from their first token on, and only the
    # image can tell which page is shown; at one LR the model first memorises the answers' continuations and
    # takes many more steps to start reading the image.
    settings = {"global_batch_size": PAGES, "micro_batch_size": PAGES, "max_grid": 1, "activation_checkpointing": False,
                "schedule": "constant", "warmup_ratio": 0.0, "lr": 3e-3, "vision_lr": 3e-3, "projector_lr": 3e-2, "save_every": 0, "log_every": 25}
    cmd = [sys.executable, "-m", "training", "stage", "2", "--model", str(tmp_path / "stage0"), "--data", str(data / "train.jsonl"),
           "-o", str(run), "--max-steps", str(STEPS)]
    for k, v in settings.items():
        cmd += ["--set", f"{k}={v}"]
    _run(cmd)
    losses = [json.loads(l)["loss"] for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.01 < losses[0], losses

    records = [json.loads(l) for l in (data / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    images = [str(data / r["images"][0]) for r in records]
    out = tmp_path / "read"
    _run([sys.executable, "-m", "varco_ocr", "ocr", *images, "-o", str(out), "--format", "json", "--model", str(run),
          "--min-long-side", "0", "--max-grid", "1", "--max-new-tokens", "160"])
    from varco_ocr.document import Document
    from varco_ocr.parsing import parse_ocr_answer, to_pixels
    from PIL import Image

    for record in records:
        image = data / record["images"][0]
        with Image.open(image) as im:
            width, height = im.size
        expected = [(w.text, to_pixels(w.box, width, height)) for w in parse_ocr_answer(record["conversations"][1]["value"]).words]
        docs = [Document.load(p) for p in out.rglob("*.json")]
        doc = next(d for d in docs if os.path.samefile(d.source, image))
        got = [(w.text, w.bbox) for w in doc.pages[0].words]
        assert [t for t, _ in got] == [t for t, _ in expected], (record["id"], got, expected)
        for (_, g), (_, e) in zip(got, expected):
            assert max(abs(a - b) for a, b in zip(g, e)) <= 3, (record["id"], g, e)
