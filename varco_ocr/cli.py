"""The `varco-ocr` command.

`varco-ocr IMAGE...` means `varco-ocr ocr IMAGE...`. Every failure a user can cause (a bad file, a model
that cannot be loaded, a bad option) ends in one line on stderr and a non-zero exit code, never a
traceback: 1 when some input failed, 2 for usage errors and unloadable models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from dataclasses import replace
from typing import TYPE_CHECKING, List, Optional

import typer

from varco_ocr import model_spec
from varco_ocr.cli_options import (
    DeviceOpt,
    DtypeOpt,
    MaxGridOpt,
    MaxNewTokensOpt,
    MaxPixelsOpt,
    MinLongSideOpt,
    ModelOpt,
)
from varco_ocr.errors import VarcoOCRError, cli_message

if TYPE_CHECKING:
    from varco_ocr.settings import EngineSettings, ServerSettings

app = typer.Typer(
    name="varco-ocr",
    help="OCR and document parsing with VARCO-VISION-2.0: every word with its box, in reading order.\n\n"
    "varco-ocr IMAGE... is short for varco-ocr ocr IMAGE...",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

EXIT_FAILED_INPUT = 1
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_USAGE) -> "typer.Exit":
    typer.echo(f"varco-ocr: {message}", err=True)
    return typer.Exit(code)


def load_engine(settings: EngineSettings, require_ocr_tokens: bool = True):
    """Build the engine or exit 2 with one line (weights missing, offline, not a VARCO model)."""
    from varco_ocr.engine import OCREngine

    try:
        return OCREngine.from_settings(settings, require_ocr_tokens=require_ocr_tokens)
    except (VarcoOCRError, ValueError) as e:
        raise fail(cli_message(e), EXIT_USAGE)


def _emit(documents, as_json: bool) -> None:
    """Print documents to stdout (output folders are the batch runner's job). In text mode the `truncated`
    flag has nowhere to go but stderr: one line per page cut short, with the fix."""
    for doc in documents:
        if as_json:
            typer.echo(doc.dumps(indent=2 if len(documents) == 1 else None))
        else:
            if len(documents) > 1:
                typer.echo(f"==> {doc.source} <==")
            typer.echo(doc.text)
            for page in doc.pages:
                if page.truncated:
                    typer.echo(f"varco-ocr: {doc.source}: page {page.index + 1}: {TRUNCATED_NOTE}", err=True)


TRUNCATED_NOTE = ("the answer was cut short (token limit or loop guard), words may be missing; read it again with "
                  "--split-truncated or a larger --max-new-tokens")


@app.command("ocr", help="Read every word with its box, in reading order.\n\n"
             "Example: varco-ocr ocr receipt.png --json")
def ocr_command(
    ctx: typer.Context,
    # strings, not Paths: a Path folds an URL's "//" (s3://b/x -> s3:/b/x)
    inputs: List[str] = typer.Argument(..., help="Images, PDFs, TIFFs or folders (with --ray also URLs: s3://, gs://, az://).",
                                       show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Write the document model as JSON instead of text."),
    output: Optional[str] = typer.Option(None, "--output", "-o", metavar="DIR", help="Folder for one output file per input "
                                         "(with --ray also a URL)."),
    keep_raw: bool = typer.Option(False, "--keep-raw", help="Keep the model's raw answer in the JSON."),
    batch_size: int = typer.Option(1, "--batch-size", help="Pages per batched generate call."),
    formats: Optional[str] = typer.Option(
        None, "--format", "-f", help="With -o: json,txt,hocr,alto,pdf,overlay (default json with --json, else txt)."
    ),
    pages: Optional[str] = typer.Option(None, "--pages", help="Pages of PDFs and TIFFs, e.g. 1-5,9 (from 1)."),
    dpi: float = typer.Option(300.0, "--dpi", help="Resolution PDF pages are rendered at (ask renders at 150)."),
    glob: Optional[str] = typer.Option(None, "--glob", help="Only files matching this pattern in folders, e.g. '*.pdf'."),
    password: Optional[str] = typer.Option(None, "--password", help="Password of encrypted PDFs."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo documents the output folder already has."),
    server: Optional[List[str]] = typer.Option(
        None, "--server", help="OpenAI-compatible server URL, e.g. http://gpu1:8000/v1 (repeatable); "
        "API key from VARCO_OCR_API_KEY or OPENAI_API_KEY."),
    concurrency: int = typer.Option(8, "--concurrency", help="With --server: most requests in flight."),
    timeout: float = typer.Option(300.0, "--timeout", help="With --server: seconds for each whole request (connect to last byte)."),
    split_truncated: bool = typer.Option(False, "--split-truncated",
                                         help="Re-read truncated pages as overlapping horizontal bands."),
    skip_text: bool = typer.Option(False, "--skip-text", help="PDF pages whose visible text covers them: take "
                                   "their words from the PDF, not the model (as OCRmyPDF's --skip-text)."),
    redo_ocr: bool = typer.Option(False, "--redo-ocr", help="Remove PDF pages' invisible text (an old OCR layer) "
                                  "in the searchable PDF and read every page again (visible text stays)."),
    model: str = ModelOpt,
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
    max_new_tokens: int = MaxNewTokensOpt,
    min_long_side: int = MinLongSideOpt,
    max_grid: int = MaxGridOpt,
    max_pixels: int = MaxPixelsOpt,
    ray: Optional[str] = typer.Option(None, "--ray", help="Run on Ray Data: local (a Ray in this command, this "
                                      "machine's CPUs) or auto (the running cluster); needs varco-ocr[ray]."),
    workers: int = typer.Option(1, "--workers", help="With --ray: model actors (one GPU each when there are GPUs)."),
) -> None:
    if skip_text and redo_ocr:
        raise fail("--skip-text and --redo-ocr exclude each other", EXIT_USAGE)
    text_mode = "skip-text" if skip_text else "redo-ocr" if redo_ocr else "force"
    inputs, output = _local_paths(inputs, output)
    urls = _urls(inputs, output)
    if urls and ray is None:
        raise fail(f"{urls[0]}: a URL as input or output needs --ray (e.g. --ray local)")
    on_ray = (list(inputs), output) if ray is not None else None  # as given: URLs stay URLs
    paths, out_dir = [Path(p) for p in inputs], Path(output) if output is not None else None
    from varco_ocr.settings import EngineSettings, ServerSettings

    settings = EngineSettings.from_options(ctx.params)
    # The server's model: the --model given, even when it is the default name; else discovered.
    servers = ServerSettings(urls=tuple(server), concurrency=concurrency, timeout=timeout,
                             model_given=_given(ctx, "model")) if server else None
    # Images, documents (PDF, TIFF, folders), output folders and servers: all through the resumable
    # batch runner (documents printed to stdout without an output folder).
    raise typer.Exit(_run_batch(paths, as_json, out_dir, batch_size, formats, pages, dpi, glob, password,
                                overwrite, settings, servers, text_mode, ray=ray, workers=workers, on_ray=on_ray))


def _run_batch(inputs, as_json, output, batch_size, formats, pages, dpi, glob, password, overwrite,
               settings: EngineSettings, servers: Optional[ServerSettings] = None, text_mode="force",
               ray: Optional[str] = None, workers: int = 1, on_ray=None) -> int:
    """The `ocr` command: varco_ocr.batch (resume, progress, log); documents to stdout without -o.
    With ``ray`` (and ``on_ray``: the inputs and output as given, URLs included): the Ray pipeline."""
    from varco_ocr import batch
    from varco_ocr.exporters import parse_formats
    from varco_ocr.inputs import parse_page_ranges

    try:
        chosen = parse_formats(formats) if formats else (("json",) if as_json else ("txt",))
        ranges = parse_page_ranges(pages) if pages else None
    except ValueError as e:
        raise fail(str(e))
    if output is None and formats:
        raise fail("--format needs an output folder (-o DIR)")
    if dpi <= 0 or batch_size < 1:
        raise fail("--dpi and --batch-size must be positive")
    options = batch.BatchOptions(
        out_dir=output, formats=chosen, pages=ranges, dpi=dpi, glob=glob, password=password, overwrite=overwrite,
        batch_size=batch_size, max_pixels=settings.max_pixels, model=settings.model, settings=settings.fingerprint(),
        # printed documents: only a reading bar, on a terminal (their errors are printed below)
        progress="auto" if output is not None else "reading", text_mode=text_mode,
    )
    make_engine = _EngineFactory(settings)
    backend = batch.LazyBackend(make_engine, model_name=settings.model)
    if servers is not None:
        backend = _server_backend(settings, servers)
        options.model = backend.model_name
        # Enough pages per runner batch to keep every request slot busy while the next batch is read;
        # the render-ahead queue holds one such batch (a 300-dpi page is ~26 MB of pixels).
        options.batch_size = max(batch_size, 2 * backend.concurrency)
        options.prefetch = options.batch_size
    if on_ray is not None:  # the same options and backend, built by each model actor from a picklable factory
        factory: object = make_engine
        if servers is not None:
            import functools

            from varco_ocr.server import ServerBackend

            backend.close()  # the model it found is named to the actors, which need not look again
            factory = functools.partial(ServerBackend.from_settings, replace(settings, model=backend.model_name),
                                        replace(servers, model_given=True))
        return _run_on_ray(on_ray[0], replace(options, out_dir=on_ray[1]), factory, ray or "local", workers)
    try:
        summary = batch.run(inputs, backend, options)
    except (batch.OutputFolderError, batch.BackendUnavailable) as e:
        raise fail(cli_message(e), EXIT_USAGE)
    except batch.RunLogError as e:  # disk full or no permission mid-run: resumable, so exit 1, not usage
        raise fail(str(e), EXIT_FAILED_INPUT)
    finally:
        if servers is not None:
            backend.close()
    if servers is not None and output is not None:
        for st in backend.stats():
            typer.echo(f"varco-ocr: {st.url}: {st.pages} pages, {st.failed_attempts} failed attempts", err=True)
        if backend.not_ocr:
            typer.echo(f"varco-ocr: {backend.not_ocr} pages got an answer that is not OCR (kept with zero words)", err=True)
    if output is None:
        for outcome in summary.outcomes:
            if outcome.error:
                typer.echo(f"varco-ocr: {outcome.error}", err=True)
            for page_problem in outcome.page_errors + outcome.page_warnings:
                typer.echo(f"varco-ocr: {outcome.source}: {page_problem}", err=True)
        _emit(summary.documents, as_json)
    return summary.exit_code


def _server_backend(settings: EngineSettings, servers: ServerSettings):
    """The OpenAI-compatible server backend, or exit 2 with one line (bad URL, no model found)."""
    from varco_ocr.server import ServerBackend

    try:
        return ServerBackend.from_settings(settings, servers,
                                           notify=lambda message: typer.echo(f"varco-ocr: {message}", err=True))
    except (VarcoOCRError, ValueError) as e:
        if not servers.model_given and "discover" in str(e):
            raise fail(f"{e} (e.g. --model {model_spec.DEFAULT_MODEL})")
        raise fail(str(e))


class _EngineFactory:
    """Builds the local engine from the settings when called: for the batch runner's LazyBackend, and
    picklable (the settings are plain values), so Ray's model actors build theirs from it."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings

    def __call__(self):
        from varco_ocr.engine import OCREngine  # torch and transformers: only when the model is needed

        return OCREngine.from_settings(self.settings)


def _run_on_ray(inputs: List[str], options, factory, ray: str, workers: int) -> int:
    """`ocr --ray`: the batch on Ray Data (varco_ocr.ray_pipeline), inputs and -o as paths or URLs.
    ``factory`` builds the backend in each model actor (picklable)."""
    from varco_ocr import batch, ray_pipeline
    from varco_ocr.storage import StorageError

    if ray not in ("local", "auto") and not ray.startswith("ray://"):
        raise fail(f"--ray takes local, auto or a ray:// address, not {ray!r}")
    if options.out_dir is None:
        raise fail("--ray writes its results to an output folder or URL: give -o")
    if workers < 1:
        raise fail("--workers must be positive")
    try:
        ray_pipeline.require_ray()
    except ray_pipeline.RayUnavailable as e:
        raise fail(str(e))
    ray_options = ray_pipeline.RayOptions(address=None if ray == "local" else ray, workers=workers)
    try:
        summary = ray_pipeline.run_ray(inputs, factory, options, ray_options)
    except (batch.OutputFolderError, batch.BackendUnavailable, StorageError) as e:
        raise fail(cli_message(e), EXIT_USAGE)
    except ImportError as e:  # an object store whose fsspec back end is not installed
        raise fail(f"{e} (e.g. pip install \"varco-ocr[s3]\")")
    except (OSError, ValueError) as e:  # the store refused (credentials, no such bucket) before any work
        from varco_ocr.storage import Scrubber, one_line

        raise fail(one_line(Scrubber.for_run([*inputs, str(options.out_dir)], {})(f"{type(e).__name__}: {e}")))
    return summary.exit_code


def _local_paths(inputs: List[str], output: Optional[str]) -> tuple[List[str], Optional[str]]:
    """``file://`` URLs among the inputs and the output, as the local paths they name."""
    from varco_ocr.storage import local_path_of

    try:
        return [local_path_of(p) for p in inputs], None if output is None else local_path_of(output)
    except ValueError as e:
        raise fail(str(e), EXIT_USAGE)


def _urls(inputs, output) -> List[str]:
    """The inputs and output given as URLs (s3://...), which only the Ray pipeline reads and writes."""
    from varco_ocr.storage import is_url

    return [str(p) for p in [*inputs, output] if p is not None and is_url(p)]


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was set by the user (command line or environment), not defaulted.
    Compared by name: typer may carry its own copy of click's ParameterSource enum."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _check_output_dir(output: Path) -> None:
    import os

    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise fail(f"{output}: cannot create output folder ({e.strerror or e})")
    if not os.access(output, os.W_OK):
        raise fail(f"{output}: output folder is not writable")


@app.command("parse", help="Re-parse a saved raw model answer, no model needed.\n\n"
             "Example: varco-ocr parse raw.txt --image receipt.png --json")
def parse_command(
    raw: Path = typer.Argument(..., help="Text file holding the model's answer ('-' for stdin)."),
    image: Optional[Path] = typer.Option(None, "--image", help="The original image (gives the pixel size)."),
    size: Optional[str] = typer.Option(None, "--size", help="WIDTHxHEIGHT of the original image, instead of --image."),
    as_json: bool = typer.Option(False, "--json", help="Write the document model as JSON instead of text."),
    grounding: bool = typer.Option(False, "--grounding", help="The answer is a <gro> answer (phrases and boxes)."),
) -> None:
    from varco_ocr.document import Document, Word
    from varco_ocr.layout import build_page
    from varco_ocr.parsing import parse_grounding_answer, parse_ocr_answer, to_pixels

    try:
        text = sys.stdin.read() if str(raw) == "-" else raw.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise fail(f"{raw}: cannot read ({getattr(e, 'strerror', None) or e})", EXIT_FAILED_INPUT)
    width, height = _original_size(image, size)
    if grounding:
        answer = parse_grounding_answer(text)
        result = [
            {"phrase": p.text, "bbox": list(to_pixels(b, width, height))} for p in answer.phrases for b in p.boxes
        ]
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2) if as_json else "\n".join(
            f"{r['phrase']}\t{' '.join(map(str, r['bbox']))}" for r in result))
        return
    answer = parse_ocr_answer(text)
    words = [Word(text=w.text, bbox=to_pixels(w.box, width, height)) for w in answer.words]
    page = build_page(words, index=0, width=width, height=height, truncated=answer.truncated,
                      dropped_boxes=answer.dropped_boxes)
    doc = Document(source=str(image) if image else str(raw), pages=(page,))
    _emit([doc], as_json)


