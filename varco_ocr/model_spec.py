"""What makes a LLaVA-OneVision checkpoint a VARCO-VISION-2.0 one: tokens, chat template, resolution.

One place for these facts, used by the tiny test model, by the engine (to set the grid at load time) and
by the training package (compose/export), so the three can never disagree.
"""

from __future__ import annotations

from typing import Any

DEFAULT_MODEL = "NCSOFT/VARCO-VISION-2.0-1.7B-OCR"
KNOWN_MODELS = (
    "NCSOFT/VARCO-VISION-2.0-1.7B-OCR",
    "NCSOFT/VARCO-VISION-2.0-1.7B",
    "NCSOFT/VARCO-VISION-2.0-14B",
)

IMAGE_TOKEN = "<image>"
OCR_PROMPT = "<ocr>"
GROUNDING_PROMPT = "<gro>"
# VARCO's task tags. They are *special* tokens in the real tokenizer, which is why answers must be
# decoded with skip_special_tokens=False (verified-facts: decoding with True silently deletes them).
TASK_TOKENS = ("<ocr>", "<char>", "</char>", "<bbox>", "</bbox>", "<gro>", "<obj>", "</obj>", "<delim>")
SPECIAL_TOKENS = (IMAGE_TOKEN, *TASK_TOKENS)
# ChatML turn delimiters of the Qwen3 tokenizer.
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"

TILE_SIZE = 384  # SigLIP2 so400m patch16-384: one tile is 24 x 24 = 576 patches
DEFAULT_MAX_GRID = 6  # up to 6 x 6 tiles of 384 px
DEFAULT_MAX_NEW_TOKENS = 8192  # token budget of one OCR answer (a dense page needs several thousand)
DEFAULT_ANYRES = "anyres_max_9"

DEFAULT_SYSTEM_PROMPT = "You are VARCO-VISION, created by NC AI. "

# ChatML as VARCO-VISION-2.0 ships it: an identity system prompt unless the conversation brings its
# own, images as `<image>` placeholders followed by a newline (as VLMEvalKit feeds it), and the
# assistant turn wrapped in {% generation %} so `return_assistant_tokens_mask=True` marks exactly the
# tokens training should learn, the end-of-turn token included (otherwise the model never learns to stop).
CHAT_TEMPLATE = (
    "{%- set nl = '\\n' -%}"
    "{%- if messages[0]['role'] != 'system' -%}"
    "<|im_start|>system{{ nl }}" + DEFAULT_SYSTEM_PROMPT.strip() + "<|im_end|>{{ nl }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "<|im_start|>{{ message['role'] }}{{ nl }}"
    "{%- if message['content'] is string -%}"
    "{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}"
    "{%- for part in parts -%}{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}{%- endfor -%}"
    "<|im_end|>"
    "{%- endgeneration -%}"
    "{{ nl }}"
    "{%- else -%}"
    "{%- for part in parts -%}"
    "{%- if part['type'] == 'image' -%}<image>{{ nl }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "<|im_end|>{{ nl }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant{{ nl }}{%- endif -%}"
)


def grid_pinpoints(max_grid: int = DEFAULT_MAX_GRID, tile: int = TILE_SIZE) -> list[list[int]]:
    """Every (height, width) made of 1..max_grid tiles on each side, as VARCO's evaluation sets it."""
    if max_grid < 1:
        raise ValueError("max_grid must be at least 1")
    return [[i * tile, j * tile] for i in range(1, max_grid + 1) for j in range(1, max_grid + 1)]


def configure_resolution(processor: Any, model_config: Any | None, max_grid: int, anyres: str = DEFAULT_ANYRES) -> None:
    """Set the tiling grid and pooling rule in both places that must agree (verified-facts): the image
    processor (and the processor's own aspect-ratio rule, used to count image tokens) and the model
    config, which the model uses to rebuild the tile grid from the features."""
    size = processor.image_processor.size  # a dict or transformers' SizeDict
    tile = int(min(v for v in (getattr(size, "height", None), getattr(size, "width", None)) if v)) if not isinstance(size, dict) else int(min(size.values()))
    pins = grid_pinpoints(max_grid, tile)
    processor.image_processor.image_grid_pinpoints = pins
    processor.vision_aspect_ratio = anyres
    if model_config is not None:
        model_config.image_grid_pinpoints = pins
        model_config.vision_aspect_ratio = anyres
