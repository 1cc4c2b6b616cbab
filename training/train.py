"""The training loop, shared by the SFT stages (1-3) and DPO (stage 4).

``run_training`` knows nothing about what is optimised: it takes a prepared model, a *batch source*
(``next_batch()`` -> (batch dict, sample names); ``state_dict``/``load_state_dict`` for resuming) and an
*objective* (``units(batch)`` -> how many units the loss averages over, e.g. answer tokens or preference
pairs; ``__call__(model, batch)`` -> (sum of per-unit losses, metric sums)). The SFT objective is
``LanguageModelingObjective``; ``training/dpo.py`` brings its own objective and pair batches.

One optimizer step = ``accumulation`` micro-batches on each of ``world_size`` ranks. The loss is normalised
by the number of units in the *whole global batch* (all-reduced before the first backward), so the
gradient is the same whatever the split into ranks and micro-batches: this is what makes the 2-process
FSDP run match the 1-process run, and long and short samples weigh per token as they would in one batch.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from training import checkpoint as ckpt
from training.params import TrainConfig, save_config
from training.parallel import DistEnv, all_reduce_sum, apply_activation_checkpointing, apply_fsdp, barrier, init_distributed

log = logging.getLogger("training.train")


class TrainingError(RuntimeError):
    """The run cannot continue (non-finite loss, bad data beyond budget...); the message says where."""


class BatchSource(Protocol):
    def next_batch(self) -> tuple[dict[str, torch.Tensor], list[str]]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Objective(Protocol):
    def units(self, batch: dict[str, torch.Tensor]) -> int: ...
    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]: ...


def resolve_loss_impl(loss_impl: str, device: torch.device) -> str:
    """auto: Liger's fused kernel on CUDA when installed, else the pure-torch chunked loss."""
    if loss_impl != "auto":
        return loss_impl
    if device.type == "cuda":
        try:
            import liger_kernel.transformers  # noqa: F401

            return "liger"
        except Exception:
            pass
    return "chunked"


