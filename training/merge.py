"""Checkpoint merging: weighted averaging (SWA-style, the paper's merge-train-merge) and TIES.

Streams: the merge walks the tensor names one at a time, reading that one tensor from each input in
turn (``safe_open`` per read, so no memory map keeps already-read pages resident), so the resident set is
about one output shard (``--max-shard-size``) plus a few tensors, whatever the number of inputs
(``benchmarks/merge_memory.py``: 0.6x one model's size for 3 inputs, vs 4.1x when loading them whole).

- ``average``: sum_i w_i * theta_i with weights normalised to sum 1 (uniform when not given).
- ``ties`` (Yadav et al., 2023, "TIES-Merging") against a base: task vectors tau_i = theta_i - base are
  *trimmed* to their largest-magnitude ``density`` fraction, a sign is *elected* per element as the
  sign of sum_i w_i * trimmed_i, and the *disjoint mean* averages only the entries that agree with it:
  merged = base + lambda * sum_{i agrees} w_i trimmed_i / sum_{i agrees} w_i. Trimming is per tensor (as
  mergekit does) because a global top-k over all tensors would need the whole model in memory at once.

Inputs must agree on architecture, tensor names and shapes; the first disagreement is reported by name.
Computation is float32; each output tensor takes the first input's dtype. The output folder is written
beside its final name and renamed into place, with the first input's config, tokenizer and processor files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 1000**3  # transformers' default shard size
METHODS = ("average", "ties")
_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}


class MergeError(ValueError):
    """Inputs that cannot be merged; the message is one complete user-facing sentence."""


@dataclass(frozen=True)
class MergeSpec:
    """What to merge and how. ``weights`` are per input (None: uniform / all 1 for TIES)."""

    inputs: tuple[Path, ...]
    method: str = "average"
    weights: tuple[float, ...] | None = None
    base: Path | None = None
    density: float = 0.2
    scale: float = 1.0  # TIES' lambda
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise MergeError(f"unknown merge method {self.method!r}; choose one of {', '.join(METHODS)}")
        if len(self.inputs) < (1 if self.method == "ties" else 2):
            raise MergeError(f"{self.method} needs at least {1 if self.method == 'ties' else 2} checkpoints, got {len(self.inputs)}")
        if self.weights is not None:
            if len(self.weights) != len(self.inputs):
                raise MergeError(f"got {len(self.weights)} weights for {len(self.inputs)} checkpoints")
            if any(not math.isfinite(w) or w <= 0 for w in self.weights):
                raise MergeError(f"weights must be positive numbers, got {list(self.weights)}")
        if self.method == "ties":
            if self.base is None:
                raise MergeError("ties merging needs --base (the checkpoint the task vectors are measured from)")
            if not 0.0 < self.density <= 1.0:
                raise MergeError(f"density must be in (0, 1], got {self.density}")
        if self.max_shard_bytes < 1:
            raise MergeError(f"max shard size must be positive, got {self.max_shard_bytes}")

    def normalised_weights(self) -> list[float]:
        raw = list(self.weights) if self.weights is not None else [1.0] * len(self.inputs)
        if self.method == "ties":
            return raw  # TIES divides by the agreeing weights' sum per element instead
        total = sum(raw)
        return [w / total for w in raw]


@dataclass
class CheckpointTensors:
    """Lazy access to one model folder's safetensors tensors (single file or sharded with an index)."""

    folder: Path
    file_of: dict[str, Path]
    _headers: dict[Path, dict[str, tuple[str, list[int]]]] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, folder: Path) -> CheckpointTensors:
        from safetensors import safe_open

        folder = Path(folder)
        if not folder.is_dir():
            raise MergeError(f"{folder} is not a model folder")
        index = folder / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise MergeError(f"{index} is not a safetensors index ({exc})") from None
            file_of = {name: folder / shard for name, shard in weight_map.items()}
            missing = sorted({p for p in file_of.values() if not p.is_file()})
            if missing:
                raise MergeError(f"{folder}: shard {missing[0].name} named in {INDEX_FILE} is missing")
        elif (folder / SINGLE_FILE).is_file():
            try:
                with safe_open(folder / SINGLE_FILE, framework="pt") as handle:
                    file_of = {name: folder / SINGLE_FILE for name in handle.keys()}  # noqa: SIM118 (not a dict)
            except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for corrupt headers
                raise MergeError(f"{folder / SINGLE_FILE} is not a readable safetensors file ({exc})") from None
        else:
            raise MergeError(f"{folder} has no {SINGLE_FILE} or {INDEX_FILE}")
        return cls(folder=folder, file_of=file_of)

    def _header(self, path: Path) -> dict[str, tuple[str, list[int]]]:
        """name -> (dtype code, shape) of one shard, read once from its header."""
        from safetensors import safe_open

        if path not in self._headers:
            with safe_open(path, framework="pt") as handle:
                self._headers[path] = {
                    n: (handle.get_slice(n).get_dtype(), list(handle.get_slice(n).get_shape())) for n in handle.keys()  # noqa: SIM118 (a safe_open handle, not a dict)
                }
        return self._headers[path]

    def shape(self, name: str) -> list[int]:
        return self._header(self.file_of[name])[name][1]

    def dtype(self, name: str) -> torch.dtype:
        """From the header, without reading the data."""
        code = self._header(self.file_of[name])[name][0]
        return _SAFETENSORS_DTYPES.get(code) or self.tensor(name).dtype

    def tensor(self, name: str) -> torch.Tensor:
        # Opened per read, not kept open: a kept memory map leaves every page already read resident
        # (measured: merging two 384 MiB models then peaked at +900 MiB instead of about one model).
        from safetensors import safe_open

        with safe_open(self.file_of[name], framework="pt") as handle:
            return handle.get_tensor(name)

    def architecture(self) -> tuple[str, tuple[str, ...]]:
        config = self.folder / "config.json"
        if not config.is_file():
            raise MergeError(f"{self.folder} has no config.json")
        try:
            data = json.loads(config.read_text())
        except json.JSONDecodeError as exc:
            raise MergeError(f"{config} is not valid JSON ({exc})") from None
        return str(data.get("model_type")), tuple(data.get("architectures") or ())