def _original_size(image: Optional[Path], size: Optional[str]) -> tuple[int, int]:
    if size:
        try:
            w, h = (int(v) for v in size.lower().split("x"))
            if w <= 0 or h <= 0:
                raise ValueError
            return w, h
        except ValueError:
            raise fail(f"--size must look like 1000x500, not {size!r}")
    if image is None:
        raise fail("give the original image (--image) or its size (--size WxH) to map boxes to pixels")
    from varco_ocr.preprocessing import load_image

    try:
        # The size after EXIF orientation: the page as the model saw it.
        return load_image(image, max_pixels=None).size
    except VarcoOCRError as e:
        raise fail(str(e), EXIT_FAILED_INPUT)


@app.command("ground", help="Find a phrase in an image: boxes from the <gro> task.\n\n"
             "Example: varco-ocr ground photo.jpg \"the red sign\"")
def ground_command(
    ctx: typer.Context,
    image: Path = typer.Argument(..., help="Image file."),
    phrase: str = typer.Argument(..., help="What to look for."),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
    model: str = typer.Option("NCSOFT/VARCO-VISION-2.0-1.7B", "--model", "-m", help="Hub id or local model folder."),
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
    max_new_tokens: int = typer.Option(1024, "--max-new-tokens", help="Token budget of the answer."),
    min_long_side: int = MinLongSideOpt,
    max_grid: int = MaxGridOpt,
    max_pixels: int = MaxPixelsOpt,
) -> None:
    from varco_ocr.preprocessing import load_image
    from varco_ocr.settings import EngineSettings

    if not phrase.strip():
        raise fail("the phrase is empty")
    settings = EngineSettings.from_options(ctx.params)
    try:
        original = load_image(image, max_pixels=settings.max_pixels, name=str(image))
    except VarcoOCRError as e:
        raise fail(str(e), EXIT_FAILED_INPUT)
    engine = load_engine(settings)
    boxes, answer = engine.ground(original, phrase)
    if as_json:
        typer.echo(json.dumps({"phrase": phrase, "width": original.size[0], "height": original.size[1],
                               "truncated": answer.truncated,
                               "boxes": [{"phrase": b.phrase, "bbox": list(b.bbox)} for b in boxes]},
                              ensure_ascii=False, indent=2))
    else:
        for b in boxes:
            typer.echo(f"{b.phrase}\t{' '.join(map(str, b.bbox))}")
        if answer.truncated:
            typer.echo(f"varco-ocr: the answer was cut short at {max_new_tokens} tokens (or by the loop guard), "
                       "boxes may be missing; raise --max-new-tokens", err=True)