class LanguageModelingObjective:
    """Next-token cross-entropy summed over answer tokens (labels != -100), from the final hidden states and
    the lm_head weight, without materialising the logits (``training.losses``): ``plain`` is the
    reference full-logits loss, kept for tests and benchmarks."""

    def __init__(self, loss_impl: str = "chunked", chunk_size: int = 1024):
        self.loss_impl = loss_impl
        self.chunk_size = chunk_size

    def units(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"][:, 1:] != -100).sum())

    def __call__(self, model, batch):
        from training.losses import final_hidden_states, fused_linear_cross_entropy

        inputs = {k: v for k, v in batch.items() if k != "labels"}
        hidden, weight = final_hidden_states(model, **inputs)
        hidden = hidden[:, :-1]
        labels = batch["labels"][:, 1:].to(hidden.device)
        if self.loss_impl == "plain":
            logits = (hidden @ weight.T).float()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum")
        else:
            loss = fused_linear_cross_entropy(
                hidden, weight, labels, reduction="sum", chunk_size=self.chunk_size, use_liger=self.loss_impl == "liger"
            )
        return loss, {"loss_sum": float(loss.detach())}


@dataclass
class TrainResult:
    steps_done: int
    losses: list[float] = field(default_factory=list)  # per optimizer step, global per-unit mean
    output_dir: Path | None = None


def total_steps_for(cfg: TrainConfig, dataset_size: int) -> int:
    if cfg.max_steps is not None:
        return cfg.max_steps
    return max(1, cfg.epochs * dataset_size // cfg.global_batch_size)


def load_model_and_processor(model_path: str, env: DistEnv, broadcast_from_rank0: bool = False):
    """The model in fp32 (master weights; bf16 compute comes from FSDP's mixed-precision policy on GPU).

    ``broadcast_from_rank0``: only rank 0 reads the weights; the other ranks build the model on the meta
    device (no memory) and receive their shards from rank 0 in ``prepare_model``. Without it every rank holds
    a full fp32 copy until sharding: 8 x 56 GB of host memory for the 14B model on one node."""
    from transformers import AutoConfig, AutoProcessor, GenerationConfig, LlavaOnevisionForConditionalGeneration

    try:
        processor = AutoProcessor.from_pretrained(model_path)
        if broadcast_from_rank0 and not env.is_main:
            config = AutoConfig.from_pretrained(model_path)
            with torch.device("meta"):
                model = LlavaOnevisionForConditionalGeneration(config)
            if (Path(model_path) / "generation_config.json").is_file():
                model.generation_config = GenerationConfig.from_pretrained(model_path)
        else:
            model = LlavaOnevisionForConditionalGeneration.from_pretrained(model_path, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise TrainingError(f"{model_path}: cannot load the model ({str(e).splitlines()[0]})") from None
    return model, processor


def _is_meta(model: torch.nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def prepare_model(model: torch.nn.Module, cfg: TrainConfig, env: DistEnv, broadcast_from_rank0: bool = False) -> torch.nn.Module:
    """Freeze per stage, then activation checkpointing, then FSDP2 (in that order, as torchtitan does:
    checkpoint wrappers inside the shards). With ``broadcast_from_rank0`` (see load_model_and_processor),
    rank 0's full weights are scattered into every rank's shards and its buffers (rotary frequencies,
    position ids: not in the state dict) copied to the others."""
    from training.optim import set_trainable

    counts = set_trainable(model, cfg.trainable)
    if env.is_main:
        log.info("trainable parameters per group: %s", counts)
    if cfg.activation_checkpointing:
        apply_activation_checkpointing(model)
    if not env.distributed:
        model.to(env.device)
        model.train()
        return model
    if not cfg.fsdp:
        raise TrainingError("multi-process training needs fsdp: true (no other data parallelism is implemented)")
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and env.device.type == "cuda")
    if not broadcast_from_rank0:
        model.to(env.device)
        apply_fsdp(model, bf16=bf16)
        model.train()
        return model
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    full_state = model.state_dict() if env.is_main else {}
    apply_fsdp(model, bf16=bf16)  # moves each shard to the mesh's device: no full copy on any GPU
    if _is_meta(model) or any(b.is_meta for b in model.buffers()):
        model.to_empty(device=env.device)
    set_model_state_dict(model, full_state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    del full_state
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)
    model.train()
    return model


def build_optimizer_and_scheduler(model: torch.nn.Module, cfg: TrainConfig, env: DistEnv, total_steps: int):
    from training.optim import build_optimizer, param_groups
    from training.scheduler import build_scheduler

    groups = param_groups(model, cfg.lr, cfg.vision_lr, cfg.projector_lr, cfg.weight_decay)
    optimizer, choice = build_optimizer(groups, cfg.optimizer, sharded=env.distributed, betas=cfg.betas, eps=cfg.eps)
    scheduler = build_scheduler(optimizer, total_steps, cfg.schedule, cfg.warmup_ratio, cfg.min_lr_ratio)
    return optimizer, scheduler, choice


def should_log(step: int, first_step: int, total_steps: int, every: int, since_last: float, every_seconds: float) -> bool:
    """A log line for the run's first step (a CPU step can take minutes: the user learns at once that it
    works and how fast), every ``every`` steps, the last step, and whenever ``every_seconds`` passed."""
    return (step == first_step or step == total_steps or (every > 0 and step % every == 0)
            or (every_seconds > 0 and since_last >= every_seconds))


def batch_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens the model reads in a batch (padding excluded), for tokens/s."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel()) if "input_ids" in batch else 0


def peak_memory_gib(device: torch.device) -> float:
    """Peak memory so far: CUDA memory allocated on ``device``, else this process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20


def _append_metrics(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def run_training(
    cfg: TrainConfig,
    model: torch.nn.Module,
    processor,
    batches: BatchSource,
    objective: Objective,
    env: DistEnv,
    total_steps: int,
) -> TrainResult:
    """Optimise ``objective`` for ``total_steps`` steps, resuming from ``cfg.output_dir``'s latest checkpoint."""
    out = Path(cfg.output_dir)
    accumulation = cfg.accumulation_steps(env.world_size)
    optimizer, scheduler, choice = build_optimizer_and_scheduler(model, cfg, env, total_steps)
    step = 0
    latest = ckpt.latest_checkpoint(out)
    if latest is not None:
        step, stream_state, _ = ckpt.load_checkpoint(latest, model, optimizer, scheduler, env)
        batches.load_state_dict(stream_state)
        if env.is_main:
            log.info("resumed from %s (step %d)", latest, step)
    metrics_path = out / "metrics.jsonl"
    result = TrainResult(steps_done=step, output_dir=out)
    trainable = [p for p in model.parameters() if p.requires_grad]
    first_step, last_logged = step + 1, time.perf_counter()
    while step < total_steps:
        started = time.perf_counter()
        micro = [batches.next_batch() for _ in range(accumulation)]
        units = all_reduce_sum(sum(objective.units(b) for b, _ in micro), env)
        # Every step, on every rank: whether a step is logged is decided on rank 0 alone (by the clock).
        tokens = all_reduce_sum(sum(batch_tokens(b) for b, _ in micro), env)
        if units == 0:
            raise TrainingError(f"step {step + 1}: no loss units in the global batch (every answer truncated away?)")
        loss_total = 0.0
        metric_sums: dict[str, float] = {}
        for i, (batch, names) in enumerate(micro):
            batch = {k: v.to(env.device) for k, v in batch.items()}
            if env.distributed and hasattr(model, "set_requires_gradient_sync"):
                # Reduce-scatter gradients once per step, on the last micro-batch.
                model.set_requires_gradient_sync(i == len(micro) - 1)
            loss_sum, metrics = objective(model, batch)
            if not torch.isfinite(loss_sum.detach()).all():
                raise TrainingError(
                    f"non-finite loss ({float(loss_sum.detach())}) at step {step + 1}, micro-batch {i + 1}/{len(micro)} "
                    f"on rank {env.rank}: samples {', '.join(names)}"
                )
            # FSDP averages gradients over ranks; scaling by the world size turns that into the sum the
            # global normalisation needs.
            (loss_sum * (env.world_size / units)).backward()
            loss_total += float(loss_sum.detach())
            for k, v in metrics.items():
                metric_sums[k] = metric_sums.get(k, 0.0) + v
        grad_norm = None
        if cfg.grad_clip and cfg.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
            if not math.isfinite(grad_norm):
                raise TrainingError(f"non-finite gradient norm at step {step + 1} (samples {', '.join(n for _, ns in micro for n in ns)})")
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        loss_mean = all_reduce_sum(loss_total, env) / units
        result.losses.append(loss_mean)
        result.steps_done = step
        now = time.perf_counter()
        if env.is_main and should_log(step, first_step, total_steps, cfg.log_every, now - last_logged, cfg.log_seconds):
            last_logged = now
            seconds = now - started
            memory = peak_memory_gib(env.device)
            record = {
                "step": step,
                "loss": loss_mean,
                "units": int(units),
                "lr": {g.get("name", str(j)): g["lr"] for j, g in enumerate(optimizer.param_groups)},
                "grad_norm": grad_norm,
                "seconds": round(seconds, 3),
                "tokens": int(tokens),
                "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None,
                "peak_memory_gib": round(memory, 3),
            }
            _append_metrics(metrics_path, record)
            log.info("step %d/%d loss %.6f | %s tokens/s | %.2f s/step | peak memory %.2f GiB (%s)", step, total_steps,
                     loss_mean, f"{record['tokens_per_second']:,.0f}" if seconds > 0 else "-", seconds, memory,
                     "CUDA allocated" if env.device.type == "cuda" else "process RSS")
        if (cfg.save_every and step % cfg.save_every == 0) or step == total_steps:
            ckpt.save_checkpoint(out, step, model, optimizer, scheduler, batches.state_dict(), env, keep=cfg.keep_checkpoints, extra={"optimizer": choice.name})
    return result


def _write_run_base(cfg: TrainConfig, model, processor, env: DistEnv) -> None:
    """Config + processor of the starting model in ``output_dir/base`` (export rebuilds the model from them)."""
    if not env.is_main:
        return
    base = Path(cfg.output_dir) / "base"
    if not (base / "config.json").is_file():
        tmp = base.with_name(".base.tmp")
        model.config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        tmp.rename(base)
    save_config(cfg, Path(cfg.output_dir) / "train_config.yaml")


def export_final(cfg: TrainConfig, model, processor, env: DistEnv) -> None:
    """The trained model as a plain HF folder in ``output_dir`` (the next stage's ``--model``)."""
    state = ckpt.full_model_state_dict(model)  # collective under FSDP: every rank takes part
    if env.is_main:
        import copy

        config = copy.deepcopy(model.config)
        config.use_cache = True
        ckpt.write_hf_folder(config, state, processor, cfg.output_dir, model.generation_config)
    barrier(env)


def train_stage(cfg: TrainConfig) -> TrainResult:
    """Stages 1-3: supervised fine-tuning on conversation JSON-lines."""
    from varco_ocr import model_spec
    from training.data import BadSampleBudget, ConversationEncoder, MicroBatches, PrefetchingBatches, SampleStream, read_conversations

    if not cfg.model:
        raise TrainingError("no model given (--model or `model:` in the config)")
    if not cfg.data:
        raise TrainingError("no training data given (--data or `data:` in the config)")
    if not cfg.output_dir:
        raise TrainingError("no output folder given (-o or `output_dir:` in the config)")
    from training.data import DataError

    missing = [p for p in cfg.data if not Path(p).is_file()]
    if missing:  # before the (slow) model load
        raise DataError(f"{missing[0]}: cannot open data file (not found)")
    env = init_distributed()
    torch.manual_seed(cfg.seed)
    broadcast = env.distributed and cfg.fsdp and cfg.rank0_load
    model, processor = load_model_and_processor(cfg.model, env, broadcast_from_rank0=broadcast)
    model_spec.configure_resolution(processor, model.config, cfg.max_grid, cfg.anyres)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    _write_run_base(cfg, model, processor, env)
    budget = BadSampleBudget(cfg.max_bad_samples, cfg.max_bad_fraction)
    conversations = read_conversations(cfg.data, budget, cfg.max_images_per_sample)
    encoder = ConversationEncoder(processor, cfg.context_length, cfg.overlong, budget, cfg.fixed_resolution)
    stream = SampleStream(len(conversations), cfg.seed, env.rank, env.world_size)
    batches = MicroBatches(conversations, encoder, stream, cfg.micro_batch_size, processor.tokenizer.pad_token_id)
    if cfg.prefetch_batches > 0:
        batches = PrefetchingBatches(batches, cfg.prefetch_batches)
    model = prepare_model(model, cfg, env, broadcast_from_rank0=broadcast)
    objective = LanguageModelingObjective(resolve_loss_impl(cfg.loss_impl, env.device), cfg.ce_chunk_size)
    total = total_steps_for(cfg, len(conversations))
    if env.is_main:
        log.info("stage %d: %d samples, %d steps of %d (accumulation %d x world %d)", cfg.stage, len(conversations), total, cfg.global_batch_size, cfg.accumulation_steps(env.world_size), env.world_size)
    try:
        result = run_training(cfg, model, processor, batches, objective, env, total)
    finally:
        if isinstance(batches, PrefetchingBatches):
            batches.close()
    export_final(cfg, model, processor, env)
    return result
