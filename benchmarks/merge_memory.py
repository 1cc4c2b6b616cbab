"""Peak memory of `training.merge` (streaming) against loading every input whole.

Writes N synthetic sharded checkpoints (float32, 3 shards each) to a temporary folder, then in fresh
processes: (1) `merge_checkpoints` with a given output shard size, (2) the naive merge that loads every
input's full state dict and averages. Peak = growth of the process's resident high-water mark
(VmHWM, reset after imports) over the resident size before the merge.

Usage: python benchmarks/merge_memory.py [--inputs 2 --tensors-per-shard 4 --shard-size 200MB]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status (Linux only)")


def _reset_peak_mib() -> float:
    """Reset the resident high-water mark to the current resident size (Linux clear_refs 5) and return it,
    so import-time transients do not hide the measured step's peak."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmRSS")


def write_inputs(folder: Path, inputs: int, tensors_per_shard: int) -> list[Path]:
    import torch
    from safetensors.torch import save_file

    paths = []
    for k in range(inputs):
        model = folder / f"in{k}"
        model.mkdir()
        gen = torch.Generator().manual_seed(k)
        weight_map = {}
        for s in range(3):
            tensors = {f"layer{s}.{i}.weight": torch.randn(2048, 4096, generator=gen) for i in range(tensors_per_shard)}
            name = f"model-{s + 1:05d}-of-00003.safetensors"
            save_file(tensors, str(model / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(tensors, name))
        (model / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
        (model / "config.json").write_text(json.dumps({"model_type": "bench", "architectures": ["Bench"]}))
        paths.append(model)
    return paths


def run(mode: str, inputs: list[str], out: str, shard_bytes: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch
    from safetensors.torch import load_file

    from training.merge import MergeSpec, merge_checkpoints

    baseline = _reset_peak_mib()
    if mode == "streaming":
        merge_checkpoints(MergeSpec(inputs=tuple(map(Path, inputs)), max_shard_bytes=shard_bytes), out)
    else:
        states = []
        for folder in inputs:
            state = {}
            for shard in sorted(Path(folder).glob("*.safetensors")):
                state.update(load_file(shard))
            states.append(state)
        merged = {k: sum(s[k] for s in states) / len(states) for k in states[0]}
        assert merged
        del torch
    return {"mode": mode, "peak_mib": round(_status_mib("VmHWM") - baseline, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=2)
    parser.add_argument("--tensors-per-shard", type=int, default=4, help="32 MiB float32 tensors per shard")
    parser.add_argument("--shard-size", default="200MB", help="output shard size of the streaming merge")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from training.merge import parse_size

    if args.mode:
        print(json.dumps(run(args.mode, args.paths.split(","), args.out, parse_size(args.shard_size))))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        inputs = write_inputs(Path(tmp), args.inputs, args.tensors_per_shard)
        model_mib = sum(p.stat().st_size for p in inputs[0].glob("*.safetensors")) / 2**20
        results = []
        for mode in ("streaming", "load-all"):
            cmd = [sys.executable, __file__, "--mode", mode, "--paths", ",".join(map(str, inputs)),
                   "--out", str(Path(tmp) / f"out-{mode}"), "--shard-size", args.shard_size]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{args.inputs} inputs of {model_mib:.0f} MiB each (float32, 3 shards); streaming output shards of {args.shard_size}")
    for r in results:
        print(f"{r['mode']:<10} peak {r['peak_mib']:>8.1f} MiB  ({r['peak_mib'] / model_mib:.2f} x one model)")
    print(f"ratio load-all / streaming: {results[1]['peak_mib'] / max(results[0]['peak_mib'], 1e-9):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
