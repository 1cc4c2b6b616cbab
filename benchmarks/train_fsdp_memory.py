"""Resident memory per process of training state (weights, gradients, AdamW moments): one process vs FSDP2
over 2 processes (torchrun, gloo, CPU).

Same model family as the trainer's (LLaVA-OneVision, Qwen3 text hidden 768 x 12 layers, SigLIP hidden 256 x
2 layers, ~100M parameters), sharded by `training.parallel.apply_fsdp` exactly as `varco-train stage` does,
optimizer from `training.optim`, loss from `LanguageModelingObjective`. Each process reports its resident
size after two optimizer steps (gradients freed), minus its resident size before the model existed: the
memory the training state holds. Text-only batches of 256 tokens keep activations out of the figure.

Usage: python benchmarks/train_fsdp_memory.py [--hidden 768 --layers 12]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path


def _trim() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc keeps them otherwise, and every rank
    first materialises the whole model before sharding it)."""
    import ctypes

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _local_bytes(tensors) -> int:
    total = 0
    for t in tensors:
        t = getattr(t, "_local_tensor", t)  # a DTensor's shard on this rank
        total += t.numel() * t.element_size()
    return total


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("Linux only")


def worker(hidden: int, layers: int) -> None:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from transformers import LlavaOnevisionForConditionalGeneration

    from varco_ocr.testing import tiny_model
    from training.optim import build_optimizer, param_groups, set_trainable
    from training.parallel import apply_fsdp, init_distributed
    from training.train import LanguageModelingObjective

    torch.set_num_threads(1)
    env = init_distributed()
    tokenizer = tiny_model.build_tokenizer()
    config = tiny_model.build_config(tokenizer, hidden=hidden, layers=layers)
    config.text_config.vocab_size = 32_000  # a realistic share of parameters in the embeddings and head
    config.text_config.num_attention_heads, config.text_config.num_key_value_heads, config.text_config.head_dim = 12, 4, 64
    config.vision_config.hidden_size, config.vision_config.intermediate_size, config.vision_config.num_attention_heads = 256, 512, 4
    _trim()
    before = _rss_mib()
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(config).train()
    set_trainable(model, "all")
    n_params = sum(p.numel() for p in model.parameters())
    if env.distributed:
        apply_fsdp(model, bf16=False)
    optimizer, _ = build_optimizer(param_groups(model, 1e-4, None, None, 0.0), "adamw", sharded=env.distributed)
    objective = LanguageModelingObjective("chunked")
    gen = torch.Generator().manual_seed(env.rank)
    for _ in range(2):
        ids = torch.randint(0, 600, (1, 256), generator=gen)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
        loss, _ = objective(model, batch)
        (loss / objective.units(batch)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _trim()
    state = _rss_mib() - before
    held = _local_bytes(model.parameters()) + _local_bytes(
        v for st in optimizer.state.values() for v in st.values() if torch.is_tensor(v) and v.numel() > 1
    )
    print("RESULT " + json.dumps({"rank": env.rank, "world": env.world_size, "state_mib": round(state, 1),
                                  "tensor_mib": round(held / 2**20, 1), "params_m": round(n_params / 1e6, 1)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.hidden, args.layers)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = [__file__, "--worker", "--hidden", str(args.hidden), "--layers", str(args.layers)]
    runs = {
        "1 process": [sys.executable, *common],
        "FSDP2, 2 processes": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *common],
    }
    rows = {}
    for name, cmd in runs.items():
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
        rows[name] = [json.loads(l[len("RESULT "):]) for l in out.splitlines() if l.startswith("RESULT ")]
    params = rows["1 process"][0]["params_m"]
    fp32_state = params * 1e6 * 16 / 2**20  # weights + grads + 2 AdamW moments, float32
    print(f"model: {params}M parameters; fp32 weights + AdamW moments = {params * 1e6 * 12 / 2**20:.0f} MiB (+ gradients while stepping: {fp32_state:.0f} MiB)")
    print("resident growth (RSS after 2 steps - before the model) | weights + AdamW moments held on the rank")
    for name, rs in rows.items():
        print(f"{name:<22} " + ", ".join(f"rank {r['rank']}: {r['state_mib']:.0f} MiB | {r['tensor_mib']:.0f} MiB" for r in sorted(rs, key=lambda r: r["rank"])))
    for key, what in (("state_mib", "resident"), ("tensor_mib", "held tensors")):
        single = rows["1 process"][0][key]
        sharded = max(r[key] for r in rows["FSDP2, 2 processes"])
        print(f"ratio 1 process / largest FSDP2 rank, {what}: {single / sharded:.2f}x")


if __name__ == "__main__":
    main()
