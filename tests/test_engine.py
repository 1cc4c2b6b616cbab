"""The local engine on the tiny random-weight model: the real transformers path, end to end."""

import pytest
import torch
from PIL import Image

from varco_ocr import OCREngine, model_spec
from varco_ocr.engine import Generation
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
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ModelLoadError) as info:
        OCREngine(missing)
    # A path the user typed is not sent to the hub as a repo id, and no hub advice follows.
    assert str(info.value) == f"no such model folder: {missing}"


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_library_errors_speak_of_the_parameter_not_the_cli_flag(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        OCREngine("varco-ocr-tests/not-a-cached-model")
    message = str(info.value)
    assert "OCREngine(model=...)" in message and "--model" not in message
    assert "--model PATH" in info.value.cli_message() and "OCREngine" not in info.value.cli_message()
    # HF_HUB_OFFLINE is already set: advising to set it would point the wrong way.
    assert "set HF_HUB_OFFLINE" not in message and "HF_HUB_OFFLINE is set" in message
    assert "hf download varco-ocr-tests/not-a-cached-model" in message


def test_unreachable_hub_fails_at_once(monkeypatch):
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="unreachable") as info:
        OCREngine("varco-ocr-tests/not-a-cached-model")
    assert time.monotonic() - start < 5
    assert "and set HF_HUB_OFFLINE=1" in str(info.value)
