"""The local engine, the real transformers path end to end: the random-weight tiny model for prompts and
token counts, the taught tiny model (tests/conftest.py) for what is read: words, boxes, order, confidences."""

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


@pytest.fixture(scope="module")
def taught_engine(taught):
    return OCREngine(str(taught.path), **taught.engine_args)


def words_of(page):
    return [(w.text, w.bbox) for w in page.words]


def test_ocr_reads_the_taught_words_in_reading_order_in_original_pixels(taught_engine, taught, samples):
    receipt = taught.page("receipt")
    page = taught_engine.ocr(samples / "receipt.png", index=3)
    assert (page.index, page.width, page.height, page.truncated) == (3, 440, 520, False)
    # the model answers bottom-right first; the page is in reading order, lines as on the receipt
    assert taught_engine.generate([Image.open(samples / "receipt.png").convert("RGB")], "<ocr>")[0].text.startswith("<char>35</char>")
    assert words_of(page) == list(receipt.words)
    assert [[w.text for w in line.words] for line in page.lines] == [["카페", "마포점"], ["서울특별시", "마포구", "백범로", "35"]]
    assert page.text == "카페 마포점\n서울특별시 마포구 백범로 35"
    assert all(0.5 < w.confidence <= 1.0 for w in page.words)
    # a page the model sees upscaled (192x80 -> 384x160, a taught size): boxes in the original's pixels
    small = taught_engine.ocr(Image.new("RGB", (192, 80), "white"))
    assert (small.width, small.height) == (192, 80)
    assert words_of(small) == [("TOTAL", (19, 16, 86, 24)), ("합계", (96, 17, 154, 26)), ("12,000", (23, 48, 77, 56))]


def test_confidence_is_the_chosen_tokens_probability(taught_engine, samples):
    """Each word's confidence is the minimum, over its text tokens, of the probability the model gave
    the token it chose (softmax of the logits), computed here independently by one forward pass over
    the prompt and the answer. sigmoid(max logit) or a mean would differ."""
    image = Image.open(samples / "dense-page.png").convert("RGB")
    gen = taught_engine.generate([image], "<ocr>")[0]
    page = taught_engine.page_from_generation(gen, width=image.width, height=image.height)
    tok = taught_engine.processor.tokenizer
    inputs = taught_engine.processor(images=[[image]], text=[taught_engine.prompt("<ocr>") + gen.text], return_tensors="pt")
    prompt_len = taught_engine.processor(images=[[image]], text=[taught_engine.prompt("<ocr>")], return_tensors="pt")["input_ids"].shape[1]
    with torch.inference_mode():
        logits = taught_engine.model(**inputs).logits[0]
    ids = inputs["input_ids"][0].tolist()
    probs = torch.softmax(logits.float(), dim=-1)
    expected, current = [], None
    for pos in range(prompt_len, len(ids)):
        token = tok.convert_ids_to_tokens(ids[pos])
        if token == "<char>":
            current = []
        elif token == "</char>":
            expected.append(min(current))
            current = None
        elif current is not None:
            current.append(float(probs[pos - 1, ids[pos]]))
    assert len(expected) == len(page.words) == 5
    assert [w.confidence for w in page.words] == pytest.approx(expected, abs=2e-4)
    assert min(expected) < 0.99  # not all 1.0: the comparison can tell formulas apart


def test_token_limit_flags_truncated(taught_engine, samples):
    image = Image.open(samples / "dense-page.png").convert("RGB")
    full = taught_engine.generate([image], "<ocr>")[0]
    assert not full.hit_token_limit and not full.looped and full.text.count("<char>") == 5
    # a budget that ends a few tokens into the second entry
    first_entry = full.text.split("\n")[0] + "\n"
    budget = len(taught_engine.processor.tokenizer(first_entry, add_special_tokens=False)["input_ids"]) + 3
    cut = taught_engine.generate([image], "<ocr>", max_new_tokens=budget)[0]
    assert cut.hit_token_limit and not cut.looped and full.text.startswith(cut.text)
    page = taught_engine.page_from_generation(cut, width=image.width, height=image.height)
    assert page.truncated and words_of(page) == [("VARCO-VISION-2.0", (43, 39, 170, 59))]


def test_batch_equals_one_by_one(taught_engine, taught, samples):
    """Pages of different sizes (different prompt lengths: left padding matters) and answers of
    different lengths (finished rows are padded while others generate)."""
    images = [
        Image.open(samples / "receipt.png"),
        Image.new("RGB", (384, 96), "white"),
        Image.open(samples / "dense-page.png"),
        Image.new("RGB", (384, 160), "white"),
    ]
    names = ["receipt", "blank-384x96", "dense-page", "blank-384x160"]
    one_by_one = [taught_engine.ocr(im, index=i) for i, im in enumerate(images)]
    assert [words_of(p) for p in one_by_one] == [list(taught.page(n).words) for n in names]
    assert not any(p.truncated for p in one_by_one)
    batched = taught_engine.ocr_batch(images, batch_size=4, indices=[0, 1, 2, 3])
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


def _pages(samples):
    return [
        Image.open(samples / "receipt.png"),
        Image.new("RGB", (200, 90), (240, 240, 240)),
        Image.open(samples / "dense-page.png"),
        Image.new("RGB", (90, 300), (250, 250, 250)),
        Image.open(samples / "receipt.png").rotate(90, expand=True),
    ]


def test_prefetch_on_and_off_give_the_same_pages(taught_engine, taught, samples):
    """The next batch is prepared in a thread with a copy of the processor: the pages (the taught
    words, boxes, confidences) are those of the engine preparing every batch itself."""
    images = [Image.open(samples / "receipt.png"), Image.new("RGB", (384, 96), "white"),
              Image.open(samples / "dense-page.png"), Image.new("RGB", (384, 160), "white")]
    names = ["receipt", "blank-384x96", "dense-page", "blank-384x160"]
    results = {}
    try:
        for prefetch in (True, False):
            taught_engine.prefetch = prefetch
            results[prefetch] = taught_engine.ocr_batch(images, batch_size=2, indices=list(range(4)))
    finally:
        taught_engine.prefetch = True
    assert [words_of(p) for p in results[True]] == [list(taught.page(n).words) for n in names]
    assert results[True] == results[False]


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


def test_ocr_batches_equals_ocr_batch_per_batch(taught_engine, taught, samples):
    """The overlapped stream gives each batch the pages ocr_batch gives it: the taught words of pages
    of several sizes (not pages the random model reads as nothing), indices and dpis passed through."""
    names = ["receipt", "blank-384x96", "dense-page", "blank-384x160", "receipt"]
    images = [Image.open(samples / f"{n}.png") if not n.startswith("blank-") else
              Image.new("RGB", tuple(int(v) for v in n.removeprefix("blank-").split("x")), "white") for n in names]
    batches = [PageBatch(images[:2], indices=[4, 5], tag="a"), PageBatch(images[2:], dpis=[300.0, None, 72.0], tag="b")]
    out = list(taught_engine.ocr_batches(iter(batches)))
    assert [b.tag for b, _ in out] == ["a", "b"]
    assert out[0][1] == taught_engine.ocr_batch(images[:2], batch_size=2, indices=[4, 5])
    assert out[1][1] == taught_engine.ocr_batch(images[2:], batch_size=3, dpis=[300.0, None, 72.0])
    pages = out[0][1] + out[1][1]
    assert [words_of(p) for p in pages] == [list(taught.page(n).words) for n in names]
    assert [(p.index, p.dpi) for p in pages] == [(4, None), (5, None), (0, 300.0), (0, None), (0, 72.0)]  # no indices: 0
