"""`varco-train` (also `python -m training`, which is what torchrun launches):

    varco-train compose --llm Qwen/Qwen3-1.7B --vision google/siglip2-so400m-patch16-384 -o ckpt/stage0
    varco-train synth --out data/synth-ocr --pages 10000 --lang ko,en
    varco-train stage 1 --model ckpt/stage0 --data data/captions.jsonl -o ckpt/stage1
    torchrun --nproc-per-node 8 -m training stage 3 --config training/configs/1.7b/stage3.yaml
    varco-train export ckpt/stage3 -o model/
    varco-train dpo --config training/configs/1.7b/stage4.yaml --model ckpt/stage3 --data prefs.jsonl -o ckpt/stage4
    varco-train merge ckpt/a ckpt/b --weights 0.7,0.3 -o merged/      (or --method ties --base B --density 0.2)

Bad input ends with a one-line error and exit status 2, never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Compose, train and export VARCO-VISION-2.0-style models.")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


_ERRORS = {"training.checkpoint": "CheckpointError", "training.compose": "ComposeError", "training.data": "DataError",
           "training.params": "ConfigError", "training.train": "TrainingError"}


def _known_errors() -> tuple[type[BaseException], ...]:
    # Only from modules already imported: an error class of a module never loaded cannot have been raised, and
    # importing them all would import torch (seconds) just to print a one-line error.
    return tuple(getattr(sys.modules[m], name) for m, name in _ERRORS.items() if m in sys.modules)


def _setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s" if rank else "%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@app.command(help="Build a LLaVA-OneVision model from a Qwen3 LLM and a SigLIP vision encoder (fresh projector).")
def compose(
    llm: str = typer.Option(..., "--llm", help="Qwen3 checkpoint (hub id or folder)."),
    vision: Optional[str] = typer.Option(None, "--vision", help="SigLIP / SigLIP2 (fixed resolution) checkpoint."),
    vision_from: Optional[str] = typer.Option(None, "--vision-from", help="Copy the vision tower from this composed/trained checkpoint."),
    with_projector: bool = typer.Option(False, "--with-projector", help="With --vision-from: copy the projector too."),
    max_grid: int = typer.Option(6, "--max-grid", help="AnyRes grid of up to N x N tiles."),
    seed: int = typer.Option(0, "--seed", help="Seed of the projector's initialisation."),
    out: Path = typer.Option(..., "-o", "--out", help="Output model folder."),
) -> None:
    from training.compose import compose_model

    try:
        report = compose_model(llm, vision, out, vision_from=vision_from, vision_from_projector=with_projector, max_grid=max_grid, seed=seed)
    except _known_errors() as e:
        _fail(str(e))
    typer.echo(
        f"wrote {report.out_dir}: vocabulary {report.vocab_size} (added {', '.join(report.added_tokens) or 'none'}), "
        f"{report.vision_layers} vision layers" + (f", vision tower from {report.copied_from}" if report.copied_from else "")
    )


@app.command(help="Train stage 1, 2 or 3 (SFT). Flags and --set key=value override the stage recipe.")
def stage(
    number: int = typer.Argument(..., help="1, 2 or 3 (stage 4 is `varco-train dpo`)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Recipe YAML (default: training/configs/<size>/stage<N>.yaml)."),
    size: str = typer.Option("1.7b", "--size", help="Which recipe set when --config is not given: 1.7b or 14b."),
    model: Optional[str] = typer.Option(None, "--model", help="Model folder to start from."),
    data: Optional[List[str]] = typer.Option(None, "--data", help="Conversation JSON-lines file (repeatable)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Run folder (checkpoints, final model)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after N optimizer steps."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override any config value: key=value (repeatable)."),
) -> None:
    from training.params import load_config, parse_set_options, recipe_path
    from training.train import train_stage

    _setup_logging()
    try:
        if number not in (1, 2, 3):
            _fail(f"stage must be 1, 2 or 3 (got {number}); stage 4 is `varco-train dpo`")
        overrides = parse_set_options(set_ or [])
        named = {"model": model, "data": list(data) if data else None, "output_dir": str(out) if out else None, "max_steps": max_steps}
        overrides.update({k: v for k, v in named.items() if v is not None})
        cfg = load_config(config if config is not None else recipe_path(size, number), overrides)
        if cfg.stage != number:
            _fail(f"{config}: is a stage {cfg.stage} recipe, not stage {number}")
        result = train_stage(cfg)
    except _known_errors() as e:
        _fail(str(e))
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"stage {number}: {result.steps_done} steps, final loss {result.losses[-1] if result.losses else float('nan'):.6f}; model in {result.output_dir}")


@app.command(help="Write a plain HF model folder from a run's latest (or given) checkpoint.")
def export(
    run: Path = typer.Argument(..., help="Run folder written by `varco-train stage`."),
    out: Path = typer.Option(..., "-o", "--out", help="Output model folder."),
    step: Optional[int] = typer.Option(None, "--step", help="Export this step's checkpoint instead of the latest."),
) -> None:
    from training.checkpoint import export_checkpoint

    try:
        path = export_checkpoint(run, out, step)
    except _known_errors() as e:
        _fail(str(e))
    typer.echo(f"wrote {path}")


@app.command(help="Render synthetic Korean/English OCR pages: training JSON-lines plus CORD and ICDAR ground truth.")
def synth(
    out: Path = typer.Option(..., "--out", help="Output folder."),
    pages: int = typer.Option(100, "--pages", help="How many pages."),
    lang: str = typer.Option("ko,en", "--lang", help="Comma-separated languages: ko, en."),
    seed: int = typer.Option(0, "--seed"),
    width: int = typer.Option(0, "--width", help="Page width in pixels (0: varied by page kind)."),
    height: int = typer.Option(0, "--height", help="Page height in pixels (0: varied by page kind)."),
    words_per_page: int = typer.Option(0, "--words", help="At most N words per page (0: varied)."),
    kinds: str = typer.Option("receipt,document,sign", "--kinds", help="Comma-separated page kinds."),
    clean: bool = typer.Option(False, "--clean", help="No rotation, noise or blur (e.g. for overfitting tests)."),
) -> None:
    from training.synth import SynthError, SynthOptions, generate

    try:
        options = SynthOptions(
            pages=pages, languages=tuple(s.strip() for s in lang.split(",") if s.strip()), seed=seed,
            width=width or None, height=height or None, max_words=words_per_page or None,
            kinds=tuple(s.strip() for s in kinds.split(",") if s.strip()), clean=clean,
        )
        summary = generate(out, options)
    except (SynthError, ValueError) as e:
        _fail(str(e))
    typer.echo(f"wrote {summary.pages} pages, {summary.words} words to {out} (train.jsonl, cord/, icdar/)")


@app.command(help="Stage 4: sigmoid DPO on preference pairs (training/dpo.py). Flags and --set key=value override the recipe.")
def dpo(
    config: Optional[Path] = typer.Option(None, "--config", help="Recipe YAML (default: training/configs/<size>/stage4.yaml)."),
    size: str = typer.Option("1.7b", "--size", help="Which recipe set when --config is not given: 1.7b or 14b."),
    model: Optional[str] = typer.Option(None, "--model", help="Model folder to start from (also the reference)."),
    data: Optional[List[str]] = typer.Option(None, "--data", help="Preference-pair JSON-lines file (repeatable)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Run folder (checkpoints, final model)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after N optimizer steps."),
    beta: float = typer.Option(0.1, "--beta", help="DPO temperature."),
    sft_weight: float = typer.Option(0.0, "--sft-weight", help="Add this times the chosen answers' LM loss (DPO+SFT)."),
    precompute_ref: bool = typer.Option(False, "--precompute-ref", help="Run the reference once and cache its log-probs."),
    ref_device: str = typer.Option("cpu", "--ref-device", help="Where the live reference copy lives: cpu or cuda."),
    ref_cache: Optional[Path] = typer.Option(None, "--ref-cache", help="Cache file (default: OUT/reference_logps.pt)."),
    dpo_loss: str = typer.Option("chunked", "--dpo-loss", help="chunked (lowest memory) or liger (Liger's fused DPO loss, CUDA)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override any config value: key=value (repeatable)."),
) -> None:
    from training.dpo import DPOSettings, run_dpo
    from training.params import load_config, parse_set_options, recipe_path

    _setup_logging()
    try:
        overrides = parse_set_options(set_ or [])
        named = {"model": model, "data": list(data) if data else None, "output_dir": str(out) if out else None, "max_steps": max_steps}
        overrides.update({k: v for k, v in named.items() if v is not None})
        cfg = load_config(config if config is not None else recipe_path(size, 4), overrides)
        if cfg.stage != 4:
            _fail(f"{config}: is a stage {cfg.stage} recipe, not stage 4")
        settings = DPOSettings(beta=beta, sft_weight=sft_weight, precompute_ref=precompute_ref, ref_device=ref_device,
                               ref_cache=str(ref_cache) if ref_cache else None, loss_impl=dpo_loss)
        result = run_dpo(cfg, settings)
    except _known_errors() as e:
        _fail(str(e))
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"dpo: {result.steps_done} steps, final loss {result.losses[-1] if result.losses else float('nan'):.6f}; "
                   f"model in {result.output_dir}, per-step rewards in {result.output_dir}/dpo_metrics.jsonl")


@app.command(help="Merge checkpoints: (weighted) average, or TIES against --base. Streams safetensors tensor by tensor.")
def merge(
    checkpoints: List[Path] = typer.Argument(..., help="Model folders to merge."),
    out: Path = typer.Option(..., "-o", "--out", help="Output model folder (must not exist or be empty)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Comma-separated weights, e.g. 0.7,0.3 (average: normalised to sum 1)."),
    method: str = typer.Option("average", "--method", help="average or ties."),
    base: Optional[Path] = typer.Option(None, "--base", help="TIES: the checkpoint the task vectors are measured from."),
    density: float = typer.Option(0.2, "--density", help="TIES: fraction of each task vector kept (largest magnitudes)."),
    scale: float = typer.Option(1.0, "--lambda", help="TIES: scale of the merged task vector."),
    max_shard_size: str = typer.Option("5GB", "--max-shard-size", help="Largest output safetensors shard."),
) -> None:
    from training.merge import MergeError, MergeSpec, merge_checkpoints, parse_size, parse_weights

    try:
        spec = MergeSpec(inputs=tuple(checkpoints), method=method, weights=parse_weights(weights), base=base,
                         density=density, scale=scale, max_shard_bytes=parse_size(max_shard_size))
        path = merge_checkpoints(spec, out)
    except (MergeError, OSError) as e:
        _fail(str(e))
    typer.echo(f"wrote {path}: {method} of {len(checkpoints)} checkpoints")


def main(argv: list[str] | None = None) -> None:
    from varco_ocr.hub import progress_bars_only_on_a_terminal

    progress_bars_only_on_a_terminal()
    try:
        app(args=argv, prog_name="varco-train")
    except KeyboardInterrupt:
        typer.echo("interrupted; resume by running the same command again", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
