"""Compose a VARCO-VISION-2.0-style model (LLaVA-OneVision) from a Qwen3 LLM and a SigLIP vision encoder.

``compose_model`` loads the two checkpoints, builds a ``LlavaOnevisionForConditionalGeneration`` around them
with a freshly initialised 2-layer MLP projector (and image-newline vector), adds VARCO's special tokens,
resizes the embeddings, and writes a model folder with a processor (grid pinpoints, AnyRes rule, ChatML
template) that ``varco-train stage 1`` -- and ``varco-ocr --model`` -- load directly.

``--vision-from`` replaces the vision tower (and, on request, the projector) with the one of another composed
or trained checkpoint: the paper initialises the 1.7B model's encoder from the 14B model after stage 3.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from varco_ocr import model_spec

# Tokens the composed tokenizer must hold as atomic special tokens. "<video>" is not a VARCO tag but the
# LLaVA-OneVision processor and config need a video token id.
VIDEO_TOKEN = "<video>"
REQUIRED_TOKENS = (model_spec.IMAGE_TOKEN, *model_spec.TASK_TOKENS, VIDEO_TOKEN)
# Embedding rows are padded to a multiple of this when they must grow (tensor-core friendly, as Qwen's
# own 151,936-row embedding is).
EMBEDDING_MULTIPLE = 64
# SigLIP normalises pixels to [-1, 1]; LlavaOnevisionImageProcessor's default is CLIP's mean/std.
SIGLIP_MEAN = [0.5, 0.5, 0.5]
SIGLIP_STD = [0.5, 0.5, 0.5]

VISION_PREFIX = "model.vision_tower."
PROJECTOR_PREFIXES = ("model.multi_modal_projector.", "model.image_newline")


class ComposeError(ValueError):
    """Inputs that cannot be composed; the message names the checkpoint and the problem."""


@dataclass(frozen=True)
class ComposeReport:
    out_dir: Path
    vocab_size: int
    added_tokens: tuple[str, ...]
    vision_layers: int  # layers kept in the tower (the source's minus the last one)
    copied_from: str | None


def check_sources(sources) -> None:
    """Fail at once, naming the flag, when a checkpoint is a missing folder or a hub id that is not cached while
    the hub is unreachable or HF_HUB_OFFLINE is set (the check varco-ocr's engine makes, varco_ocr.hub).
    ``sources``: (what, flag, value) triples; None values are skipped."""
    from varco_ocr.hub import source_problem

    for what, flag, value in sources:
        problem = None if value is None else source_problem(str(value))
        if problem is None:
            continue
        advice = {
            "not_a_folder": "",
            "offline": f"; download it first (`hf download {value}`, with a network) or give {flag} a local folder",
            "unreachable": f"; download it once with a network (`hf download {value}`) and set HF_HUB_OFFLINE=1, "
                           f"or give {flag} a local folder",
        }[problem.kind]
        raise ComposeError(f"cannot load {what} ({flag}): {problem.reason}{advice}")


def _vision_config_from(path: str):
    from transformers import AutoConfig, SiglipConfig, SiglipVisionConfig

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ComposeError(f"{path}: cannot read a vision config ({str(e).splitlines()[0]})") from None
    if isinstance(config, SiglipConfig):
        return config.vision_config
    if isinstance(config, SiglipVisionConfig):
        return config
    if getattr(config, "model_type", "") == "llava_onevision":
        return config.vision_config
    raise ComposeError(
        f"{path}: vision checkpoint must be SigLIP / fixed-resolution SigLIP2 (got model_type {config.model_type!r}; "
        "NaFlex SigLIP2 has no fixed tiles and does not fit LLaVA-OneVision's AnyRes grid)"
    )


def _image_normalisation(vision_path: str) -> tuple[list[float], list[float]]:
    pre = Path(vision_path) / "preprocessor_config.json"
    if pre.is_file():
        d = json.loads(pre.read_text(encoding="utf-8"))
        if "image_mean" in d and "image_std" in d:
            return list(d["image_mean"]), list(d["image_std"])
    return SIGLIP_MEAN, SIGLIP_STD


def add_special_tokens(tokenizer) -> tuple[str, ...]:
    """Add the VARCO tokens the tokenizer lacks, as special (atomic) tokens; return those added."""
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    missing = [t for t in REQUIRED_TOKENS if t not in vocab]
    if missing:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    return tuple(missing)


def embedding_rows_needed(current_rows: int, tokenizer_len: int) -> int:
    """Grow to hold every token id (padded to EMBEDDING_MULTIPLE); never shrink: Qwen's embedding already
    has spare rows (151,936 for 151,669 tokens) and shrinking would drop trained rows."""
    if tokenizer_len <= current_rows:
        return current_rows
    return -(-tokenizer_len // EMBEDDING_MULTIPLE) * EMBEDDING_MULTIPLE


def build_processor(tokenizer, vision_config, vision_path: str | None, max_grid: int, anyres: str):
    from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

    tile = int(vision_config.image_size)
    mean, std = _image_normalisation(vision_path) if vision_path else (SIGLIP_MEAN, SIGLIP_STD)
    image_processor = LlavaOnevisionImageProcessor(
        size={"height": tile, "width": tile},
        image_grid_pinpoints=model_spec.grid_pinpoints(max_grid, tile),
        image_mean=mean,
        image_std=std,
    )
    tokenizer.chat_template = model_spec.CHAT_TEMPLATE
    return LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(image_mean=mean, image_std=std),
        num_image_tokens=(tile // int(vision_config.patch_size)) ** 2,
        vision_feature_select_strategy="full",
        chat_template=model_spec.CHAT_TEMPLATE,
        vision_aspect_ratio=anyres,
    )


def _read_tensors(folder: str | Path, wanted) -> dict[str, Any]:
    """Tensors of a HF folder's safetensors whose (normalised) name satisfies ``wanted``, read one shard
    at a time so copying a 400M-parameter tower out of a 14B checkpoint never loads the 14B model."""
    from safetensors import safe_open

    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ComposeError(f"{folder}: no *.safetensors weights found")
    out = {}
    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            for key in sf.keys():
                name = normalise_checkpoint_key(key)
                if wanted(name):
                    out[name] = sf.get_tensor(key)
    return out


def normalise_checkpoint_key(key: str) -> str:
    """Saved LLaVA-OneVision names -> this transformers' module names (older releases saved
    ``vision_tower.*`` / ``multi_modal_projector.*`` / ``language_model.model.*`` at the top level)."""
    for old, new in (
        ("vision_tower.", "model.vision_tower."),
        ("multi_modal_projector.", "model.multi_modal_projector."),
        ("image_newline", "model.image_newline"),
        ("language_model.lm_head.", "lm_head."),
        ("language_model.model.", "model.language_model."),
    ):
        if key.startswith(old):
            return new + key[len(old):]
    return key


def copy_vision_from(model, source: str | Path, with_projector: bool) -> list[str]:
    """Overwrite the vision tower (and optionally projector + image newline) with ``source``'s tensors.
    Every target tensor must be present with the same shape; the first mismatch is named."""
    prefixes = (VISION_PREFIX, *PROJECTOR_PREFIXES) if with_projector else (VISION_PREFIX,)
    tensors = _read_tensors(source, lambda name: name.startswith(prefixes))
    state = model.state_dict()
    targets = [k for k in state if k.startswith(prefixes)]
    for key in targets:
        if key not in tensors:
            raise ComposeError(f"{source}: has no tensor {key} (is it a composed LLaVA-OneVision checkpoint?)")
        if tuple(tensors[key].shape) != tuple(state[key].shape):
            raise ComposeError(
                f"{source}: {key} has shape {tuple(tensors[key].shape)}, the composed model needs {tuple(state[key].shape)}"
            )
    missing, unexpected = model.load_state_dict({k: tensors[k] for k in targets}, strict=False)
    assert not unexpected, unexpected
    return targets


def compose_model(
    llm: str,
    vision: str | None,
    out_dir: str | Path,
    vision_from: str | None = None,
    vision_from_projector: bool = False,
    max_grid: int = model_spec.DEFAULT_MAX_GRID,
    anyres: str = model_spec.DEFAULT_ANYRES,
    seed: int = 0,
) -> ComposeReport:
    # Before importing torch: without a network the hub client retries for about a minute per file.
    check_sources([("the language model", "--llm", llm), ("the vision encoder", "--vision", vision),
                   ("the vision tower", "--vision-from", vision_from)])
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        GenerationConfig,
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        SiglipVisionModel,
    )

    if vision is None and vision_from is None:
        raise ComposeError("give --vision (a SigLIP checkpoint) or --vision-from (a composed checkpoint)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(llm)
        language_model = AutoModelForCausalLM.from_pretrained(llm, dtype="auto")
    except (OSError, ValueError) as e:
        raise ComposeError(f"{llm}: cannot load the language model ({str(e).splitlines()[0]})") from None
    text_config = language_model.config
    if text_config.model_type not in ("qwen3", "qwen2", "qwen3_moe"):
        raise ComposeError(f"{llm}: expected a Qwen3 language model (got model_type {text_config.model_type!r})")

    # The vision config: from --vision, else from the source checkpoint whose tower we copy. In both
    # cases it is the full-depth config of a SigLIP encoder, except for an already composed source.
    source_is_composed = vision is None
    source_config = _vision_config_from(vision if vision is not None else str(vision_from))
    vision_config = source_config.__class__.from_dict(source_config.to_dict())  # a copy we may edit
    vision_config.vision_use_head = False
    if not source_is_composed:
        # Penultimate layer, as LLaVA-OneVision does. The original LLaVA-OneVision reads SigLIP's
        # hidden_states[-2] (mm_vision_select_layer=-2); HF's llava-onevision checkpoints instead *drop*
        # the last encoder layer (26 of so400m's 27) and read hidden_states[-1] with strategy "full"
        # (no CLS token to remove). Same features, one layer less compute and memory, and it is the
        # layout HF's LlavaOnevision code and VARCO's released config expect, so we do the same.
        # hidden_states[-1] is taken before the post-layernorm, exactly like hidden_states[-2] was.
        vision_config.num_hidden_layers -= 1
        if vision_config.num_hidden_layers < 1:
            raise ComposeError(f"{vision}: the vision encoder needs at least 2 layers to drop the last one")

    added = add_special_tokens(tokenizer)
    tokenizer.eos_token = model_spec.IM_END  # chat turns end with <|im_end|>; generation stops there
    if tokenizer.pad_token is None:
        tokenizer.pad_token = model_spec.END_OF_TEXT
    config = LlavaOnevisionConfig(
        vision_config=vision_config.to_dict() | {"model_type": "siglip_vision_model"},
        text_config=text_config.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids(model_spec.IMAGE_TOKEN),
        video_token_index=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN),
        image_grid_pinpoints=model_spec.grid_pinpoints(max_grid, int(vision_config.image_size)),
        vision_aspect_ratio=anyres,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
    )
    torch.manual_seed(seed)  # the projector and image-newline initialisation are reproducible
    model = LlavaOnevisionForConditionalGeneration(config).to(language_model.dtype)

    # Language model and head.
    model.model.language_model.load_state_dict(language_model.model.state_dict())
    model.lm_head.load_state_dict(language_model.lm_head.state_dict())
    del language_model
    # Vision tower: all layers but the last.
    if vision is not None:
        try:
            tower = SiglipVisionModel.from_pretrained(vision, dtype=model.dtype)
        except (OSError, ValueError) as e:
            raise ComposeError(f"{vision}: cannot load the vision encoder ({str(e).splitlines()[0]})") from None
        dropped = re.compile(rf"(^|\.)(encoder\.layers\.{vision_config.num_hidden_layers}\.|head\.)")
        state = {k: v for k, v in tower.state_dict().items() if not dropped.search(k)}
        model.model.vision_tower.load_state_dict(state)
        del tower
    if vision_from is not None:
        copy_vision_from(model, vision_from, vision_from_projector)
    elif vision_from_projector:
        raise ComposeError("--with-projector needs --vision-from")

    rows = embedding_rows_needed(model.get_input_embeddings().weight.shape[0], len(tokenizer))
    if rows != model.get_input_embeddings().weight.shape[0]:
        # mean_resizing: new rows start at the mean of the trained ones (with matching covariance), so
        # the new tags do not dominate the softmax before training has seen them.
        model.resize_token_embeddings(rows, mean_resizing=True)
    model.config.text_config.vocab_size = rows

    processor = build_processor(tokenizer, vision_config, vision, max_grid, anyres)
    model_spec.configure_resolution(processor, model.config, max_grid, anyres)
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids(model_spec.IM_END), tokenizer.convert_tokens_to_ids(model_spec.END_OF_TEXT)],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    _replace_dir(tmp, out)
    return ComposeReport(out, rows, added, vision_config.num_hidden_layers, str(vision_from) if vision_from else None)


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move a finished folder into place; an existing target is replaced only after the new one is complete."""
    import shutil

    if out.exists():
        old = out.with_name(f".{out.name}.old")
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
