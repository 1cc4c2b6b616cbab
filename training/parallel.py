"""Process group, FSDP2 and activation checkpointing, applied to an unmodified HF model by functions
(as torchtitan applies parallelisms): the model code is never edited.

FSDP2: ``fully_shard`` on every Qwen3 decoder layer and every SigLIP encoder layer, then on the root (which
then owns embeddings, final norm, projector, image newline and lm_head). On CUDA the compute runs in bf16
with fp32 gradient reduction (``MixedPrecisionPolicy``); on CPU everything stays fp32, which is what lets the
2-process gloo test match single-process training to 1e-5.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistEnv:
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU); a plain process gets a 1-rank env."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        return DistEnv(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistEnv(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=device)


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_reduce_sum(value: float | int, env: DistEnv, device: torch.device | None = None) -> float:
    if not env.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device or env.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())


def shardable_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a LlavaOnevisionForConditionalGeneration: encoder layers, decoder layers."""
    inner = model.model
    tower = inner.vision_tower
    tower = getattr(tower, "vision_model", tower)  # transformers < 5 nests the encoder one level deeper
    return [*tower.encoder.layers, *inner.language_model.layers]


def apply_fsdp(model: torch.nn.Module, bf16: bool) -> torch.nn.Module:
    """Shard each block, then the root. Returns the same (now FSDP-managed) module."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    kwargs = {}
    if bf16:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    layers = shardable_layers(model)
    for i, layer in enumerate(layers):
        # The last block's parameters are needed again at once by backward: keep them gathered.
        fully_shard(layer, reshard_after_forward=i < len(layers) - 1, **kwargs)
    fully_shard(model, **kwargs)
    return model


def apply_activation_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each block's activations in backward instead of keeping them (non-reentrant
    ``torch.utils.checkpoint``, which composes with FSDP2). transformers 5.23 names it
    ``activation_checkpointing_enable``; older releases ``gradient_checkpointing_enable``."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(model, "config"):
        model.config.use_cache = False
