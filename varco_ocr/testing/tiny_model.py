"""Build a tiny random-weight VARCO-VISION-2.0 look-alike, entirely offline.

Same architecture family as the real checkpoints (LLaVA-OneVision: Qwen3 text model, SigLIP vision
tower with 384 px tiles of patch 16, 2-layer MLP projector), same processor (AnyRes 6x6 grid,
anyres_max_9), same special tokens and ChatML template; only the widths, depths and vocabulary are
tiny, so loading and a short generation take well under a second on CPU. Tests and offline trials load
it through the real `from_pretrained` path, exactly as they would load NCSOFT's weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from PIL import Image

from varco_ocr import model_spec

# A small corpus so byte-level BPE learns some merges for Latin, digits and Hangul; the byte alphabet
# makes every string encodable whatever the merges.
_CORPUS = [
    "The quick brown fox jumps over the lazy dog 0123456789 TOTAL SUBTOTAL CASH CHANGE VAT",
    "영수증 합계 부가세 현금 카드 결제 서울특별시 마포구 백범로 감사합니다 주식회사 전화",
    "Receipt Invoice Date Time Qty Price Amount Tel No. Apt Street Road www .com @ # % & * ( ) - + = / : ;",
    "대한민국 한국어 문서 인식 텍스트 위치 계약 기간 보고서 요약 질문 답변",
    "0.1 0.25 0.333 0.5 0.75 1.0 , . 1 2 3 4 5 6 7 8 9 0",
]


def build_tokenizer(vocab_size: int = 600, ordinary_tags: bool = False):
    """``ordinary_tags``: VARCO's task tags (``<char>``, ``<bbox>``, ...) become ordinary added tokens
    instead of special ones. They stay atomic, but survive decoding with ``skip_special_tokens=True``,
    which is what servers that strip special tokens (``transformers serve``) do to every answer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special_tags = () if ordinary_tags else model_spec.TASK_TOKENS
    specials = [model_spec.END_OF_TEXT, model_spec.IM_START, model_spec.IM_END, model_spec.IMAGE_TOKEN, *special_tags, "<video>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=model_spec.IM_END,
        pad_token=model_spec.END_OF_TEXT,
        additional_special_tokens=[model_spec.IM_START, model_spec.IMAGE_TOKEN, *special_tags, "<video>"],
    )
    if ordinary_tags:
        fast.add_tokens(list(model_spec.TASK_TOKENS))  # atomic, but not special
    fast.padding_side = "left"
    fast.chat_template = model_spec.CHAT_TEMPLATE
    return fast


def build_processor(tokenizer, max_grid: int = model_spec.DEFAULT_MAX_GRID):
    from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

    image_processor = LlavaOnevisionImageProcessor(
        size={"height": model_spec.TILE_SIZE, "width": model_spec.TILE_SIZE},
        image_grid_pinpoints=model_spec.grid_pinpoints(max_grid),
    )
    return LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(),
        num_image_tokens=(model_spec.TILE_SIZE // 16) ** 2,
        vision_feature_select_strategy="full",
        chat_template=model_spec.CHAT_TEMPLATE,
        vision_aspect_ratio=model_spec.DEFAULT_ANYRES,
    )


def build_config(tokenizer, hidden: int = 32, layers: int = 2, max_grid: int = model_spec.DEFAULT_MAX_GRID):
    from transformers import LlavaOnevisionConfig, Qwen3Config, SiglipVisionConfig

    text = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden // 4,
        max_position_embeddings=32768,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(model_spec.IM_END),
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = SiglipVisionConfig(
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=2,
        image_size=model_spec.TILE_SIZE,
        patch_size=16,
        vision_use_head=False,
    )
    return LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(model_spec.IMAGE_TOKEN),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=model_spec.grid_pinpoints(max_grid),
        vision_aspect_ratio=model_spec.DEFAULT_ANYRES,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        tie_word_embeddings=False,
    )