@app.command("ask", help="Ask a question about one or several pages (images, PDFs, TIFFs; up to 12 by default).\n\n"
             "Example: varco-ocr ask contract.pdf --pages 1-4 \"계약 기간은 언제부터 언제까지인가요?\"")
def ask_command(
    ctx: typer.Context,
    args: List[str] = typer.Argument(..., help="Input files, then the question (with --chat the question may come "
                                     "from stdin).", show_default=False),
    pages: Optional[str] = typer.Option(None, "--pages", help="Pages of PDFs and TIFFs, e.g. 1-4 (from 1)."),
    dpi: float = typer.Option(150.0, "--dpi", help="Resolution PDF pages are rendered at (150, not ocr's 300: "
                              "several pages get one 384 px tile each, one page is upscaled to 2304 px anyway)."),
    password: Optional[str] = typer.Option(None, "--password", help="Password of encrypted PDFs."),
    max_images: int = typer.Option(12, "--max-images", help="Page budget: most images in one question."),
    max_context: Optional[int] = typer.Option(None, "--max-context", help="Context length, if not the model's."),
    stream: bool = typer.Option(False, "--stream", help="Print the answer as it is generated."),
    as_json: bool = typer.Option(False, "--json", help="One JSON record per answer: question, answer, sources, "
                                 "model, tokens."),
    max_new_tokens: int = typer.Option(1024, "--max-new-tokens", help="Token budget of one answer."),
    temperature: float = typer.Option(0.0, "--temperature", help="Sample at this temperature (0: greedy)."),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt (default: the model's own)."),
    chat: bool = typer.Option(False, "--chat", help="Then read follow-up questions from stdin until an empty line."),
    server: Optional[str] = typer.Option(None, "--server", help="Ask an OpenAI-compatible server instead, e.g. "
                                         "http://gpu1:8000/v1 (model from its /v1/models unless --model)."),
    timeout: float = typer.Option(300.0, "--timeout", help="With --server: seconds for each whole request (connect to last byte)."),
    model: str = typer.Option("NCSOFT/VARCO-VISION-2.0-1.7B", "--model", "-m", help="Hub id or local model folder."),
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
    min_long_side: int = MinLongSideOpt,
    max_grid: int = MaxGridOpt,
    max_pixels: int = MaxPixelsOpt,
) -> None:
    from varco_ocr import ask
    from varco_ocr.inputs import parse_page_ranges
    from varco_ocr.settings import EngineSettings

    settings = EngineSettings.from_options(ctx.params)

    paths, question = [Path(a) for a in args[:-1]], args[-1]
    if chat and Path(question).exists():  # `ask doc.pdf --chat`: every question comes from stdin
        paths, question = [Path(a) for a in args], None
    elif Path(question).is_file():  # `ask book.pdf`: the question was forgotten, not the file
        raise fail(f"the question is missing: the last argument, {question}, is a file; put the question after the "
                   f"files, e.g. varco-ocr ask {question} \"What is the total?\"")
    if question is not None and not question.strip():
        raise fail("the question is empty")
    if max_new_tokens < 1 or max_images < 1 or temperature < 0 or dpi <= 0:
        raise fail("--max-new-tokens, --max-images and --dpi must be positive, --temperature not negative")
    try:
        ranges = parse_page_ranges(pages) if pages else None
        collected = ask.collect_pages(paths, ranges, dpi=dpi, password=password, max_pixels=settings.max_pixels,
                                      max_images=max_images)
    except ask.AskError as e:
        raise fail(str(e))
    except (ValueError, VarcoOCRError) as e:
        raise fail(str(e), EXIT_FAILED_INPUT)
    if server:
        from varco_ocr.server import ServerAsker, ServerBackend

        try:
            backend = ServerBackend([server], model=model if _given(ctx, "model") else None,
                                    concurrency=1, timeout=timeout,
                                    notify=lambda message: typer.echo(f"varco-ocr: {message}", err=True))
        except (VarcoOCRError, ValueError) as e:
            raise fail(str(e))
        asker, model_name = ServerAsker(backend, collected, system=system, min_long_side=min_long_side), backend.model_name
    else:
        engine = load_engine(settings, require_ocr_tokens=False)
        asker = ask.LocalAsker(engine, collected, system=system, max_context=max_context)
        model_name = engine.model_name

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def read_line() -> Optional[str]:
        line = sys.stdin.readline()
        return line if line else None

    try:
        ask.run_session(asker, question, chat=chat, stream=stream, as_json=as_json, max_new_tokens=max_new_tokens,
                        temperature=temperature, model_name=model_name, read_line=read_line, write=write,
                        prompt_mark=lambda: typer.echo("> ", err=True, nl=False) if sys.stdin.isatty() else None,
                        warn=lambda message: typer.echo(f"varco-ocr: {message}", err=True))
    except VarcoOCRError as e:
        raise fail(str(e))


@app.command("export", help="Convert saved JSON documents into other formats, no model needed.\n\n"
             "Example: varco-ocr export out/book.json --format hocr,alto,pdf,overlay -o out/")
def export_command(
    documents: List[Path] = typer.Argument(..., help="Document JSON files written by varco-ocr.", show_default=False),
    formats: str = typer.Option(..., "--format", "-f", help="json,txt,hocr,alto,pdf,overlay"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder (default: beside each JSON)."),
    source: Optional[Path] = typer.Option(None, "--source", help="The original file, if it moved (pdf, overlay)."),
    password: Optional[str] = typer.Option(None, "--password", help="Password of an encrypted source PDF."),
) -> None:
    from varco_ocr.document import Document
    from varco_ocr.exporters import parse_formats, write_exports

    try:
        chosen = parse_formats(formats)
    except ValueError as e:
        raise fail(str(e))
    if output is not None:
        _check_output_dir(output)
    failed = 0
    for path in documents:
        try:
            doc = Document.load(path)
        except (OSError, ValueError, KeyError, TypeError) as e:
            typer.echo(f"varco-ocr: {path}: not a varco-ocr document JSON ({e})", err=True)
            failed += 1
            continue
        stem = path.name.removesuffix(".json")
        try:
            for written in write_exports(doc, output or path.parent, chosen, stem=stem, source=source,
                                         source_base=path.parent, password=password):
                typer.echo(str(written))
        except (OSError, ValueError, VarcoOCRError) as e:
            typer.echo(f"varco-ocr: {path}: {e}", err=True)
            failed += 1
    if failed:
        raise typer.Exit(EXIT_FAILED_INPUT)


from varco_ocr.eval.command import eval_command  # noqa: E402  (registered here, lives in varco_ocr/eval)

app.command("eval", help="Score OCR on ICDAR2015, ICDAR2013, CORD or FUNSD with the standard protocols "
            "(CLEval, RRC detection/end-to-end, DetEval, CER), from saved predictions or by running the model.\n\n"
            "Example: varco-ocr eval icdar2015 --data ~/data/icdar2015-test --predictions preds.zip --json report.json")(eval_command)


def _default_to_ocr(argv: list[str]) -> list[str]:
    """`varco-ocr IMAGE...` -> `varco-ocr ocr IMAGE...`; subcommands and --help pass through."""
    if not argv:
        return argv
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    first = argv[0]
    if first in commands or first in ("--help", "-h", "--version"):
        return argv
    return ["ocr", *argv]


# Optional packages ``import pymupdf`` imports whenever they are installed (pymupdf 2.0): the layout
# analyser (onnxruntime and an ONNX model) and pymupdf4llm (onnxruntime, numpy).
_PYMUPDF_EXTRAS = ("pymupdf.layout", "pymupdf4llm")


def _without_pymupdf_layout() -> None:
    """Keep ``import pymupdf`` from importing its optional layout-analysis packages: measured here
    ~600 against ~80 ms of CPU per process (over a second of wall time), for ``Page.get_layout`` and
    ``pymupdf.to_markdown``-style functions varco-ocr never calls. The command is a process of its
    own, so it opts out for itself; the library, imported by someone else's program, leaves the
    choice to them."""
    if "pymupdf" not in sys.modules:
        for name in _PYMUPDF_EXTRAS:
            sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "not importable"


def main(argv: Optional[List[str]] = None) -> None:
    from varco_ocr.hub import progress_bars_only_on_a_terminal

    _without_pymupdf_layout()
    progress_bars_only_on_a_terminal()
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--version":
        from importlib.metadata import version

        typer.echo(f"varco-ocr {version('varco-ocr')}")
        return
    try:
        app(args=_default_to_ocr(args), prog_name="varco-ocr")
    except KeyboardInterrupt:
        typer.echo("varco-ocr: interrupted", err=True)
        sys.exit(130)
