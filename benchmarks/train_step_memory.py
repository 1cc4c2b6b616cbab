"""Peak memory of one training step (forward + backward) with and without activation checkpointing.

A LLaVA-OneVision of the tiny test model's family, but wider and deeper (text hidden 512, 8 layers; vision
hidden 512, 8 layers), trained on one real encoded sample: a synthetic page on a 1x1 AnyRes grid (base view +
one tile = 1,176 visual tokens) and its OCR answer, through the same code the trainer uses
(`ConversationEncoder`, `LanguageModelingObjective` with the chunked loss, `apply_activation_checkpointing`).

Each variant runs in its own fresh process; its peak is the growth of the resident-set high-water mark
(VmHWM, reset after the model and batch exist) over the resident size then: "extra memory the step needed".
The loss and a gradient checksum are printed so you can see both variants computed the same thing.

Usage: python benchmarks/train_step_memory.py [--hidden 512 --layers 8 --samples 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("no-checkpointing", "activation-checkpointing")


def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status (Linux only)")


def run_variant(variant: str, hidden: int, layers: int, samples: int) -> dict:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from transformers import LlavaOnevisionForConditionalGeneration

    from varco_ocr import model_spec
    from varco_ocr.testing import tiny_model
    from training.data import BadSampleBudget, ConversationEncoder, collate, read_conversations
    from training.parallel import apply_activation_checkpointing
    from training.synth import SynthOptions, generate
    from training.train import LanguageModelingObjective

    torch.set_num_threads(1)
    tokenizer = tiny_model.build_tokenizer()
    processor = tiny_model.build_processor(tokenizer, max_grid=1)
    config = tiny_model.build_config(tokenizer, hidden=hidden, layers=layers, max_grid=1)
    config.text_config.intermediate_size = hidden * 3
    config.vision_config.intermediate_size = hidden * 3
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(config).train()
    model_spec.configure_resolution(processor, model.config, 1)
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp, SynthOptions(pages=samples, seed=0, kinds=("document",), max_words=60, system_fonts=False))
        conversations = read_conversations([Path(tmp) / "train.jsonl"], BadSampleBudget())
        encoder = ConversationEncoder(processor, 100_000, "drop", BadSampleBudget())
        batch = collate([encoder.encode(c) for c in conversations], tokenizer.pad_token_id)
    if variant == "activation-checkpointing":
        apply_activation_checkpointing(model)
    objective = LanguageModelingObjective("chunked")
    base = _status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
    started = time.perf_counter()
    loss, _ = objective(model, batch)
    (loss / objective.units(batch)).backward()
    seconds = time.perf_counter() - started
    peak = _status_mib("VmHWM") - base
    checksum = sum(float(p.grad.double().abs().sum()) for p in model.parameters() if p.grad is not None)
    return {
        "variant": variant,
        "peak_mib": round(peak, 1),
        "seconds": round(seconds, 2),
        "loss": round(float(loss) / objective.units(batch), 6),
        "grad_abs_sum": round(checksum, 4),
        "tokens": int(batch["input_ids"].numel()),
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.hidden, args.layers, args.samples)))
        return
    rows = []
    for variant in VARIANTS:
        out = subprocess.run(
            [sys.executable, __file__, "--variant", variant, "--hidden", str(args.hidden), "--layers", str(args.layers), "--samples", str(args.samples)],
            capture_output=True, text=True, check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"model: {rows[0]['parameters_m']}M parameters, batch of {args.samples} samples, {rows[0]['tokens']} tokens (padded)")
    print(f"{'variant':<26} {'peak MiB':>9} {'seconds':>8} {'loss':>10} {'grad |sum|':>12}")
    for r in rows:
        print(f"{r['variant']:<26} {r['peak_mib']:>9.1f} {r['seconds']:>8.2f} {r['loss']:>10.6f} {r['grad_abs_sum']:>12.4f}")
    print(f"ratio no-checkpointing / activation-checkpointing peak: {rows[0]['peak_mib'] / rows[1]['peak_mib']:.2f}x")


if __name__ == "__main__":
    main()
