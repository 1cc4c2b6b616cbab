"""Resumable training checkpoints and export of a plain HF model folder.

Layout of a run folder (``output_dir``)::

    train_config.yaml             the resolved config of the run
    base/                         config + processor of the model the run started from (export needs them)
    checkpoints/step-00000040/    torch.distributed.checkpoint (DCP) shards: model + optimizer, one file
                                  per rank, loadable at any world size; plus
        trainer.json              step, scheduler state, finished flag
        stream-rank{r}.json       each rank's position in its data stream
    checkpoints/latest            name of the newest complete checkpoint
    config.json, *.safetensors, processor files   the final model (written at the end of the run)

Atomicity: every rank writes into ``step-N.tmp``; after a barrier rank 0 renames it to ``step-N`` and only
then rewrites ``latest`` (through ``write_atomic``). A run killed at any point leaves either the previous
``latest`` or the new one, never a half-written checkpoint under a final name. Older checkpoints beyond
``keep`` are deleted after the new one is in place.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from varco_ocr.document import write_atomic
from training.parallel import DistEnv, barrier

CHECKPOINTS = "checkpoints"
LATEST = "latest"


class CheckpointError(RuntimeError):
    pass


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINTS


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    root = checkpoint_root(output_dir)
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text(encoding="utf-8").strip()
    if not (path / "trainer.json").is_file():
        raise CheckpointError(f"{pointer} points to {path}, which is not a complete checkpoint")
    return path


def _state_dicts(model, optimizer):
    from torch.distributed.checkpoint.state_dict import get_state_dict

    return get_state_dict(model, optimizer)


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    stream_state: dict[str, Any],
    env: DistEnv,
    keep: int = 2,
    extra: dict[str, Any] | None = None,
) -> Path:
    import torch.distributed.checkpoint as dcp

    root = checkpoint_root(output_dir)
    final = root / f"step-{step:08d}"
    tmp = root / f"step-{step:08d}.tmp"
    if env.is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier(env)
    model_sd, optim_sd = _state_dicts(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    write_atomic(tmp / f"stream-rank{env.rank}.json", json.dumps(stream_state))
    if env.is_main:
        trainer = {"step": step, "scheduler": scheduler.state_dict(), "world_size": env.world_size, **(extra or {})}
        write_atomic(tmp / "trainer.json", json.dumps(trainer))
    barrier(env)
    if env.is_main:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        write_atomic(root / LATEST, final.name)
        for old in sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(env)
    return final


def load_checkpoint(path: Path, model, optimizer, scheduler, env: DistEnv) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Restore model, optimizer and scheduler in place; return (step, this rank's stream state, trainer.json)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    trainer = json.loads((path / "trainer.json").read_text(encoding="utf-8"))
    stream_file = path / f"stream-rank{env.rank}.json"
    if trainer.get("world_size", 1) != env.world_size or not stream_file.is_file():
        raise CheckpointError(
            f"{path} was written by {trainer.get('world_size')} processes; resume it with the same number "
            f"(this run has {env.world_size})"
        )
    model_sd, optim_sd = _state_dicts(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    scheduler.load_state_dict(trainer["scheduler"])
    return int(trainer["step"]), json.loads(stream_file.read_text(encoding="utf-8")), trainer


def full_model_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor, unsharded, on CPU (collective under FSDP: call it on every rank)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def write_hf_folder(config, state_dict: dict[str, torch.Tensor], processor, out_dir: str | Path, generation_config=None) -> Path:
    """A model folder ``from_pretrained`` and ``varco-ocr --model`` load: safetensors, config, processor.
    The weights go into a model built on the meta device, so the export holds one copy of them."""
    from transformers import LlavaOnevisionForConditionalGeneration

    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.export.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    with torch.device("meta"):
        model = LlavaOnevisionForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    missing = [k for k in missing if k not in getattr(model, "_tied_weights_keys", {}) and "lm_head" not in k]
    if missing or unexpected:
        raise CheckpointError(f"state dict does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if config.tie_word_embeddings:
        model.tie_weights()
    if generation_config is not None:
        model.generation_config = generation_config
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    # Same-folder rename: the final files appear all at once. Checkpoints or other run files already in
    # `out` stay where they are.
    out.mkdir(parents=True, exist_ok=True)
    for f in tmp.iterdir():
        f.replace(out / f.name)
    tmp.rmdir()
    return out


def export_checkpoint(run_dir: str | Path, out_dir: str | Path, step: int | None = None) -> Path:
    """``varco-train export RUN -o OUT``: load the latest (or given) checkpoint of a run into the run's
    base model and write a plain HF folder. Runs in one process whatever the training world size (DCP
    reshards on load)."""
    import torch.distributed.checkpoint as dcp
    from transformers import AutoProcessor, GenerationConfig, LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    run = Path(run_dir)
    base = run / "base"
    if not (base / "config.json").is_file():
        raise CheckpointError(f"{run}: not a training run folder (no base/config.json)")
    path = (checkpoint_root(run) / f"step-{step:08d}") if step is not None else latest_checkpoint(run)
    if path is None or not (path / "trainer.json").is_file():
        raise CheckpointError(f"{run}: no complete checkpoint found" + (f" for step {step}" if step else ""))
    config = LlavaOnevisionConfig.from_pretrained(base)
    model = LlavaOnevisionForConditionalGeneration(config)
    state = {"model": model.state_dict()}
    dcp.load(state, checkpoint_id=str(path))
    processor = AutoProcessor.from_pretrained(base)
    generation_config = GenerationConfig.from_pretrained(base) if (base / "generation_config.json").is_file() else None
    return write_hf_folder(config, state["model"], processor, out_dir, generation_config)
