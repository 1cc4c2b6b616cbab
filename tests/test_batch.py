"""The batch runner end to end: PDFs, TIFFs and folders in, every export out; resume, overwrite, bad
documents, cross-document batching; kill -9 and Ctrl-C. What is read and exported is checked with the
taught tiny model (tests/conftest.py), which reads the sample receipt; plumbing-only tests use the
random-weight one with a tiny token budget."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pymupdf
import pytest
from lxml import etree
from PIL import Image

from exporters.conftest import write_scanned_pdf, write_text_pdf
from exporters.pdf_readback import assert_words_match, expected_pages, poppler_words, pymupdf_words
from varco_ocr.batch import LOG_NAME, BatchOptions, OutputFolderError, run
from varco_ocr.document import Document
from varco_ocr.inputs import parse_page_ranges

# every JSON a test here writes under its tmp_path is validated against the shipped schema afterwards
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("documents_are_schema_valid")]
REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
ENGINE_ARGS = dict(max_new_tokens=8, min_long_side=0, max_grid=1)  # small and fast: this tests plumbing


class CountingBackend:
    """The real engine, recording what each ocr_batch call received (no behaviour changed)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.model_name = engine.model_name
        self.calls: list[list[tuple[int, tuple[int, int]]]] = []

    def ocr_batch(self, images, batch_size=4, indices=None):
        self.calls.append([(i, im.size) for i, im in zip(indices or [0] * len(images), images)])
        return self.engine.ocr_batch(images, batch_size=batch_size, indices=indices)

    @property
    def pages(self) -> int:
        return sum(len(c) for c in self.calls)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    import torch

    torch.set_num_threads(1)
    from varco_ocr.engine import OCREngine

    return OCREngine(str(tiny_model_dir), **ENGINE_ARGS)


@pytest.fixture
def backend(engine) -> CountingBackend:
    return CountingBackend(engine)


@pytest.fixture(scope="module")
def taught_engine(taught):
    import torch

    torch.set_num_threads(1)
    from varco_ocr.engine import OCREngine

    return OCREngine(str(taught.path), **taught.engine_args)


def _scans(root: Path) -> Path:
    """A folder: a 3-page PDF (one page rotated), a 2-page TIFF in a sub-folder, a PNG, a note."""
    root.mkdir(parents=True, exist_ok=True)
    text = write_text_pdf(root.parent / f"{root.name}-text.pdf")
    write_scanned_pdf(text, root / "book.pdf", dpi=50)
    (root / "sub").mkdir(exist_ok=True)
    Image.new("L", (160, 120), 255).save(
        root / "sub" / "fax.tiff", save_all=True, append_images=[Image.new("RGB", (120, 160), (250, 250, 250))], dpi=(200, 200)
    )
    shutil.copy(SAMPLES / "receipt.png", root / "receipt.png")  # the taught model reads its first words
    (root / "README.txt").write_text("not a page")
    return root


ALL = ("json", "txt", "hocr", "alto", "pdf", "overlay")


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]


