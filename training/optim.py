"""Which parameters train, in which groups, with which optimizer.

Three groups with their own learning rates (paper Table 2: the vision tower learns at 2e-6 while the rest
learns at 1e-5): ``vision`` (the SigLIP tower), ``projector`` (the 2-layer MLP and the image-newline vector
created with it at compose time) and ``language`` (Qwen3, its embeddings and head). Stage 1 trains the
projector group only.

8-bit AdamW (``optimizer: adamw8bit``), with the fallback stated once:
- not sharded (one process, or one process per model replica): bitsandbytes' ``AdamW8bit``, which also
  steps CPU tensors; if bitsandbytes is missing, torchao's ``AdamW8bit``; else plain AdamW, with a warning.
- FSDP2 (parameters are DTensors): bitsandbytes cannot step DTensor shards (verified-facts), so torchao's
  ``AdamW8bit`` is used, which supports DTensor; if torchao is missing, plain AdamW, with a warning.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger("training.optim")

GROUPS = ("vision", "projector", "language")
VISION_PREFIX = "model.vision_tower."
PROJECTOR_PREFIXES = ("model.multi_modal_projector.", "model.image_newline")


def group_of(name: str) -> str:
    """Parameter name (as ``named_parameters`` of a LlavaOnevisionForConditionalGeneration gives it)
    -> its group."""
    if name.startswith(VISION_PREFIX):
        return "vision"
    if name.startswith(PROJECTOR_PREFIXES):
        return "projector"
    return "language"


def set_trainable(model: torch.nn.Module, trainable: str) -> dict[str, int]:
    """``projector``: only the projector group requires grad; ``all``: everything. Returns parameter
    counts per group that will train."""
    counts = dict.fromkeys(GROUPS, 0)
    for name, p in model.named_parameters():
        group = group_of(name)
        # SigLIP's post-layernorm is never used: LLaVA-OneVision reads the penultimate layer's features,
        # taken before it. It would get no gradient and no optimizer state, which a resumed optimizer
        # (whose state is initialised for every trainable parameter) could not find in the checkpoint.
        unused = group == "vision" and ".post_layernorm." in name
        p.requires_grad_((trainable == "all" or group == "projector") and not unused)
        if p.requires_grad:
            counts[group] += p.numel()
    return counts


def _no_decay(name: str, p: torch.Tensor) -> bool:
    # Biases, norms and the newline vector: decaying them towards zero only hurts (as in most LLM recipes).
    return p.ndim < 2 or name.endswith(".bias") or "norm" in name


def param_groups(model: torch.nn.Module, lr: float, vision_lr: float | None, projector_lr: float | None, weight_decay: float) -> list[dict[str, Any]]:
    lrs = {"vision": vision_lr if vision_lr is not None else lr, "projector": projector_lr if projector_lr is not None else lr, "language": lr}
    buckets: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            buckets.setdefault((group_of(name), _no_decay(name, p)), []).append(p)
    groups = []
    for group in GROUPS:
        for no_decay in (False, True):
            params = buckets.get((group, no_decay))
            if params:
                groups.append(
                    {"name": group + ("_no_decay" if no_decay else ""), "params": params, "lr": lrs[group], "weight_decay": 0.0 if no_decay else weight_decay}
                )
    if not groups:
        raise ValueError("no trainable parameters")
    return groups


@dataclass(frozen=True)
class OptimizerChoice:
    name: str  # "torch.AdamW", "bitsandbytes.AdamW8bit" or "torchao.AdamW8bit"
    reason: str


def choose_optimizer(requested: str, sharded: bool, available: set[str] | None = None) -> OptimizerChoice:
    """Apply the fallback rule above. ``available`` (module names) is for tests; by default it is what
    is importable here."""
    if available is None:
        available = {m for m in ("bitsandbytes", "torchao") if importlib.util.find_spec(m) is not None}
    if requested == "adamw":
        return OptimizerChoice("torch.AdamW", "requested")
    if requested != "adamw8bit":
        raise ValueError(f"unknown optimizer {requested!r}")
    if not sharded and "bitsandbytes" in available:
        return OptimizerChoice("bitsandbytes.AdamW8bit", "requested")
    if "torchao" in available:
        why = "FSDP2 shards are DTensors, which bitsandbytes cannot step" if sharded else "bitsandbytes is not installed"
        return OptimizerChoice("torchao.AdamW8bit", why)
    why = "FSDP2 shards are DTensors (bitsandbytes cannot step them) and torchao is not installed" if sharded else "neither bitsandbytes nor torchao is installed"
    return OptimizerChoice("torch.AdamW", f"8-bit AdamW unavailable: {why}; using 32-bit AdamW")


def build_optimizer(groups: list[dict[str, Any]], requested: str, sharded: bool, betas=(0.9, 0.999), eps: float = 1e-8) -> tuple[torch.optim.Optimizer, OptimizerChoice]:
    choice = choose_optimizer(requested, sharded)
    if choice.reason != "requested":
        log.warning("optimizer: %s (%s)", choice.name, choice.reason)
    if choice.name == "bitsandbytes.AdamW8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(groups, betas=betas, eps=eps), choice
    if choice.name == "torchao.AdamW8bit":
        from torchao.optim import AdamW8bit

        return AdamW8bit(groups, betas=betas, eps=eps), choice
    # foreach (not fused): works for CPU tensors and DTensors alike.
    return torch.optim.AdamW(groups, betas=betas, eps=eps, foreach=True), choice