def write_tiny_model(out_dir: str | Path, seed: int = 0, hidden: int = 32, layers: int = 2, ordinary_tags: bool = False) -> Path:
    """Write a loadable model folder (config, safetensors, tokenizer, processor) to ``out_dir``
    (``ordinary_tags``: see :func:`build_tokenizer`)."""
    import torch
    from transformers import GenerationConfig, LlavaOnevisionForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(ordinary_tags=ordinary_tags)
    processor = build_processor(tokenizer)
    config = build_config(tokenizer, hidden=hidden, layers=layers)
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids(model_spec.IM_END), tokenizer.convert_tokens_to_ids(model_spec.END_OF_TEXT)],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


# A short OCR answer in VARCO's format: Latin, Hangul and digits, three entries on two lines.
TAUGHT_ANSWER = (
    "<char>TOTAL</char><bbox>0.1, 0.2, 0.45, 0.3</bbox>\n"
    "<char>합계</char><bbox>0.5, 0.21, 0.8, 0.33</bbox>\n"
    "<char>12,000</char><bbox>0.12, 0.6, 0.4, 0.7</bbox>"
)


def teach_fixed_answer(model_dir: str | Path, images: Sequence["Image.Image"], answer: str = TAUGHT_ANSWER,
                       max_steps: int = 400, lr: float = 2e-2) -> int:
    """Train the tiny model in ``model_dir`` (in place) until greedy decoding answers ``<ocr>`` with
    ``answer`` for each of ``images`` (see :func:`teach_answers`)."""
    return teach_answers(model_dir, [(im, answer) for im in images], max_steps=max_steps, lr=lr)


def teach_answers(model_dir: str | Path, examples: Sequence[tuple["Image.Image", str]], max_steps: int = 400,
                  lr: float = 2e-2, max_grid: int | None = None) -> int:
    """Train the tiny model in ``model_dir`` (in place) until greedy decoding answers ``<ocr>`` with the
    given answer for each (image, answer) pair, the images as the model sees them (already at their
    model size: ``preprocessing.prepare_for_model``), so tests get real OCR entries (words, boxes,
    token probabilities) out of the real generate path, locally and through a server. It memorises:
    other images get other (garbage) answers. ``max_grid``: the tiling the answers are taught under;
    it is saved with the model so a server loading the folder tiles the same way (the engine sets its
    own, which must then be the same). Returns the steps taken; raises RuntimeError if ``max_steps``
    were not enough."""
    import torch
    from transformers import AutoProcessor, LlavaOnevisionForConditionalGeneration

    processor = AutoProcessor.from_pretrained(model_dir)
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(model_dir)
    if max_grid is not None:
        model_spec.configure_resolution(processor, model.config, max_grid)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": model_spec.OCR_PROMPT}]}],
        add_generation_prompt=True,
    )
    prepared = []
    for im, answer in examples:
        full = processor(images=[[im]], text=[prompt + answer + model_spec.IM_END], return_tensors="pt")
        prompt_only = processor(images=[[im]], text=[prompt], return_tensors="pt")
        labels = full["input_ids"].clone()
        labels[:, : prompt_only["input_ids"].shape[1]] = -100  # learn the answer and its end-of-turn token only
        answer_len = full["input_ids"].shape[1] - prompt_only["input_ids"].shape[1]
        prepared.append((full, labels, prompt_only, answer, answer_len))

    def learned() -> bool:
        model.eval()
        try:
            with torch.inference_mode():
                for _, _, prompt_only, answer, answer_len in prepared:
                    out = model.generate(**prompt_only, max_new_tokens=answer_len + 2, do_sample=False)
                    text = processor.tokenizer.decode(out[0, prompt_only["input_ids"].shape[1]:], skip_special_tokens=False)
                    if text.split(model_spec.IM_END)[0] != answer or model_spec.IM_END not in text:
                        return False
            return True
        finally:
            model.train()

    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses: list[float] = []
    for step in range(1, max_steps + 1):
        inputs, labels, *_ = prepared[step % len(prepared)]
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses = (losses + [loss.item()])[-len(prepared):]
        # check (a full greedy decode of every example) only once every example's loss is low
        if max(losses) < 0.05 and step % 10 == 0 and learned():
            model.eval()
            model.save_pretrained(model_dir)
            if max_grid is not None:
                processor.save_pretrained(model_dir)
            return step
    raise RuntimeError(f"the tiny model did not learn the answers in {max_steps} steps")