def test_folder_of_pdf_tiff_and_image_end_to_end(tmp_path, taught, taught_engine, alto_xsd, require):
    backend = CountingBackend(taught_engine)
    scans = _scans(tmp_path / "scans")
    out = tmp_path / "out"
    summary = run([scans], backend, BatchOptions(out_dir=out, formats=ALL, dpi=40, batch_size=4, progress="none"))
    assert summary.exit_code == 0
    assert [(Path(o.source).name, o.status, o.pages) for o in summary.outcomes] == [
        ("book.pdf", "done", 3), ("receipt.png", "done", 1), ("fax.tiff", "done", 2)
    ]
    assert summary.notes == [f"skipped {scans / 'README.txt'}: unsupported file type .txt"]
    # pages from several documents share batches: 6 pages in calls of at most 4
    assert [len(c) for c in backend.calls] == [4, 2]

    book = Document.load(out / "book.json")
    assert [(p.index, p.width, p.height, p.dpi) for p in book.pages] == [
        (0, 331, 468, 40.0), (1, 468, 331, 40.0), (2, 331, 468, 40.0)  # 595x842 pt at 40 dpi: 330.6 x 467.8
    ]
    assert book.model == backend.model_name
    fax = Document.load(out / "sub" / "fax.json")  # the folder structure is mirrored
    assert [(p.index, p.width, p.height, p.dpi) for p in fax.pages] == [(0, 160, 120, 200.0), (1, 120, 160, 200.0)]
    assert (out / "book.txt").read_text(encoding="utf-8").count("\f") == 2

    hocr = etree.parse(str(out / "book.hocr"))
    pages = [el for el in hocr.iter() if el.get("class") == "ocr_page"]
    assert [p.get("title").split("; ")[1:3] for p in pages] == [
        ["bbox 0 0 331 468", "ppageno 0"], ["bbox 0 0 468 331", "ppageno 1"], ["bbox 0 0 331 468", "ppageno 2"]
    ]
    receipt = Document.load(out / "receipt.json")
    assert [(w.text, w.bbox) for w in receipt.pages[0].words] == list(taught.page("receipt").words)
    assert (out / "receipt.txt").read_text(encoding="utf-8") == "카페 마포점\n서울특별시 마포구 백범로 35\n"
    schema = etree.XMLSchema(etree.parse(str(alto_xsd)))
    for name in ("book.alto.xml", "receipt.alto.xml", "sub/fax.alto.xml"):
        schema.assertValid(etree.parse(str(out / name)))
    alto_strings = [el.get("CONTENT") for el in etree.parse(str(out / "receipt.alto.xml")).iter("{*}String")]
    assert alto_strings == ["카페", "마포점", "서울특별시", "마포구", "백범로", "35"]
    hocr_words = [el.text for el in etree.parse(str(out / "receipt.hocr")).iter() if el.get("class") == "ocrx_word"]
    assert hocr_words == alto_strings
    with pymupdf.open(out / "book.pdf") as pdf, pymupdf.open(scans / "book.pdf") as src:
        assert len(pdf) == 3 and [p.rotation for p in pdf] == [p.rotation for p in src]
    assert [t for t, _ in expected_pages(receipt, out / "receipt.pdf")[0]] == alto_strings  # not empty
    for name in ("book", "receipt", "sub/fax"):  # the text layer holds exactly the words the model read
        searchable, saved = out / f"{name}.pdf", Document.load(out / f"{name}.json")
        assert_words_match(pymupdf_words(searchable), expected_pages(saved, searchable))
        if shutil.which("pdftotext"):
            # poppler orders words by its own layout analysis (it reads the receipt's right-aligned
            # 마포점 and 35 as a second column): same words and boxes, compared in text order
            by_text = lambda pages: [sorted(page, key=lambda word: word[0]) for page in pages]  # noqa: E731
            assert_words_match(by_text(poppler_words(searchable)), by_text(expected_pages(saved, searchable)))
    with pymupdf.open(out / "sub" / "fax.pdf") as pdf:
        assert [(round(p.rect.width), round(p.rect.height)) for p in pdf] == [(58, 43), (43, 58)]  # 160 px at 200 dpi
    overlays = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert overlays == ["book.p0001.overlay.png", "book.p0002.overlay.png", "book.p0003.overlay.png", "receipt.overlay.png",
                        "sub/fax.p0001.overlay.png", "sub/fax.p0002.overlay.png"]
    records = [r for r in _log(out) if "status" in r]
    assert [(Path(r["source"]).name, r["status"]) for r in records] == [("book.pdf", "done"), ("receipt.png", "done"), ("fax.tiff", "done")]
    assert not list(out.rglob("*.tmp"))
    if not shutil.which("pdftotext"):  # everything else was checked; say what was not
        require("poppler's pdftotext not installed (apt-get install poppler-utils): text layer not read back with poppler")


def test_pdf_pages_get_their_words_in_pdf_points(tmp_path, taught, taught_engine):
    """A PDF page showing the sample receipt, rendered at 144 dpi to exactly the taught image: the words
    read come back with ``bbox_pt``, their boxes in PDF points (72 per inch: pixels / 2 at 144 dpi, the
    page's top left at 0, 0), and the searchable PDF puts the text there."""
    pdf = pymupdf.open()
    page = pdf.new_page(width=220, height=260)  # 440 x 520 px at 144 dpi
    page.insert_image(page.rect, filename=str(SAMPLES / "receipt.png"))
    pdf.save(tmp_path / "receipt-scan.pdf")
    out = tmp_path / "out"
    summary = run([tmp_path / "receipt-scan.pdf"], CountingBackend(taught_engine),
                  BatchOptions(out_dir=out, formats=("json", "pdf"), dpi=144, progress="none"))
    assert summary.exit_code == 0
    (read,) = Document.load(out / "receipt-scan.json").pages
    assert (read.width, read.height) == (440, 520)
    assert [(w.text, w.bbox) for w in read.words] == list(taught.page("receipt").words)
    assert [w.bbox_pt for w in read.words] == [tuple(v / 2 for v in w.bbox) for w in read.words]
    with pymupdf.open(out / "receipt-scan.pdf") as searchable:
        layer = [(w[4], w[:4]) for w in searchable[0].get_text("words", sort=False)]
    assert [t for t, _ in layer] == [w.text for w in read.words]
    for (_, (x0, y0, x1, y1)), w in zip(layer, read.words):  # the text sits on the word's box
        bx0, by0, bx1, by1 = w.bbox_pt
        assert abs((x0 + x1) / 2 - (bx0 + bx1) / 2) < 2 and abs((y0 + y1) / 2 - (by0 + by1) / 2) < 3


