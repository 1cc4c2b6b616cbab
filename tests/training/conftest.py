"""Fixtures for the training tests: tiny *separate* Qwen3 LLM and SigLIP vision checkpoints (what
`varco-train compose` reads in real use), and a tiny model composed from them.

The widths come from `varco_ocr.testing.tiny_model.build_config`, so the composed model is the same size as
the lead's tiny test model; the LLM's tokenizer deliberately lacks VARCO's tags, so composing must add them
and grow the embeddings, as it must for a real Qwen3 checkpoint's tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from varco_ocr import model_spec
from varco_ocr.testing import tiny_model

VISION_LAYERS = 3  # compose drops the last one: the composed tower has 2


def build_plain_qwen_tokenizer():
    """A byte-level BPE tokenizer with only Qwen's ChatML tokens, like a base Qwen3 checkpoint's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [model_spec.END_OF_TEXT, model_spec.IM_START, model_spec.IM_END]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(tiny_model._CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=model_spec.END_OF_TEXT,
        pad_token=model_spec.END_OF_TEXT,
        additional_special_tokens=[model_spec.IM_START, model_spec.IM_END],
    )


def write_tiny_llm(out: Path, seed: int = 1, hidden: int = 32) -> Path:
    from transformers import Qwen3ForCausalLM

    tokenizer = build_plain_qwen_tokenizer()
    text_config = tiny_model.build_config(tiny_model.build_tokenizer(), hidden=hidden).text_config
    text_config.vocab_size = len(tokenizer)
    text_config.eos_token_id = tokenizer.eos_token_id
    text_config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    Qwen3ForCausalLM(text_config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def write_tiny_vision(out: Path, seed: int = 2, hidden: int = 32, tile: int = 384) -> Path:
    """``tile`` below 384 makes a cheaper tower (tile / 16 squared patches per tile); the composed
    processor, the grid and the engine all follow the tower's image_size."""
    from transformers import SiglipImageProcessor, SiglipVisionModel

    vision_config = tiny_model.build_config(tiny_model.build_tokenizer(), hidden=hidden).vision_config
    vision_config.num_hidden_layers = VISION_LAYERS
    vision_config.image_size = tile
    torch.manual_seed(seed)
    SiglipVisionModel(vision_config).save_pretrained(out)
    SiglipImageProcessor(size={"height": tile, "width": tile}).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_parts(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-parts")
    return write_tiny_llm(root / "llm"), write_tiny_vision(root / "vision")


@pytest.fixture(scope="session")
def composed_dir(tiny_parts, tmp_path_factory) -> Path:
    """A tiny composed model on a 1x1 grid (stage 1/2 style), shared read-only by the tests."""
    from training.compose import compose_model

    llm, vision = tiny_parts
    out = tmp_path_factory.mktemp("composed") / "stage0"
    compose_model(str(llm), str(vision), out, max_grid=1)
    return out
