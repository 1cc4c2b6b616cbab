"""Command-line options shared by every command that loads a model (`ocr`, `ground`, `ask`, `eval`),
so each flag has one spelling, one default and one help text."""

from __future__ import annotations

import typer

from varco_ocr import model_spec
from varco_ocr.preprocessing import DEFAULT_MAX_PIXELS, DEFAULT_MIN_LONG_SIDE

ModelOpt = typer.Option(model_spec.DEFAULT_MODEL, "--model", "-m", help="Hub id or local model folder.")
DeviceOpt = typer.Option("auto", "--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps.")
DtypeOpt = typer.Option("auto", "--dtype", help="auto (bf16 on cuda, fp32 on cpu), bf16, fp16, fp32.")
MaxNewTokensOpt = typer.Option(model_spec.DEFAULT_MAX_NEW_TOKENS, "--max-new-tokens", help="Token budget of one answer.")
MinLongSideOpt = typer.Option(
    DEFAULT_MIN_LONG_SIDE, "--min-long-side", help="Upscale so the longer side is at least this (0 disables)."
)
MaxGridOpt = typer.Option(model_spec.DEFAULT_MAX_GRID, "--max-grid", help="AnyRes grid: up to N x N tiles of 384 px.")
MaxPixelsOpt = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", help="Refuse images larger than this many pixels.")