def test_resume_skips_done_documents_and_redoes_changed_options(tmp_path, backend):
    scans = _scans(tmp_path / "scans")
    out = tmp_path / "out"
    options = BatchOptions(out_dir=out, formats=("json", "hocr"), dpi=40, batch_size=4, progress="none")
    run([scans], backend, options)
    first = backend.pages
    assert first == 6

    again = run([scans], backend, options)
    assert backend.pages == first and again.count("skipped") == 3 and again.exit_code == 0

    # a different DPI changes PDF results only; an image's result does not depend on it
    redo = run([scans], backend, BatchOptions(out_dir=out, formats=("json", "hocr"), dpi=30, batch_size=4, progress="none"))
    assert [(Path(o.source).name, o.status) for o in redo.outcomes] == [("receipt.png", "skipped"), ("fax.tiff", "skipped"), ("book.pdf", "done")]
    assert Document.load(out / "book.json").pages[0].dpi == 30

    # a format not made before means the outputs are incomplete: redo
    more = run([scans], backend, BatchOptions(out_dir=out, formats=("json", "alto"), dpi=30, batch_size=4, progress="none"))
    assert more.count("done") == 3
    # a deleted output is noticed
    (out / "receipt.alto.xml").unlink()
    after_delete = run([scans], backend, BatchOptions(out_dir=out, formats=("alto",), dpi=30, batch_size=4, progress="none"))
    assert [(Path(o.source).name, o.status) for o in after_delete.outcomes if o.status == "done"] == [("receipt.png", "done")]
    # --overwrite redoes everything
    calls = backend.pages
    forced = run([scans], backend, BatchOptions(out_dir=out, formats=("alto",), dpi=30, overwrite=True, progress="none"))
    assert forced.count("done") == 3 and backend.pages == calls + 6
    # the --pages choice is part of the options
    pages = run([scans / "book.pdf"], backend, BatchOptions(out_dir=out, formats=("alto",), dpi=30, pages=parse_page_ranges("2-3"), progress="none"))
    assert pages.count("done") == 1 and [p.index for p in Document.load(out / "book.json").pages] != [1, 2]  # json not requested
    assert len(etree.parse(str(out / "book.alto.xml")).getroot().findall(".//{*}Page")) == 2


