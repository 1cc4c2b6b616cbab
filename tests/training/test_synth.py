"""Synthetic pages: exact word boxes, rotation bookkeeping, and CORD/ICDAR files the eval loaders read."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from PIL import Image

from varco_ocr.eval.datasets import load_cord, load_icdar2015
from varco_ocr.parsing import parse_ocr_answer
from training.synth import SynthError, SynthOptions, _font_pool, generate, render_page, rotate_point


def test_clean_page_boxes_hold_all_the_ink_and_every_box_has_ink():
    options = SynthOptions(pages=1, languages=("ko", "en"), clean=True, system_fonts=False)
    page = render_page(0, "receipt", options, random.Random(3), _font_pool(False))
    dark = np.asarray(page.image.convert("L")) < 128
    inside = np.zeros_like(dark)
    assert len(page.words) >= 5 and any(any("가" <= c <= "힣" for c in w.text) for w in page.words)
    for w in page.words:
        x1, y1, x2, y2 = w.bbox
        assert dark[y1:y2, x1:x2].any(), w.text
        # Boxes are the font's advance box (what OCR ground truth means by a word box); a glyph such
        # as "0" may overhang its advance by a pixel or two of anti-aliased ink.
        inside[max(0, y1 - 2) : y2 + 2, max(0, x1 - 2) : x2 + 2] = True
    assert not (dark & ~inside).any()  # no ink outside the word boxes


def test_rotate_point_follows_pil_rotation():
    im = Image.new("L", (120, 80), 0)
    im.paste(255, (90, 20, 94, 24))  # a 4x4 dot centred at (92, 22)
    for angle in (7.0, -5.0):
        rotated = im.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        ys, xs = np.nonzero(np.asarray(rotated) > 64)
        x, y = rotate_point(92, 22, angle, im.size, rotated.size)
        assert abs(xs.mean() + 0.5 - x) < 0.6 and abs(ys.mean() + 0.5 - y) < 0.6


def test_generated_set_loads_as_cord_and_icdar_and_matches_the_training_targets(tmp_path):
    summary = generate(tmp_path, SynthOptions(pages=6, seed=1, system_fonts=False))
    assert summary.pages == 6
    records = [json.loads(l) for l in (tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    cord = load_cord(tmp_path / "cord")
    icdar = load_icdar2015(tmp_path / "icdar")
    assert len(records) == len(cord) == len(icdar) == 6
    total = 0
    for record, c, i in zip(records, cord, icdar):
        answer = parse_ocr_answer(record["conversations"][1]["value"])
        texts = sorted(w.text for w in answer.words)
        assert texts == sorted(r.text for r in c.regions) == sorted(r.text for r in i.regions)
        assert (tmp_path / record["images"][0]).is_file()
        with Image.open(tmp_path / record["images"][0]) as im:
            assert (c.width, c.height) == im.size
        total += len(texts)
    assert total == summary.words


def test_bad_options_are_refused():
    with pytest.raises(SynthError, match="--lang"):
        SynthOptions(languages=("fr",)).validate()
    with pytest.raises(SynthError, match="--pages"):
        SynthOptions(pages=0).validate()