# -- the taught model the end-to-end tests share ---------------------------------------------------

# The settings the taught model's answers hold for (and the tests run the engine with): both samples
# are already longer than 384 px, so they are read at their own size; one 384 px tile plus the base tile
# keeps every prompt short.
TAUGHT_MIN_LONG_SIDE = 384
TAUGHT_MAX_GRID = 1
# Blank pages (already at their model size) that answer TAUGHT_ANSWER, for servers and odd sizes.
TAUGHT_BLANK_SIZES = ((384, 96), (384, 160))
# How many of each sample's words (in reading order, from its .words.json) the model is taught: whole
# pages would take thousands of tokens to learn and to generate; a few lines exercise the same paths.
TAUGHT_SAMPLE_WORDS = {"receipt": 6, "dense-page": 5}
# The receipt is taught bottom-right first (reverse reading order), so tests see the layout put a
# model's out-of-order answer back into reading order.
TAUGHT_REVERSED = {"receipt"}


@dataclass(frozen=True)
class TaughtPage:
    """One page the taught model reads: the image file (None for a blank page of ``size``), its size,
    the words it answers in reading order (text, box in original-image pixels) and the answer."""

    name: str
    image: Path | None
    size: tuple[int, int]
    words: tuple[tuple[str, tuple[int, int, int, int]], ...]
    answer: str

    def load(self) -> "Image.Image":
        from PIL import Image

        if self.image is None:
            return Image.new("RGB", self.size, "white")
        with Image.open(self.image) as im:
            return im.convert("RGB")


def taught_pages(samples_dir: str | Path) -> list[TaughtPage]:
    """The pages :func:`write_taught_model` teaches: the first words of each sample of ``samples_dir``
    (the repository's ``samples/``, with their ``*.words.json`` truth), then the blank pages."""
    import json

    from varco_ocr.parsing import format_ocr_answer, parse_ocr_answer, to_normalised, to_pixels

    pages = []
    for name, count in TAUGHT_SAMPLE_WORDS.items():
        meta = json.loads((Path(samples_dir) / f"{name}.words.json").read_text(encoding="utf-8"))
        width, height = meta["width"], meta["height"]
        chosen = [(w["text"], to_normalised(w["bbox"], width, height)) for w in meta["words"][:count]]
        answer = format_ocr_answer(reversed(chosen) if name in TAUGHT_REVERSED else chosen)
        # the boxes a reader gets back: the answer's 3-decimal coordinates mapped to pixels
        read = {pw.text: to_pixels(pw.box, width, height) for pw in parse_ocr_answer(answer).words}
        words = tuple((text, read[text]) for text, _ in chosen)
        pages.append(TaughtPage(name, Path(samples_dir) / meta["image"], (width, height), words, answer))
    for width, height in TAUGHT_BLANK_SIZES:
        read = parse_ocr_answer(TAUGHT_ANSWER).words
        words = tuple((pw.text, to_pixels(pw.box, width, height)) for pw in read)
        pages.append(TaughtPage(f"blank-{width}x{height}", None, (width, height), words, TAUGHT_ANSWER))
    return pages


def write_taught_model(out_dir: str | Path, samples_dir: str | Path, seed: int = 0) -> Path:
    """A tiny model (task tags as ordinary tokens, so servers that strip special tokens keep them)
    taught to read :func:`taught_pages` under TAUGHT_MIN_LONG_SIDE / TAUGHT_MAX_GRID."""
    from varco_ocr.preprocessing import prepare_for_model

    out = write_tiny_model(out_dir, seed=seed, ordinary_tags=True)
    examples = [(prepare_for_model(p.load(), TAUGHT_MIN_LONG_SIDE), p.answer) for p in taught_pages(samples_dir)]
    teach_answers(out, examples, max_grid=TAUGHT_MAX_GRID, max_steps=1500)
    return out
