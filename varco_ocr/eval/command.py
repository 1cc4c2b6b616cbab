"""`varco-ocr eval`: score a data set, from saved predictions or by running the model.

A plain function with typer-annotated parameters; ``varco_ocr/cli.py`` registers it. Every failure a
user can cause ends in one line on stderr and a non-zero exit (1: bad data or predictions, 2: bad
option or unloadable model), never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from varco_ocr import model_spec
from varco_ocr.cli_options import DeviceOpt, DtypeOpt, MaxGridOpt, MaxNewTokensOpt, MinLongSideOpt
from varco_ocr.eval.regions import EvalDataError

EXIT_BAD_INPUT = 1
EXIT_USAGE = 2


def _fail(message: str, code: int) -> typer.Exit:
    from varco_ocr.eval.regions import printable

    # One line whatever the message quotes (file and member names come from untrusted zips).
    typer.echo(f"varco-ocr eval: {printable(message)}", err=True)
    return typer.Exit(code)


def eval_command(
    ctx: typer.Context,
    dataset: str = typer.Argument(..., help="icdar2015, icdar2013, cord or funsd."),
    data: Path = typer.Option(..., "--data", help="Data set folder in its native layout (or CORD parquet files)."),
    predictions: Optional[Path] = typer.Option(
        None, "--predictions", "-p",
        help="Saved predictions: document .json/.jsonl or a folder of them, or an RRC folder/zip of res_*.txt. "
        "Without it the model is run.",
    ),
    model: str = typer.Option(model_spec.DEFAULT_MODEL, "--model", "-m", help="Hub id or local model folder (when running the model)."),
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
    max_new_tokens: int = MaxNewTokensOpt,
    min_long_side: int = MinLongSideOpt,
    max_grid: int = MaxGridOpt,
    metric: str = typer.Option("default", "--metric", help="Comma list of cleval, det, e2e, deteval, text; or default, all."),
    word_spotting: bool = typer.Option(False, "--word-spotting", help="RRC end-to-end in word-spotting mode."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the report (with per-image figures) as JSON here."),
    per_image: int = typer.Option(0, "--per-image", min=0, help="List the N worst images."),
    save_predictions: Optional[Path] = typer.Option(
        None, "--save-predictions", help="Folder for the model's predictions: predictions.jsonl and submit.zip (RRC)."
    ),
    max_images: Optional[int] = typer.Option(None, "--max-images", min=1, help="Score only the first N images."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Images per generate call when running the model."),
) -> None:
    """Score OCR on ICDAR2015, ICDAR2013, CORD or FUNSD with the standard protocols."""
    import json

    from rich.console import Console

    from varco_ocr.document import write_atomic
    from varco_ocr.eval.datasets import DATASET_NAMES, load_dataset
    from varco_ocr.eval.predictions import RRC_BOX_FORMAT, read_predictions
    from varco_ocr.eval.report import parse_metric_option, render_report, report_json, score_dataset

    name = dataset.lower()
    if name not in DATASET_NAMES:
        raise _fail(f"unknown data set {dataset!r} (choose from {', '.join(DATASET_NAMES)})", EXIT_USAGE)
    try:
        metrics = parse_metric_option(metric, name)
    except ValueError as e:
        raise _fail(str(e), EXIT_USAGE)
    if word_spotting and "e2e" not in metrics:
        metrics = (*metrics, "e2e")
    try:
        samples = load_dataset(name, data, max_images)
        if predictions is not None:
            preds = read_predictions(predictions, RRC_BOX_FORMAT[name])
        else:
            from varco_ocr.settings import EngineSettings

            preds = _run_model(samples, EngineSettings.from_options(ctx.params), batch_size, save_predictions,
                               RRC_BOX_FORMAT[name])
    except EvalDataError as e:
        raise _fail(str(e), EXIT_BAD_INPUT)
    except OSError as e:
        raise _fail(f"{getattr(e, 'filename', '') or ''}: {e.strerror or e}", EXIT_BAD_INPUT)

    report = score_dataset(name, samples, preds, metrics, word_spotting=word_spotting)
    render_report(report, Console(), per_image=per_image)
    if json_path is not None:
        try:
            write_atomic(json_path, json.dumps(report_json(report), ensure_ascii=False, indent=2))
        except OSError as e:
            raise _fail(f"{json_path}: cannot write report ({e.strerror or e})", EXIT_BAD_INPUT)


def _run_model(samples, settings, batch_size: int, save_dir: Optional[Path], box_format: str):
    """OCR every sample image with the engine (as `varco-ocr ocr` would with the same options);
    returns predictions keyed like the samples."""
    from varco_ocr.document import Document
    from varco_ocr.errors import VarcoOCRError, cli_message
    from varco_ocr.eval.datasets import open_sample_image
    from varco_ocr.eval.predictions import prediction_from_page, write_documents_jsonl, write_rrc_zip

    try:
        from varco_ocr.engine import OCREngine

        engine = OCREngine.from_settings(settings)
    except (VarcoOCRError, ValueError) as e:
        raise _fail(cli_message(e), EXIT_USAGE)
    documents = []
    preds = {}
    # Load images a batch at a time: 500 decoded photos would not fit in memory at once.
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        images = [open_sample_image(s) for s in chunk]
        try:
            pages = engine.ocr_batch(images, batch_size=batch_size)
        except VarcoOCRError as e:
            raise _fail(str(e), EXIT_BAD_INPUT)
        for sample, page in zip(chunk, pages):
            documents.append(Document(source=str(sample.image_path or sample.key), pages=(page,), model=settings.model))
            preds[sample.key] = prediction_from_page(page)
        print(f"varco-ocr eval: {min(start + batch_size, len(samples))}/{len(samples)} images read", file=sys.stderr)
    if save_dir is not None:
        write_documents_jsonl(save_dir / "predictions.jsonl", documents)
        # in the data set's official line form, so the zip reads back (and into the official scripts)
        write_rrc_zip(save_dir / "submit.zip", {k: p.regions for k, p in preds.items()}, ltrb=box_format == "ltrb")
    return preds
