"""Training configuration: one typed dataclass, loaded from a stage recipe (YAML) and overridden from the
command line.

The recipes under ``training/configs/{14b,1.7b}/stage{1..4}.yaml`` carry the VARCO-VISION-2.0 paper's
Table 2 (trainable parts, global batch, context length, learning rates, schedule, max grid, max visual
tokens). Every field can be overridden: named flags of ``varco-train stage`` for the common ones and
``--set key=value`` for any other, parsed with the field's own type so a typo is an error, not a new key.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).parent / "configs"
MODEL_SIZES = ("1.7b", "14b")
TRAINABLE_CHOICES = ("projector", "all")
SCHEDULES = ("cosine", "constant")
OPTIMIZERS = ("adamw", "adamw8bit")
LOSS_IMPLEMENTATIONS = ("auto", "plain", "chunked", "liger")
OVERLONG_RULES = ("drop", "truncate")
PRECISIONS = ("auto", "fp32", "bf16")


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the file or key."""


@dataclass
class TrainConfig:
    # --- what to train, on what, where to write ---
    stage: int = 2
    model: str = ""  # a composed (stage 0) or trained HF folder, e.g. the previous stage's output
    data: list[str] = field(default_factory=list)  # conversation JSON-lines files
    output_dir: str = ""
    # --- Table 2 ---
    trainable: str = "all"  # "projector" (stage 1: the connector only) or "all"
    global_batch_size: int = 128  # reached by gradient accumulation: micro x accumulation x world size
    micro_batch_size: int = 1
    context_length: int = 16384
    lr: float = 1e-5  # language model (and projector unless projector_lr is set)
    vision_lr: float | None = 2e-6  # None: same as lr
    projector_lr: float | None = None  # None: same as lr
    schedule: str = "cosine"
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    max_grid: int = 6  # AnyRes grid of up to max_grid x max_grid tiles
    anyres: str = "anyres_max_9"  # pool the tile features down to 9 tiles' worth (paper: (9+1) x 576)
    # Table 2's visual-token budget per image, kept as the recipe's record: the processor derives the real
    # count from max_grid and anyres (plus one newline token per feature row, which Table 2 does not count).
    max_visual_tokens: int = 5760
    fixed_resolution: int | None = None  # stage 1: every image resized to this square size first
    max_images_per_sample: int = 12  # stage 3: multi-image samples get one base tile per image
    # --- optimisation ---
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables
    epochs: int = 1
    max_steps: int | None = None  # bound a run (smoke tests, quick trials)
    seed: int = 0
    # --- memory techniques ---
    fsdp: bool = True  # under torchrun with more than one process; ignored in a single process
    activation_checkpointing: bool = True
    rank0_load: bool = True  # under FSDP: only rank 0 reads the weights, the others get their shards from it
    precision: str = "auto"  # auto: bf16 mixed precision on CUDA, fp32 on CPU
    loss_impl: str = "auto"  # auto: Liger on CUDA+Triton, chunked otherwise
    ce_chunk_size: int = 1024  # tokens per chunk of the chunked cross-entropy
    # --- data robustness ---
    overlong: str = "drop"  # what to do with samples longer than context_length (see training/data.py)
    max_bad_samples: int = 100  # missing/corrupt images and malformed lines skipped up to this many
    max_bad_fraction: float = 0.01  # ... and up to this fraction of the data set; beyond either, abort
    prefetch_batches: int = 2  # micro-batches encoded ahead in a background thread (0: encode in the loop)
    # --- bookkeeping ---
    save_every: int = 500  # steps between checkpoints (0: only at the end)
    keep_checkpoints: int = 2
    log_every: int = 1  # steps between log lines / metrics records (the first and last step are always logged)
    log_seconds: float = 60.0  # ... and a line at least this often, however slow the steps (0: steps only)

    # Derived quantities -------------------------------------------------------------------------
    def accumulation_steps(self, world_size: int) -> int:
        per_step = self.micro_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ConfigError(
                f"global_batch_size {self.global_batch_size} is not a multiple of micro_batch_size "
                f"{self.micro_batch_size} x world size {world_size}"
            )
        return self.global_batch_size // per_step

    def validate(self) -> "TrainConfig":
        choices = {
            "trainable": TRAINABLE_CHOICES,
            "schedule": SCHEDULES,
            "optimizer": OPTIMIZERS,
            "loss_impl": LOSS_IMPLEMENTATIONS,
            "overlong": OVERLONG_RULES,
            "precision": PRECISIONS,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} must be one of {', '.join(allowed)} (got {getattr(self, key)!r})")
        for key in ("global_batch_size", "micro_batch_size", "context_length", "max_grid", "epochs", "ce_chunk_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1 (got {getattr(self, key)})")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be at least 1 (got {self.max_steps})")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive (got {self.lr})")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1) (got {self.warmup_ratio})")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


def _coerce(key: str, value: Any) -> Any:
    """Convert a YAML or command-line value to the field's declared type (strings parsed)."""
    hint = _HINTS[key]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    optional = origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and type(None) in args
    if optional:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            s = str(value).lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"not a boolean: {value!r}")
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(f"not an integer: {value!r}")
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
        if origin is list:
            items = value.split(",") if isinstance(value, str) else list(value)
            return [str(v) for v in items if str(v)]
        if origin is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            if len(items) != len(args):
                raise ValueError(f"expected {len(args)} values")
            return tuple(t(v) for t, v in zip(args, items))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}: {e}") from None
    raise ConfigError(f"{key}: unsupported type {hint}")


def apply_overrides(config: TrainConfig, overrides: dict[str, Any], source: str = "override") -> TrainConfig:
    """Return a copy of ``config`` with ``overrides`` applied; unknown keys are an error naming ``source``."""
    values = {}
    for key, value in overrides.items():
        key = key.replace("-", "_")
        if key not in _FIELDS:
            raise ConfigError(f"{source}: unknown setting {key!r}")
        values[key] = _coerce(key, value)
    return dataclasses.replace(config, **values)


def parse_set_options(items: list[str]) -> dict[str, str]:
    """``["lr=1e-4", "schedule=constant"]`` -> dict; the values are coerced later by field type."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value (got {item!r})")
        out[key.strip()] = value.strip()
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults, then the YAML file (if any), then ``overrides``; validated."""
    import yaml  # the `train` extra; imported here so `varco_ocr` never needs it

    config = TrainConfig()
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}".splitlines()[0]) from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
        config = apply_overrides(config, data, source=str(path))
    if overrides:
        config = apply_overrides(config, {k: v for k, v in overrides.items() if v is not None})
    return config.validate()


def recipe_path(size: str, stage: int) -> Path:
    if size not in MODEL_SIZES:
        raise ConfigError(f"model size must be one of {', '.join(MODEL_SIZES)} (got {size!r})")
    if stage not in (1, 2, 3, 4):
        raise ConfigError(f"stage must be 1, 2, 3 or 4 (got {stage})")
    return CONFIG_DIR / size / f"stage{stage}.yaml"


def save_config(config: TrainConfig, path: str | Path) -> None:
    import yaml

    from varco_ocr.document import write_atomic

    write_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True))