def check_compatible(checkpoints: Sequence[CheckpointTensors]) -> list[str]:
    """Tensor names in merge order; raises MergeError naming the first architecture/name/shape mismatch."""
    first = checkpoints[0]
    names = list(first.file_of)
    for other in checkpoints[1:]:
        if other.architecture() != first.architecture():
            raise MergeError(
                f"cannot merge: {other.folder} is {other.architecture()} but {first.folder} is {first.architecture()}"
            )
        missing = [n for n in names if n not in other.file_of]
        if missing:
            raise MergeError(f"cannot merge: tensor {missing[0]!r} of {first.folder} is missing from {other.folder}")
        extra = [n for n in other.file_of if n not in first.file_of]
        if extra:
            raise MergeError(f"cannot merge: tensor {extra[0]!r} of {other.folder} is missing from {first.folder}")
        for name in names:
            if other.shape(name) != first.shape(name):
                raise MergeError(
                    f"cannot merge: tensor {name!r} has shape {first.shape(name)} in {first.folder} "
                    f"but {other.shape(name)} in {other.folder}"
                )
    return names


def trim_to_density(task_vector: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``round(density * n)`` (at least 1) largest-magnitude entries, zero the rest.

    Entries tied with the smallest kept magnitude are all kept (a threshold, not an arbitrary tie-break).
    """
    n = task_vector.numel()
    keep = max(1, round(density * n))
    if keep >= n:
        return task_vector.clone()
    magnitude = task_vector.abs().flatten()
    threshold = torch.kthvalue(magnitude, n - keep + 1).values
    return torch.where(task_vector.abs() >= threshold, task_vector, torch.zeros_like(task_vector))


def ties_merge_tensor(
    base: torch.Tensor, tuned: Sequence[torch.Tensor], weights: Sequence[float], density: float, scale: float = 1.0
) -> torch.Tensor:
    """TIES for one tensor, float32. Reads each tuned tensor twice (elect, then disjoint mean) instead
    of stacking them, so memory stays at a few tensors whatever the number of inputs."""
    base = base.float()
    elected = torch.zeros_like(base)
    for weight, theta in zip(weights, tuned):
        elected.add_(trim_to_density(theta.float() - base, density), alpha=weight)
    sign = torch.sign(elected)
    total = torch.zeros_like(base)
    weight_sum = torch.zeros_like(base)
    for weight, theta in zip(weights, tuned):
        trimmed = trim_to_density(theta.float() - base, density)
        agrees = (torch.sign(trimmed) == sign) & (trimmed != 0)
        total.add_(torch.where(agrees, trimmed, 0.0), alpha=weight)
        weight_sum.add_(agrees.float(), alpha=weight)
    merged = torch.where(weight_sum > 0, total / weight_sum.clamp_min(1e-30), 0.0)
    return base + scale * merged


def average_tensor(tuned: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    total = tuned[0].float() * weights[0]
    for i in range(1, len(tuned)):  # one input tensor resident at a time
        total.add_(tuned[i].float(), alpha=weights[i])
    return total


def _merged_tensors(spec: MergeSpec, names: list[str], inputs: list[CheckpointTensors],
                    base: CheckpointTensors | None) -> Iterator[tuple[str, torch.Tensor]]:
    weights = spec.normalised_weights()
    for name in names:
        # Lazy readers: each input tensor is materialised only while it is being folded in.
        tuned = _LazyTensors(inputs, name)
        dtype = inputs[0].dtype(name)
        if not dtype.is_floating_point:
            # Integer buffers (position ids and the like) are not weights: they must agree, and are copied.
            first = tuned[0]
            for i in range(1, len(inputs)):
                if not torch.equal(tuned[i], first):
                    raise MergeError(f"cannot merge: non-float tensor {name!r} differs between {inputs[0].folder} and {inputs[i].folder}")
            yield name, first
            continue
        if spec.method == "average":
            merged = average_tensor(tuned, weights)
        else:
            merged = ties_merge_tensor(base.tensor(name), tuned, weights, spec.density, spec.scale)
        yield name, merged.to(dtype)


class _LazyTensors(Sequence):
    def __init__(self, inputs: list[CheckpointTensors], name: str):
        self._inputs, self._name = inputs, name

    def __len__(self) -> int:
        return len(self._inputs)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            raise TypeError("slicing would load several inputs at once; index one at a time")
        return self._inputs[i].tensor(self._name)


def _copy_side_files(source: Path, dest: Path) -> None:
    """Config, generation config, tokenizer, processor and chat template files: everything but weights."""
    for item in source.iterdir():
        if item.name.endswith(".safetensors") or item.name == INDEX_FILE or item.name.startswith("."):
            continue
        if item.is_file():
            shutil.copy2(item, dest / item.name)
        elif item.is_dir():
            shutil.copytree(item, dest / item.name)


def merge_checkpoints(spec: MergeSpec, out_dir: str | os.PathLike) -> Path:
    """Merge ``spec.inputs`` into a new loadable model folder ``out_dir`` (must not exist or be empty)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MergeError(f"output {out} already exists and is not an empty folder")
    inputs = [CheckpointTensors.open(p) for p in spec.inputs]
    base = CheckpointTensors.open(spec.base) if spec.method == "ties" else None
    names = check_compatible(inputs + ([base] if base is not None else []))

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shard_files: list[Path] = []
        shard_of: dict[str, int] = {}
        buffer: dict[str, torch.Tensor] = {}
        buffer_bytes = 0
        total_bytes = 0

        def flush() -> None:
            nonlocal buffer, buffer_bytes
            if buffer:
                path = staging / f"shard-{len(shard_files):05d}.tmp"
                save_file(buffer, str(path), metadata={"format": "pt"})
                shard_files.append(path)
                buffer, buffer_bytes = {}, 0

        for name, tensor in _merged_tensors(spec, names, inputs, base):
            size = tensor.numel() * tensor.element_size()
            if buffer and buffer_bytes + size > spec.max_shard_bytes:
                flush()
            buffer[name] = tensor.contiguous()
            shard_of[name] = len(shard_files)
            buffer_bytes += size
            total_bytes += size
        flush()

        if len(shard_files) == 1:
            shard_files[0].rename(staging / SINGLE_FILE)
        else:
            final_names = [f"model-{i + 1:05d}-of-{len(shard_files):05d}.safetensors" for i in range(len(shard_files))]
            for path, final in zip(shard_files, final_names):
                path.rename(staging / final)
            index = {"metadata": {"total_size": total_bytes}, "weight_map": {n: final_names[i] for n, i in shard_of.items()}}
            (staging / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        _copy_side_files(inputs[0].folder, staging)
        record = {
            "method": spec.method,
            "inputs": [str(p) for p in spec.inputs],
            "weights": spec.normalised_weights(),
            **({"base": str(spec.base), "density": spec.density, "scale": spec.scale} if spec.method == "ties" else {}),
        }
        (staging / "merge_info.json").write_text(json.dumps(record, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # empty, checked above
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def parse_weights(text: str | None) -> tuple[float, ...] | None:
    """'0.7,0.3' -> (0.7, 0.3); None stays None."""
    if text is None or not text.strip():
        return None
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise MergeError(f"--weights must be comma-separated numbers like 0.7,0.3, got {text!r}") from None


def parse_size(text: str) -> int:
    """'5GB' / '500MB' / '2GiB' / '123' (bytes) -> bytes."""
    units = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}
    cleaned = text.strip().upper()
    number = cleaned.rstrip("KMGIB")
    unit = cleaned[len(number):]
    try:
        value = float(number) * units[unit]
    except (ValueError, KeyError):
        raise MergeError(f"cannot read size {text!r}; write it like 5GB or 500MB") from None
    return int(value)
