"""The local engine on the tiny random-weight model: the real transformers path, end to end."""

import threading

import pytest
import torch
from PIL import Image

from varco_ocr import OCREngine, model_spec
from varco_ocr.engine import Generation, PageBatch
from varco_ocr.errors import ModelLoadError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    # A small upscale target keeps the tiny model's prompt short; the rule itself is tested elsewhere.
    return OCREngine(str(tiny_model_dir), max_new_tokens=24, min_long_side=384, max_grid=2)


def test_prompt_is_one_user_turn_image_then_ocr(engine):
    prompt = engine.prompt(model_spec.OCR_PROMPT)
    assert prompt.endswith("<|im_start|>user\n<image>\n<ocr><|im_end|>\n<|im_start|>assistant\n")
    assert prompt.count("<|im_start|>user") == 1


def test_2304_square_costs_5832_visual_tokens_in_processor_and_model(tiny_model_dir):
    engine = OCREngine(str(tiny_model_dir), max_new_tokens=1)  # defaults: 2304, 6x6, anyres_max_9
    image = Image.new("RGB", (2304, 2304), "white")
    inputs = engine.processor(images=[[image]], text=[engine.prompt("<ocr>")], return_tensors="pt")
    n_prompt = int((inputs["input_ids"] == engine.model.config.image_token_index).sum())
    with torch.inference_mode():
        feats = engine.model.model.get_image_features(
            pixel_values=inputs["pixel_values"],
            image_sizes=inputs["image_sizes"],
            batch_num_images=inputs["batch_num_images"],
            vision_aspect_ratio=engine.model.config.vision_aspect_ratio,
        )
    feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
    n_model = sum(f.shape[0] for f in (feats if isinstance(feats, (list, tuple)) else [feats]))
    assert n_prompt == n_model == 5832


def test_ocr_returns_page_in_original_pixels(engine):
    page = engine.ocr(Image.new("RGB", (300, 120), "white"), index=3)
    assert (page.index, page.width, page.height) == (3, 300, 120)
    for w in page.words:
        assert 0 <= w.bbox[0] <= w.bbox[2] <= 300 and 0 <= w.bbox[1] <= w.bbox[3] <= 120
        assert w.confidence is None or 0.0 <= w.confidence <= 1.0


def test_token_limit_flags_truncated(engine):
    gen = engine.generate([Image.new("RGB", (384, 384), "white")], "<ocr>", max_new_tokens=3)[0]
    assert isinstance(gen, Generation)
    assert gen.hit_token_limit or gen.looped or len(gen.text) < 3


def test_batch_equals_one_by_one(engine, samples):
    images = [
        Image.open(samples / "receipt.png"),
        Image.new("RGB", (200, 90), (240, 240, 240)),
        Image.open(samples / "dense-page.png"),
    ]
    one_by_one = [engine.ocr(im, index=i) for i, im in enumerate(images)]
    batched = engine.ocr_batch(images, batch_size=3, indices=[0, 1, 2])
    assert batched == one_by_one


def test_keep_raw_and_page_assembly_from_a_known_answer(engine):
    gen = Generation(
        text="<char>백범로</char><bbox>0.172, 0.266, 0.328, 0.341</bbox>\n<char>Apt</char><bbox>0.28, 0.601, 0.327, 0.651</bbox>",
        hit_token_limit=False,
        looped=False,
        confidences=(0.9, 0.42),
    )
    page = engine.page_from_generation(gen, width=1000, height=500)
    assert [(w.text, w.confidence) for w in page.words] == [("백범로", 0.9), ("Apt", 0.42)]
    assert page.words[0].bbox == (172, 133, 328, 170)
    assert not page.truncated and page.raw is None
    looped = engine.page_from_generation(Generation("<char>a</char>", False, True), width=10, height=10)
    assert looped.truncated


def test_not_a_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="--model PATH"):
        OCREngine(str(tmp_path / "nowhere"))


def _pages(samples):
    return [
        Image.open(samples / "receipt.png"),
        Image.new("RGB", (200, 90), (240, 240, 240)),
        Image.open(samples / "dense-page.png"),
        Image.new("RGB", (90, 300), (250, 250, 250)),
        Image.open(samples / "receipt.png").rotate(90, expand=True),
    ]


def test_prefetch_on_and_off_give_the_same_pages(tiny_model_dir, samples):
    """The next batch is prepared in a thread with a copy of the processor: the raw answers, words,
    boxes and confidences are those of the engine preparing every batch itself."""
    images = _pages(samples)
    results = {}
    for prefetch in (True, False):
        eng = OCREngine(str(tiny_model_dir), max_new_tokens=24, min_long_side=384, max_grid=2, keep_raw=True, prefetch=prefetch)
        results[prefetch] = eng.ocr_batch(images, batch_size=2, indices=list(range(5)))
    assert results[True] == results[False]
    assert [p.raw for p in results[True]] == [p.raw for p in results[False]] and all(p.raw for p in results[True])


def test_the_next_batch_is_prepared_while_this_one_generates(engine, samples, monkeypatch):
    """While the first batch generates, the second one's processor call has started (in the
    prefetch thread): generation waits for it, which would time out if preparation came after."""
    second_prepared = threading.Event()
    prepared_in = []
    model_inputs, generate_inputs = engine.model_inputs, engine.generate_inputs

    def recording_inputs(*args, **kwargs):
        out = model_inputs(*args, **kwargs)
        prepared_in.append(threading.current_thread().name)
        if len(prepared_in) == 2:
            second_prepared.set()
        return out

    calls = []

    def waiting_generate(inputs, *args, **kwargs):
        calls.append(second_prepared.wait(60) if not calls else True)
        return generate_inputs(inputs, *args, **kwargs)

    monkeypatch.setattr(engine, "model_inputs", recording_inputs)
    monkeypatch.setattr(engine, "generate_inputs", waiting_generate)
    pages = engine.ocr_batch(_pages(samples)[:4], batch_size=2)
    assert len(pages) == 4 and calls == [True, True]
    assert set(prepared_in) == {"varco-ocr-prefetch"}


def test_ocr_batches_equals_ocr_batch_per_batch(engine, samples):
    images = _pages(samples)
    batches = [PageBatch(images[:2], indices=[4, 5], tag="a"), PageBatch(images[2:], dpis=[300.0, None, 72.0], tag="b")]
    out = list(engine.ocr_batches(iter(batches)))
    assert [b.tag for b, _ in out] == ["a", "b"]
    assert out[0][1] == engine.ocr_batch(images[:2], batch_size=2, indices=[4, 5])
    assert out[1][1] == engine.ocr_batch(images[2:], batch_size=3, dpis=[300.0, None, 72.0])