def test_bad_documents_fail_alone_and_are_retried(tmp_path, backend):
    docs = tmp_path / "docs"
    docs.mkdir()
    pdf = pymupdf.open()
    pdf.new_page(width=200, height=200)
    pdf.save(docs / "secret.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="pw", owner_pw="owner")
    (docs / "zero.pdf").write_bytes(
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
        b"trailer<</Root 1 0 R>>\n%%EOF\n"
    )
    (docs / "junk.pdf").write_bytes(b"garbage" * 50)
    mixed = pymupdf.open()
    mixed.new_page(width=200, height=200)
    mixed.new_page(width=14400, height=14400)  # 8000 x 8000 px at 40 dpi: over the pixel limit below
    mixed.new_page(width=200, height=200)
    mixed.save(docs / "mixed.pdf")
    out = tmp_path / "out"
    options = BatchOptions(out_dir=out, formats=("json", "pdf"), dpi=40, max_pixels=20_000_000, progress="none")
    summary = run([docs, tmp_path / "missing.pdf"], backend, options)
    by_name = {Path(o.source).name: o for o in summary.outcomes}
    assert summary.exit_code == 1
    assert by_name["missing.pdf"].status == "failed"
    assert by_name["secret.pdf"].status == "failed" and "--password" in by_name["secret.pdf"].error
    assert by_name["zero.pdf"].status == "failed" and "no pages" in by_name["zero.pdf"].error
    assert by_name["junk.pdf"].status == "failed" and "not a readable PDF" in by_name["junk.pdf"].error
    mixed_outcome = by_name["mixed.pdf"]
    assert mixed_outcome.status == "partial" and mixed_outcome.pages == 2
    assert len(mixed_outcome.page_errors) == 1 and mixed_outcome.page_errors[0].startswith("page 2")
    saved = Document.load(out / "mixed.json")
    assert [(p.index, p.error is None) for p in saved.pages] == [(0, True), (1, False), (2, True)]
    with pymupdf.open(out / "mixed.pdf") as searchable:
        assert len(searchable) == 3  # the unreadable page is kept (without text)
    assert not (out / "secret.json").exists() and not (out / "zero.json").exists()

    # next run: the failed and partial documents are tried again; with the password secret.pdf works
    retry = run([docs], backend, BatchOptions(out_dir=out, formats=("json", "pdf"), dpi=40, max_pixels=20_000_000, password="pw", progress="none"))
    again = {Path(o.source).name: o.status for o in retry.outcomes}
    assert again == {"junk.pdf": "failed", "mixed.pdf": "partial", "secret.pdf": "done", "zero.pdf": "failed"}
    wrong = run([docs / "secret.pdf"], backend, BatchOptions(out_dir=tmp_path / "o2", password="nope", progress="none"))
    assert "wrong --password" in wrong.outcomes[0].error


def _pdf_with_a_damaged_page(path: Path) -> None:
    """Three text pages; page 2's content stream refers to a missing image and ends in garbage."""
    pdf = pymupdf.open()
    for i in range(3):
        pdf.new_page(width=200, height=200).insert_text((20, 40), f"page {i + 1}")
    pdf.update_stream(pdf[1].get_contents()[0], b"BT /helv 11 Tf 20 40 Td (page 2) Tj ET q /Im99 Do Q BI junk ]] EI")
    pdf.save(path)


@pytest.mark.parametrize("in_process", [True, False])
def test_a_damaged_page_is_read_as_far_as_it_renders_and_reported(tmp_path, backend, in_process):
    _pdf_with_a_damaged_page(tmp_path / "damaged.pdf")
    out = tmp_path / "out"
    options = BatchOptions(out_dir=out, formats=("json",), dpi=40, progress="none", render_in_process=in_process)
    outcome = run([tmp_path / "damaged.pdf"], backend, options).outcomes[0]
    assert outcome.status == "done" and outcome.pages == 3  # nothing is lost: every page was read
    assert len(outcome.page_warnings) == 1
    assert outcome.page_warnings[0].startswith("page 2: damaged, read as far as it renders: ")
    assert "Im99" in outcome.page_warnings[0]
    logged = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert logged[-2]["page_warnings"] == outcome.page_warnings  # the last record is the run's end


def test_cli_names_a_damaged_page_on_stderr(tmp_path, tiny_model_dir):
    _pdf_with_a_damaged_page(tmp_path / "damaged.pdf")
    common = ["--model", str(tiny_model_dir), "--max-new-tokens", "8", "--min-long-side", "0", "--max-grid", "1", "--dpi", "40"]
    result = _cli("damaged.pdf", *common, cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert "varco-ocr: damaged.pdf: page 2: damaged, read as far as it renders:" in result.stderr
    assert "page 1: damaged" not in result.stderr and "page 3: damaged" not in result.stderr


def test_unwritable_output_folder_stops_before_any_work(tmp_path, backend):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OutputFolderError, match="not writable"):
        run([_scans(tmp_path / "scans")], backend, BatchOptions(out_dir=blocker / "out", progress="none"))
    assert backend.calls == []


def test_without_output_folder_documents_are_returned(tmp_path, backend):
    scans = _scans(tmp_path / "scans")
    summary = run([scans / "book.pdf"], backend, BatchOptions(dpi=30, pages=parse_page_ranges("1,3"), progress="none"))
    (doc,) = summary.documents
    assert [p.index for p in doc.pages] == [0, 2] and not list(tmp_path.rglob(LOG_NAME))


# -- interruption (subprocesses) --------------------------------------------------------------------

_RUNNER = textwrap.dedent(
    """
    import sys, torch
    torch.set_num_threads(1)
    from pathlib import Path
    from varco_ocr.batch import BatchOptions, run
    from varco_ocr.engine import OCREngine
    engine = OCREngine(sys.argv[1], max_new_tokens=8, min_long_side=0, max_grid=1)
    summary = run([Path(sys.argv[2])], engine, BatchOptions(out_dir=Path(sys.argv[3]), formats=("json", "hocr", "pdf"),
                  batch_size=1, progress="plain"))
    sys.exit(summary.exit_code)
    """
)


def _many_images(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (220 + i, 160), (255, 255, 255)).save(folder / f"page{i:02d}.png")
    return folder


def _start(tiny_model_dir, src: Path, out: Path) -> subprocess.Popen:
    script = src.parent / "runner.py"
    script.write_text(_RUNNER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(script), str(tiny_model_dir), str(src), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)


def _wait_for_done(out: Path, count: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = out / LOG_NAME
        if log.exists() and log.read_text().count('"status": "done"') >= count:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("batch did not progress")


def test_kill_9_leaves_no_partial_output_and_rerun_does_only_the_rest(tmp_path, tiny_model_dir, backend):
    src = _many_images(tmp_path / "in", 8)
    out = tmp_path / "out"
    shm = Path("/dev/shm")
    blocks_before = set(shm.iterdir()) if shm.is_dir() else set()
    proc = _start(tiny_model_dir, src, out)
    _wait_for_done(out, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if shm.is_dir():  # the orphaned page renderer notices and frees its shared-memory pages
        deadline = time.monotonic() + 10
        while {p for p in set(shm.iterdir()) - blocks_before if p.name.startswith("psm_")} and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not {p for p in set(shm.iterdir()) - blocks_before if p.name.startswith("psm_")}
    done_before = {Path(r["source"]).name for r in _log(out) if r.get("status") == "done"}
    assert 2 <= len(done_before) < 8
    # every file under its final name is complete: JSON parses, hOCR parses, PDF opens
    for path in out.iterdir():
        if path.name.startswith(".") or path.name == LOG_NAME:
            continue
        if path.suffix == ".json":
            Document.load(path)
        elif path.suffix == ".hocr":
            etree.parse(str(path))
        elif path.suffix == ".pdf":
            with pymupdf.open(path) as pdf:
                assert len(pdf) == 1
    rerun = run([src], backend, BatchOptions(out_dir=out, formats=("json", "hocr", "pdf"), batch_size=1, progress="none"))
    redone = {Path(o.source).name for o in rerun.outcomes if o.status == "done"}
    skipped = {Path(o.source).name for o in rerun.outcomes if o.status == "skipped"}
    assert skipped == done_before and redone == {f"page{i:02d}.png" for i in range(8)} - done_before
    assert backend.pages == len(redone)
    assert sorted(p.name for p in out.iterdir() if p.name != LOG_NAME) == sorted(
        f"page{i:02d}.{ext}" for i in range(8) for ext in ("json", "hocr", "pdf")
    )  # nothing else: no temporary file left behind


def test_ctrl_c_stops_cleanly_with_a_summary(tmp_path, tiny_model_dir):
    src = _many_images(tmp_path / "in", 8)
    out = tmp_path / "out"
    proc = _start(tiny_model_dir, src, out)
    _wait_for_done(out, 1, proc)
    proc.send_signal(signal.SIGINT)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()  # a hang is the failure; never leave the runner behind
        proc.communicate()
        raise AssertionError("the run did not stop within 120 s of Ctrl-C") from None
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stderr and "[1/8] done" in stderr  # plain progress lines when not a terminal
    done = [r for r in _log(out) if r.get("status") == "done"]
    assert 1 <= len(done) < 8
    assert _log(out)[-1]["event"] == "run-end" and _log(out)[-1]["interrupted"] is True
    for r in done:
        Document.load(out / f"{Path(r['source']).stem}.json")


# -- the command line -------------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "varco_ocr", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_cli_export_converts_saved_json_without_a_model(tmp_path):
    from exporters.conftest import document_from_pdf_text

    text_pdf = write_text_pdf(tmp_path / "text.pdf")
    (tmp_path / "scans").mkdir()
    scanned = write_scanned_pdf(text_pdf, tmp_path / "scans" / "book.pdf")
    doc = document_from_pdf_text(text_pdf, dpi=150)
    # a relative source, as typed in tmp_path; the JSON was saved in another folder
    (tmp_path / "results").mkdir()
    Document(source="scans/book.pdf", pages=doc.pages, model=doc.model).save(tmp_path / "results" / "book.json")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # HF_HUB_OFFLINE and no cached weights: loading any model would fail, so success means none was loaded
    lost = _cli("export", str(tmp_path / "results" / "book.json"), "--format", "pdf", "-o", str(tmp_path / "out"), cwd=elsewhere)
    assert lost.returncode == 1 and "source scans/book.pdf of the document not found" in lost.stderr
    found = _cli("export", str(tmp_path / "results" / "book.json"), "--format", "txt", "--source", str(scanned), cwd=elsewhere)
    assert found.returncode == 0 and (tmp_path / "results" / "book.txt").exists()  # default: beside the JSON
    result = _cli("export", "results/book.json", "--format", "hocr,alto,pdf,overlay", "-o", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "book.alto.xml", "book.hocr", "book.p0001.overlay.png", "book.p0002.overlay.png", "book.p0003.overlay.png", "book.pdf"
    ]
    with pymupdf.open(tmp_path / "out" / "book.pdf") as pdf:
        assert [[w[4] for w in page.get_text("words", sort=False)] for page in pdf] == [[w.text for w in p.words] for p in doc.pages]
    bad = _cli("export", "results/book.json", "--format", "docx", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip() == "varco-ocr: unknown format 'docx' (choose from json, txt, hocr, alto, pdf, overlay)"


def test_cli_batch_options_and_resume(tmp_path, tiny_model_dir):
    scans = _scans(tmp_path / "scans")
    pdf = pymupdf.open()
    for _ in range(3):  # --pages 1,3 below: every page asked for exists (a missing one would exit 1)
        pdf.new_page(width=200, height=200)
    pdf.save(scans / "secret.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="pw", owner_pw="owner")
    common = ["--model", str(tiny_model_dir), "--max-new-tokens", "8", "--min-long-side", "0", "--max-grid", "1", "--dpi", "40"]
    first = _cli("scans", "-o", "out", "--format", "json,alto", "--glob", "*.pdf", "--pages", "1,3", "--batch-size", "4", *common, cwd=tmp_path)
    assert first.returncode == 1  # secret.pdf failed
    assert "secret.pdf: the PDF is encrypted; give its password with --password" in first.stderr
    assert "done scans/book.pdf" in first.stderr and "Traceback" not in first.stderr
    assert [p.index for p in Document.load(tmp_path / "out" / "book.json").pages] == [0, 2]
    assert not (tmp_path / "out" / "receipt.json").exists()  # --glob kept only PDFs
    second = _cli("scans", "-o", "out", "--format", "json,alto", "--glob", "*.pdf", "--pages", "1,3", "--password", "pw", *common, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "done scans/secret.pdf" in second.stderr and "done scans/book.pdf" not in second.stderr  # book.pdf skipped
    unwritable = _cli("scans", "-o", "scans/receipt.png/out", *common, cwd=tmp_path)
    assert unwritable.returncode == 2 and unwritable.stderr.startswith("varco-ocr: output folder scans/receipt.png/out is not writable")
    text = _cli("scans/book.pdf", "--pages", "2", *common, cwd=tmp_path)  # no -o: text on stdout, no log written
    assert text.returncode == 0 and not list(scans.rglob(LOG_NAME))


def test_thread_and_process_renderers_give_the_same_documents(tmp_path, taught, taught_engine):
    scans = _scans(tmp_path / "scans")
    backend = CountingBackend(taught_engine)
    docs = {}
    for in_process in (False, True):
        summary = run([scans / "book.pdf", scans / "receipt.png"], backend,
                      BatchOptions(dpi=40, batch_size=4, pages=parse_page_ranges("1"), progress="none", render_in_process=in_process))
        docs[in_process] = summary.documents
    assert [d.source for d in docs[True]] == [str(scans / "book.pdf"), str(scans / "receipt.png")]
    assert docs[False] == docs[True]
    assert [(w.text, w.bbox) for w in docs[True][1].pages[0].words] == list(taught.page("receipt").words)  # not empty


def test_cli_resume_redoes_a_document_read_with_another_model_or_setting(tmp_path, tmp_path_factory, taught):
    """The command line's model and settings reach the resume fingerprint (EngineSettings.fingerprint,
    BatchOptions.model): a re-run with the same options skips the document; another --max-new-tokens
    or another --model (a copy of the taught model under another name) reads it again, and the
    document then names that model."""
    Image.new("RGB", (384, 96), "white").save(tmp_path / "page.png")
    other_model = tmp_path_factory.mktemp("other") / "model"  # apart: its JSON files are not documents
    shutil.copytree(taught.path, other_model)
    args = ["page.png", "-o", "out", "--format", "json"]

    def reads(*extra: str) -> int:
        """Run the command; how many times the run log says page.png was read (skips are not logged)."""
        res = _cli(*args, *taught.cli_args, *extra, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        return sum(r.get("source") == "page.png" and r.get("status") == "done" for r in _log(tmp_path / "out"))

    assert reads() == 1
    assert reads() == 1  # same options: skipped
    assert reads("--max-new-tokens", "255") == 2  # the last one wins over taught.cli_args' 256
    assert reads("--max-new-tokens", "255") == 2
    assert reads("--max-new-tokens", "255", "--model", str(other_model)) == 3
    doc = Document.load(tmp_path / "out" / "page.json")
    assert doc.model == str(other_model)
    assert [(w.text, w.bbox) for w in doc.pages[0].words] == list(taught.page("blank-384x96").words)


def test_cli_names_requested_pages_a_pdf_does_not_have_and_exits_1(tmp_path, tiny_model_dir):
    """issue 16 item 14: --pages 1-5,9 on a 4-page PDF reads pages 1-4, names 5 and 9 on stderr and
    in the run log, and exits 1 (the request was not fully met), with -o, on resume and to stdout."""
    pdf = pymupdf.open()
    for i in range(4):
        pdf.new_page(width=100, height=80).insert_text((10, 30), f"p{i + 1}")
    pdf.save(tmp_path / "four.pdf")
    common = ["--model", str(tiny_model_dir), "--max-new-tokens", "8", "--min-long-side", "0", "--max-grid", "1", "--dpi", "30"]
    note = "--pages 1-5,9: pages 5,9 not in the document (it has 4 pages)"
    first = _cli("four.pdf", "--pages", "1-5,9", "-o", "out", *common, cwd=tmp_path)
    assert first.returncode == 1 and "Traceback" not in first.stderr
    (line,) = [line for line in first.stderr.splitlines() if "not in the document" in line]
    assert line.startswith("[1/1] done four.pdf: ") and f"; {note} (4/4 pages" in line
    assert len(Path(tmp_path / "out" / "four.txt").read_text(encoding="utf-8").split("\f")) == 4
    (record,) = [r for r in _log(tmp_path / "out") if "status" in r]
    assert (record["status"], record["pages"], record["pages_missing"], record["page_warnings"]) == ("done", 4, "5,9", [note])
    again = _cli("four.pdf", "--pages", "1-5,9", "-o", "out", *common, cwd=tmp_path)  # resumed: skipped, said again
    assert again.returncode == 1 and f"skipped four.pdf: {note}" in again.stderr
    stdout = _cli("four.pdf", "--pages", "1-5,9", "--json", *common, cwd=tmp_path)
    assert stdout.returncode == 1 and [line for line in stdout.stderr.splitlines() if line.startswith("varco-ocr:")] == [f"varco-ocr: four.pdf: {note}"]
    assert [p["index"] for p in json.loads(stdout.stdout)["pages"]] == [0, 1, 2, 3]
    assert _cli("four.pdf", "--pages", "2-", "-o", "out2", *common, cwd=tmp_path).returncode == 0  # "to the last": all there


class _PixelRecorder:
    """A backend that records the pixels it is given (and whether it asked for a thread renderer)."""

    def __init__(self, render_in_thread: bool) -> None:
        if render_in_thread:
            self.render_in_thread = True
        self.seen: list[tuple[str, tuple[int, int], bytes]] = []

    def ocr_batch(self, images, batch_size=4, indices=None):
        from varco_ocr.document import Page

        out = []
        for image, index in zip(images, indices):
            self.seen.append((image.mode, image.size, image.tobytes()))
            out.append(Page(index=index, width=image.size[0], height=image.size[1]))
        return out


def test_a_backend_asking_for_a_thread_renderer_gets_one_with_the_same_pixels(tmp_path, monkeypatch, samples):
    """The server backend's pages are rendered in a thread (measured cheaper than the child process
    and its shared-memory copies); the pixels handed to the backend are the same either way."""
    import varco_ocr.batch as batch_module

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(samples / "three-pages.pdf", folder / "doc.pdf")
    shutil.copy(samples / "receipt.png", folder / "receipt.png")
    chosen = []
    start = batch_module._start_producer
    monkeypatch.setattr(batch_module, "_start_producer", lambda files, options, maxsize: chosen.append(options.render_in_process) or start(files, options, maxsize))
    seen = {}
    for thread in (True, False):
        backend = _PixelRecorder(render_in_thread=thread)
        assert run([folder], backend, BatchOptions(dpi=72, progress="none")).exit_code == 0
        seen[thread] = backend.seen
    assert chosen[0] is False  # asked for: a thread
    assert chosen[1] is None  # not asked for: the platform default (a child process on Linux)
    assert len(seen[True]) == 4 and seen[True] == seen[False]


# -- issue 17: the engine's next batch is prepared while this one generates, across runner batches ---


def _timeline(engine, monkeypatch, sleep: float = 0.3, fail=lambda images: False, fail_generate=lambda n: False):
    """Record when the engine prepares (processor) and generates each batch; generation waits
    ``sleep`` s without the GIL, as an accelerator does. ``fail(images)`` makes preparation raise,
    ``fail_generate(call number)`` generation."""
    import threading

    events: list[tuple[str, int]] = []
    spans: list[tuple[str, float, float]] = []  # (what, start, end)
    lock = threading.Lock()
    real_inputs, real_generate = engine.model_inputs, engine.generate_inputs
    calls = [0]

    def model_inputs(images, task_text, processor=None):
        start = time.monotonic()
        with lock:
            events.append(("prepare", len(images)))
        if fail(images):
            raise RuntimeError("injected preparation failure")
        out = real_inputs(images, task_text, processor)
        time.sleep(sleep / 6)  # preparation takes a while too (no GIL held), so overlaps are visible
        spans.append(("prepare", start, time.monotonic()))
        return out

    def generate_inputs(inputs, *args, **kwargs):
        calls[0] += 1
        with lock:
            events.append(("generate", inputs["input_ids"].shape[0]))
        start = time.monotonic()
        try:
            if fail_generate(calls[0]):
                raise RuntimeError("injected generation failure")
            out = real_generate(inputs, *args, **kwargs)
            time.sleep(sleep)
            return out
        finally:
            spans.append(("generate", start, time.monotonic()))

    monkeypatch.setattr(engine, "model_inputs", model_inputs)
    monkeypatch.setattr(engine, "generate_inputs", generate_inputs)
    return events, spans


def _documents(out: Path) -> dict[str, dict]:
    docs = {}
    for path in sorted(out.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        docs[path.name] = data["pages"]
    return docs


def _taught_images(folder: Path) -> dict[str, str]:
    """Six pages the taught model reads (each taught page, the two samples twice, under other names):
    {file stem: taught page name}."""
    folder.mkdir(parents=True)
    pages = {"a-receipt": "receipt", "b-blank": "blank-384x96", "c-dense": "dense-page", "d-blank": "blank-384x160",
             "e-dense": "dense-page", "f-receipt": "receipt"}
    for stem, name in pages.items():
        if name.startswith("blank-"):
            Image.new("RGB", tuple(int(v) for v in name.removeprefix("blank-").split("x")), "white").save(folder / f"{stem}.png")
        else:
            shutil.copy(SAMPLES / f"{name}.png", folder / f"{stem}.png")
    return pages


def test_runner_prepares_the_next_batch_while_this_one_generates(tmp_path, taught, taught_engine, monkeypatch):
    """batch.run with the local engine: a batch's preparation starts while the previous batch is
    still generating (before, each runner batch was one ocr_batch call: preparation only between
    generations), and the documents equal those of the one-call-per-batch path: each holds its own
    page's taught words (pages of several sizes, so a batch is padded)."""
    src = tmp_path / "in"
    pages = _taught_images(src)
    engine = taught_engine
    sequential = run([src], CountingBackend(engine), BatchOptions(out_dir=tmp_path / "seq", batch_size=2, progress="none"))
    events, spans = _timeline(engine, monkeypatch)
    summary = run([src], engine, BatchOptions(out_dir=tmp_path / "out", batch_size=2, progress="none"))
    assert summary.exit_code == 0 and summary.count("done") == 6 and sequential.count("done") == 6
    assert [n for kind, n in events if kind == "generate"] == [2, 2, 2]
    generations = [(a, b) for kind, a, b in spans if kind == "generate"]
    overlapped = [(a, b) for kind, a, b in spans if kind == "prepare" and any(a < g1 and b > g0 for g0, g1 in generations)]
    assert len(overlapped) == 2, spans  # batches 2 and 3 prepared during batches 1 and 2's generation
    assert _documents(tmp_path / "out") == _documents(tmp_path / "seq")
    read = {name.removesuffix(".json"): [(w["text"], w["bbox"]) for w in doc[0]["words"]] for name, doc in _documents(tmp_path / "out").items()}
    assert read == {stem: taught.words(name) for stem, name in pages.items()}


def test_overlapped_runner_fails_a_page_alone_and_loses_no_other(tmp_path, engine, monkeypatch):
    """A batch whose preparation fails (in the prefetch thread) is retried page by page: only the
    bad page fails; a batch whose generation fails once is read again page by page, every page kept."""
    tiff = tmp_path / "three.tiff"
    Image.new("RGB", (140, 70), "white").save(
        tiff, save_all=True, append_images=[Image.new("RGB", (77, 99), "white"), Image.new("RGB", (90, 60), "white")])
    other = _many_images(tmp_path / "in", 3)
    _timeline(engine, monkeypatch, sleep=0, fail=lambda images: any(im.size[0] == 77 for im in images))
    summary = run([tiff, other], engine, BatchOptions(out_dir=tmp_path / "out", batch_size=2, progress="none"))
    by_name = {Path(o.source).name: o for o in summary.outcomes}
    assert by_name["three.tiff"].status == "partial" and by_name["three.tiff"].page_errors[0].startswith("page 2: OCR failed")
    assert [by_name[f"page{i:02d}.png"].status for i in range(3)] == ["done"] * 3
    data = json.loads((tmp_path / "out" / "three.json").read_text(encoding="utf-8"))
    assert [(p["index"], p["width"], "error" in p) for p in data["pages"]] == [(0, 140, False), (1, 77, True), (2, 90, False)]

    monkeypatch.undo()
    events, _ = _timeline(engine, monkeypatch, sleep=0, fail_generate=lambda n: n == 1)
    summary = run([other], engine, BatchOptions(out_dir=tmp_path / "out2", batch_size=2, progress="none"))
    assert summary.exit_code == 0 and summary.count("done") == 3
    assert [n for kind, n in events if kind == "generate"] == [2, 1, 1, 1]  # the failed pair again one by one


def test_overlapped_runner_retries_a_failing_last_batch(tmp_path, engine, monkeypatch):
    """The last batch failing after the stream was told no more batches come: its pages are still
    read again one by one (a fresh stream), none lost."""
    src = _many_images(tmp_path / "in", 4)
    events, _ = _timeline(engine, monkeypatch, sleep=0, fail_generate=lambda n: n == 2)
    summary = run([src], engine, BatchOptions(out_dir=tmp_path / "out", batch_size=2, progress="none"))
    assert summary.exit_code == 0 and summary.count("done") == 4
    assert [n for kind, n in events if kind == "generate"] == [2, 2, 1, 1]


def test_an_image_that_cannot_be_decoded_fails_as_a_document_with_one_line(tmp_path, backend):
    """Issue 15 item 5: an image is its one page, so failing to decode it is failing to open the document,
    said as load_image says it (the file named once); no document with an empty error page is returned to
    print, and nothing is written with an output folder. Before, it came back as a document whose page had
    the error, and the CLI printed that document and a line naming the file twice."""
    good = _many_images(tmp_path / "in", 1) / "page00.png"
    bad = tmp_path / "in" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    printed = run([good, bad], backend, BatchOptions(progress="none"))
    assert [d.source for d in printed.documents] == [str(good)]
    (failed,) = [o for o in printed.outcomes if o.status == "failed"]
    assert failed.source == str(bad) and failed.error.startswith(f"{bad}: ") and str(bad) not in failed.error[len(str(bad)):]
    assert failed.page_errors == [] and printed.exit_code == 1
    out = tmp_path / "out"
    written = run([good, bad], backend, BatchOptions(out_dir=out, progress="none"))
    assert written.count("failed") == 1 and written.count("done") == 1
    assert sorted(p.name for p in out.iterdir()) == sorted([LOG_NAME, "page00.json"])
    (record,) = [r for r in _log(out) if r.get("source") == str(bad)]
    assert record["status"] == "failed" and record["error"] == failed.error
