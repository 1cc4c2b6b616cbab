"""What the batch runner promises about files (issue 12, items 2-7 and 9), with the tiny model:
it never overwrites an input or a file it did not write, never reads its outputs back as inputs,
resumes by source (not by name), gives every output a unique path, creates files with the umask's
mode, keeps a failed page's size, and stops cleanly when the run log cannot be written."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pymupdf
import pytest
from PIL import Image

from schema_check import assert_valid_document
from test_batch import _cli, _log, backend, engine  # noqa: F401 - fixtures shared with test_batch
from varco_ocr.batch import LOG_NAME, BatchOptions, RunLog, RunLogError, run
from varco_ocr.document import Document, write_atomic

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("documents_are_schema_valid")]
REPO = Path(__file__).resolve().parents[1]


def _png(path: Path, width: int = 90, shade: int = 255) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, 60), (shade, shade, shade)).save(path)
    return path


def _pdf(path: Path, pages: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf = pymupdf.open()
    for i in range(pages):
        pdf.new_page(width=100, height=80).insert_text((10, 30), f"p{i + 1}")
    pdf.save(path)
    return path


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def _opts(out: Path, formats=("json",), **kw) -> BatchOptions:
    return BatchOptions(out_dir=out, formats=formats, **{"dpi": 30, "batch_size": 4, "progress": "none", **kw})


# -- item 2: an input is never overwritten; a foreign file is refused unless --overwrite ------------


@pytest.mark.parametrize("overwrite", [False, True])
def test_outputs_beside_inputs_never_replace_an_input(tmp_path, backend, overwrite):
    folder = tmp_path / "in"
    _png(folder / "x.png")
    _pdf(folder / "x.pdf")
    _pdf(folder / "x_png.pdf", pages=2)  # the name x.png's searchable PDF gets once x.png and x.pdf share a stem
    before = _digests(folder)
    summary = run([folder], backend, _opts(folder, ("json", "pdf"), overwrite=overwrite))
    assert summary.exit_code == 0, [(o.source, o.error) for o in summary.outcomes]
    after = _digests(folder)
    assert {name: after[name] for name in before} == before  # every input byte for byte as it was
    outputs = sorted(set(after) - set(before))
    assert len(outputs) == 7  # 3 documents x (json, pdf) + the log, each under its own new name
    assert LOG_NAME in outputs and "x_png.pdf" not in outputs
    with pymupdf.open(folder / "x_png.pdf") as still_the_input:
        assert len(still_the_input) == 2


@pytest.mark.parametrize("link", ["symlink", "hard link"])
def test_an_output_path_that_links_to_an_input_gets_a_numbered_name(tmp_path, backend, link):
    """README guarantee: a path that is one of the run's inputs through a symlink or a hard link is
    never written, even with --overwrite; the document gets a numbered name."""
    folder = tmp_path / "in"
    _png(folder / "a.png")
    book = _pdf(folder / "book.pdf", pages=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.pdf").symlink_to(book) if link == "symlink" else os.link(book, out / "a.pdf")
    before = book.read_bytes()
    summary = run([folder / "a.png", book], backend, _opts(out, ("pdf",), overwrite=True))
    assert summary.exit_code == 0, [(o.source, o.error) for o in summary.outcomes]
    assert book.read_bytes() == before and (out / "a.pdf").read_bytes() == before
    assert sorted(p.name for p in out.iterdir() if p.name != LOG_NAME) == ["a-2.pdf", "a.pdf", "book.pdf"]
    with pymupdf.open(out / "a-2.pdf") as pdf:  # a.png's searchable PDF, under the numbered name
        assert len(pdf) == 1


def test_an_unrelated_existing_file_is_refused_naming_it_and_overwrite(tmp_path, backend):
    folder = tmp_path / "in"
    _png(folder / "report.png")
    (folder / "report.pdf").write_bytes(b"%PDF-1.4 someone else's report")
    refused = run([folder], backend, _opts(folder, ("pdf",), glob="*.png"))
    (outcome,) = refused.outcomes
    assert outcome.status == "failed" and refused.exit_code == 1
    assert str(folder.resolve() / "report.pdf") in outcome.error and "--overwrite" in outcome.error
    assert "\n" not in outcome.error
    assert (folder / "report.pdf").read_bytes() == b"%PDF-1.4 someone else's report"
    assert backend.pages == 0  # refused before the model read anything
    assert _log(folder)[-2]["status"] == "failed"  # recorded, so the next run tries again

    forced = run([folder], backend, _opts(folder, ("pdf",), glob="*.png", overwrite=True))
    assert forced.outcomes[0].status == "done"
    with pymupdf.open(folder / "report.pdf") as pdf:  # now varco-ocr's searchable PDF of report.png
        assert len(pdf) == 1
    again = run([folder], backend, _opts(folder, ("pdf",), glob="*.png"))
    assert again.outcomes[0].status == "skipped"  # the log says this tool wrote it for this source


def test_cli_refuses_a_foreign_file_in_one_line_before_loading_the_model(tmp_path):
    folder = tmp_path / "in"
    _png(folder / "report.png")
    (folder / "report.pdf").write_bytes(b"%PDF-1.4 someone else's report")
    # no model exists at this path: the refusal comes before any model is needed
    result = _cli("in", "-o", "in", "--glob", "*.png", "--format", "pdf", "--model", str(tmp_path / "no-model"), cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "report.pdf" in line]
    assert line.startswith("failed in/report.png: ") and "--overwrite" in line
    assert (folder / "report.pdf").read_bytes() == b"%PDF-1.4 someone else's report"


# -- item 3: the output folder is never an input ----------------------------------------------------


def test_output_folder_inside_the_input_folder_is_never_read_back(tmp_path, backend):
    folder = tmp_path / "in"
    _png(folder / "a.png")
    _pdf(folder / "b.pdf", pages=2)
    expected = [str(folder / "a.png"), str(folder / "b.pdf")]
    for attempt in range(3):
        summary = run([folder], backend, _opts(folder / "out", ("json", "pdf", "overlay")))
        assert sorted(o.source for o in summary.outcomes) == expected, attempt
        assert not any(str(folder / "out") in note for note in summary.notes)
    assert not (folder / "out" / "out").exists()
    assert backend.pages == 3  # read once; the second and third runs skip both


def test_output_folder_that_is_the_input_folder_reads_only_the_inputs(tmp_path, backend):
    folder = tmp_path / "in"
    _png(folder / "a.png")
    _pdf(folder / "b.pdf", pages=2)
    first = run([folder], backend, _opts(folder, ("json", "pdf", "overlay")))
    assert first.count("done") == 2
    second = run([folder], backend, _opts(folder, ("json", "pdf", "overlay")))
    assert sorted((Path(o.source).name, o.status) for o in second.outcomes) == [("a.png", "skipped"), ("b.pdf", "skipped")]


def test_files_named_explicitly_inside_the_output_folder_are_refused_the_others_read(tmp_path, backend, capsys):
    folder = tmp_path / "in"
    _pdf(folder / "a.pdf", pages=2)
    out = folder / "out"
    assert run([folder], backend, _opts(out, ("json", "overlay"))).count("done") == 1
    overlay = out / "a.p0001.overlay.png"  # an output this run's log records
    assert overlay.is_file()
    below = _png(out / "sub" / "u.png")  # not an output, but below the output folder
    beside = _png(out / "mine.png")  # directly in the output folder (as `scan.png -o .`): an input
    b = _png(folder / "b.png")
    summary = run([b, overlay, below, beside], backend, _opts(out, ("json", "overlay"), progress="plain"))
    assert summary.exit_code == 1
    status = {Path(o.source).name: o.status for o in summary.outcomes}
    assert status == {"b.png": "done", "mine.png": "done", "a.p0001.overlay.png": "failed", "u.png": "failed"}
    lines = [line for line in capsys.readouterr().err.splitlines() if "never an input" in line or "never inputs" in line]
    assert lines == [
        f"failed {overlay}: {overlay}: not read: it is an output varco-ocr wrote (the output folder's run log names it); outputs are never inputs",
        f"failed {below}: {below}: not read: it lies inside the output folder {out}; the output folder, and anything under it, is never an input",
    ]
    assert not (out / "a.p0001.overlay.json").exists() and not (out / "u.json").exists()


# -- item 4: resume trusts the source, not the name --------------------------------------------------


def test_resume_checks_the_source_not_the_name(tmp_path, backend):
    b = _png(tmp_path / "b" / "x.png", width=90)
    a = _png(tmp_path / "a" / "x.png", width=120)
    out = tmp_path / "out"
    assert run([b], backend, _opts(out)).outcomes[0].status == "done"
    # another x.png into the same folder: x.json is b's, so a's result is refused, not swapped in
    second = run([a], backend, _opts(out))
    assert second.outcomes[0].status == "failed" and "--overwrite" in second.outcomes[0].error
    assert Document.load(out / "x.json").source == str(b)
    assert run([a], backend, _opts(out, overwrite=True)).outcomes[0].status == "done"
    assert Document.load(out / "x.json").source == str(a)
    # b's old record still says done with its fingerprint, but x.json now holds a's result
    third = run([b], backend, _opts(out))
    assert third.outcomes[0].status != "skipped"
    assert Document.load(out / "x.json").source == str(a)  # and nothing was silently replaced
    assert run([b], backend, _opts(out, overwrite=True)).outcomes[0].status == "done"
    assert Document.load(out / "x.json").source == str(b)
    assert run([b], backend, _opts(out)).outcomes[0].status == "skipped"


def test_resume_redoes_a_document_whose_content_changed(tmp_path, backend):
    src = _png(tmp_path / "in" / "x.png", width=90)
    out = tmp_path / "out"
    run([src], backend, _opts(out))
    _png(src, width=130)  # same path, other content
    assert run([src], backend, _opts(out)).outcomes[0].status == "done"
    assert Document.load(out / "x.json").pages[0].width == 130


def test_another_model_or_generation_setting_is_not_skipped(tmp_path, backend):
    src = _png(tmp_path / "in" / "x.png")
    out = tmp_path / "out"
    settings = {"max_new_tokens": 8, "min_long_side": 0, "max_grid": 1, "keep_raw": False}
    assert run([src], backend, _opts(out, model="model-a", settings=settings)).outcomes[0].status == "done"
    assert run([src], backend, _opts(out, model="model-a", settings=settings)).outcomes[0].status == "skipped"
    assert run([src], backend, _opts(out, model="model-b", settings=settings)).outcomes[0].status == "done"
    more_tokens = {**settings, "max_new_tokens": 9}
    assert run([src], backend, _opts(out, model="model-b", settings=more_tokens)).outcomes[0].status == "done"
    assert run([src], backend, _opts(out, model="model-b", settings=more_tokens)).outcomes[0].status == "skipped"


# -- item 5: every output path of a run is unique ---------------------------------------------------


def test_overlay_names_of_a_multipage_pdf_and_an_image_do_not_collide(tmp_path, backend):
    folder = tmp_path / "in"
    _pdf(folder / "x.pdf", pages=2)
    _png(folder / "x.p0001.png", width=150)
    out = tmp_path / "out"
    summary = run([folder], backend, _opts(out, ("json", "overlay")))
    assert summary.count("done") == 2
    written = [rel for r in _log(out) if r.get("status") == "done" for paths in r["outputs_by_format"].values() for rel in paths]
    assert len(written) == len(set(written)) == 5  # 2 JSON + 3 overlays
    overlays = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert overlays == sorted(w for w in written if w.endswith(".png"))
    sizes = []
    for name in overlays:
        with Image.open(out / name) as im:
            sizes.append(im.size)
    assert sorted(sizes) == [(42, 34), (42, 34), (150, 60)]  # both PDF pages (100 x 80 pt at 30 dpi) and the image
    # resume: both complete, nothing redone
    assert run([folder], backend, _opts(out, ("json", "overlay"))).count("skipped") == 2


# -- item 6: permissions ---------------------------------------------------------------------------


@pytest.fixture
def umask_002():
    old = os.umask(0o002)
    yield 0o664
    os.umask(old)


def test_outputs_get_the_mode_a_plain_open_gives(tmp_path, backend, umask_002):
    src = _png(tmp_path / "in" / "x.png")
    out = tmp_path / "out"
    run([src], backend, _opts(out, ("json", "txt", "hocr", "alto", "pdf", "overlay")))
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert len(modes) == 7 and set(modes.values()) == {umask_002}, modes
    write_atomic(tmp_path / "plain.txt", "x")
    with open(tmp_path / "reference.txt", "w") as f:
        f.write("x")
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == stat.S_IMODE((tmp_path / "reference.txt").stat().st_mode)


# -- item 7: a failed page is schema-valid, with its size ------------------------------------------


def test_a_failed_pdf_page_keeps_its_size_and_the_document_validates(tmp_path, backend):
    mixed = pymupdf.open()
    mixed.new_page(width=200, height=200)
    mixed.new_page(width=14400, height=7200)  # 8000 x 4000 px at 40 dpi: over the pixel limit below
    mixed.new_page(width=200, height=200)
    mixed.save(tmp_path / "mixed.pdf")
    out = tmp_path / "out"
    summary = run([tmp_path / "mixed.pdf"], backend, BatchOptions(out_dir=out, dpi=40, max_pixels=20_000_000, progress="none"))
    assert summary.outcomes[0].status == "partial"
    data = json.loads((out / "mixed.json").read_text(encoding="utf-8"))
    failed = data["pages"][1]
    assert (failed["width"], failed["height"], failed["words"]) == (8000, 4000, []) and failed["error"].startswith("page 2")
    assert_valid_document(data, out / "mixed.json")


class FailsOnWidth:
    """The real engine, except that a batch holding an image of ``width`` pixels raises (a fault)."""

    def __init__(self, engine, width: int) -> None:
        self.engine, self.width, self.model_name = engine, width, engine.model_name

    def ocr_batch(self, images, batch_size=4, indices=None):
        if any(im.size[0] == self.width for im in images):
            raise RuntimeError("injected OCR failure")
        return self.engine.ocr_batch(images, batch_size=batch_size, indices=indices)


def test_a_page_the_model_failed_keeps_its_size(tmp_path, engine):
    tiff = tmp_path / "two.tiff"
    Image.new("RGB", (140, 70), "white").save(tiff, save_all=True, append_images=[Image.new("RGB", (77, 99), "white")])
    out = tmp_path / "out"
    summary = run([tiff], FailsOnWidth(engine, 77), _opts(out))
    assert summary.outcomes[0].status == "partial"
    data = json.loads((out / "two.json").read_text(encoding="utf-8"))
    assert [(p["width"], p["height"], "error" in p) for p in data["pages"]] == [(140, 70, False), (77, 99, True)]
    assert_valid_document(data)


# -- item 9: the run log cannot be written -----------------------------------------------------------


def _fail_log_writes(monkeypatch, after: int, error: OSError | None = None, short: bool = False) -> list[int]:
    """Make ``os.write`` on the run log fail (or write half) after ``after`` successful writes."""
    real_write = os.write
    count = [0]

    def write(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.endswith(LOG_NAME):
            count[0] += 1
            if count[0] > after:
                if short:
                    return real_write(fd, bytes(data)[: len(data) // 2])
                raise error or OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    return count


def _psm_blocks() -> set[str]:
    shm = Path("/dev/shm")
    return {p.name for p in shm.iterdir() if p.name.startswith("psm_")} if shm.is_dir() else set()


def _assert_no_leaked_blocks(before: set[str]) -> None:
    """No shared-memory page block outlives the run. /dev/shm is shared with every process on the
    machine, so a new block may be another program's page in flight: a leak is a new block that is
    still there seconds later (a page block lives well under a second)."""
    new = _psm_blocks() - before
    deadline = time.monotonic() + 10
    while new and time.monotonic() < deadline:
        time.sleep(0.2)
        new &= _psm_blocks()
    assert not new, f"leaked shared memory: {sorted(new)}"


@pytest.mark.parametrize("fault", ["enospc", "permission", "short"])
def test_a_full_disk_under_the_log_stops_the_run_cleanly_and_resumably(tmp_path, backend, monkeypatch, fault):
    folder = tmp_path / "in"
    for i in range(4):
        _pdf(folder / f"d{i}.pdf")
    out = tmp_path / "out"
    blocks = _psm_blocks()
    error = PermissionError(errno.EACCES, os.strerror(errno.EACCES)) if fault == "permission" else None
    # writes: run start, then per document "writing" + outcome: the 4th is the second document's intent
    _fail_log_writes(monkeypatch, after=3, error=error, short=fault == "short")
    with pytest.raises(RunLogError) as raised:
        run([folder], backend, _opts(out, batch_size=1))
    monkeypatch.undo()
    message = str(raised.value)
    assert "\n" not in message and str(out / LOG_NAME) in message and "resume" in message
    lines = (out / LOG_NAME).read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])  # no cut record
    assert len(lines) - 1 == 3
    _assert_no_leaked_blocks(blocks)  # the renderer freed its shared-memory pages
    resumed = run([folder], backend, _opts(out))
    assert [o.status for o in resumed.outcomes] == ["skipped", "done", "done", "done"]


def test_a_short_write_is_cut_back_to_the_last_whole_record(tmp_path, monkeypatch):
    log = RunLog(tmp_path)
    log.append({"event": "run"})
    whole = log.path.read_bytes()
    _fail_log_writes(monkeypatch, after=0, short=True)
    with pytest.raises(RunLogError, match="run the same command again to resume"):
        log.append({"source": "x.png", "status": "done"})
    assert log.path.read_bytes() == whole


_CLI_WITH_A_FULL_DISK = textwrap.dedent(
    """
    import errno, os, sys
    real_write, count = os.write, [0]
    def write(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.endswith("varco-ocr.log.jsonl"):
            count[0] += 1
            if count[0] > 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)
    os.write = write
    from varco_ocr.cli import main
    main(sys.argv[1:])
    """
)


def test_cli_says_one_line_and_exits_1_when_the_disk_fills(tmp_path, tiny_model_dir):
    folder = tmp_path / "in"
    for i in range(3):
        _pdf(folder / f"d{i}.pdf")
    script = tmp_path / "full_disk.py"
    script.write_text(_CLI_WITH_A_FULL_DISK)
    blocks = _psm_blocks()
    args = [str(folder), "-o", str(tmp_path / "out"), "--json", "--model", str(tiny_model_dir), "--max-new-tokens", "8",
            "--min-long-side", "0", "--max-grid", "1", "--dpi", "30"]
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    problems = [line for line in proc.stderr.splitlines() if line.startswith("varco-ocr:")]
    assert len(problems) == 1 and "No space left on device" in problems[0] and "resume" in problems[0]
    _assert_no_leaked_blocks(blocks)
    lines = (tmp_path / "out" / LOG_NAME).read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)


def test_stale_temp_files_beside_done_documents_are_removed(tmp_path, backend):
    src = _png(tmp_path / "in" / "x.png")
    out = tmp_path / "out"
    run([src], backend, _opts(out, ("json", "txt")))
    stale = [out / ".x.json.0badc0de.tmp", out / ".x.txt.1badc0de.tmp"]
    for path in stale:
        path.write_text("half a file")
    assert run([src], backend, _opts(out, ("json", "txt"))).outcomes[0].status == "skipped"
    assert not any(p.exists() for p in stale)


def _tiff_with_a_corrupt_second_frame(path: Path) -> Path:
    """Two deflate-compressed frames; the second frame's compressed data is scrambled (its header is
    intact, so its size is known, but it does not decode)."""
    Image.new("RGB", (60, 40), "white").save(path, save_all=True, append_images=[Image.effect_noise((70, 50), 50).convert("RGB")],
                                             compression="tiff_deflate")
    with Image.open(path) as im:
        im.seek(1)
        offset, count = im.tag_v2[273][0], im.tag_v2[279][0]
    data = bytearray(path.read_bytes())
    for i in range(offset + 2, offset + count - 2):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    return path


def test_an_undecodable_tiff_frame_keeps_its_size_in_every_output(tmp_path, backend):
    tiff = _tiff_with_a_corrupt_second_frame(tmp_path / "fax.tiff")
    out = tmp_path / "out"
    summary = run([tiff], backend, _opts(out, ("json", "alto", "pdf")))
    outcome = summary.outcomes[0]
    assert outcome.status == "partial", outcome.error
    data = json.loads((out / "fax.json").read_text(encoding="utf-8"))
    assert [(p["width"], p["height"], "error" in p) for p in data["pages"]] == [(60, 40, False), (70, 50, True)]
    with pymupdf.open(out / "fax.pdf") as pdf:  # the unreadable page is kept, blank, at its size
        assert len(pdf) == 2
        assert [round(p.rect.width / p.rect.height, 2) for p in pdf] == [1.5, 1.4]


# -- item 8 in the run: characters XML forbids are replaced in hOCR/ALTO, and the run says how many ------


class ControlCharacterBackend:
    """Answers every page with words; pages 90 px wide get words holding an escape and a NUL (what a
    model can emit), other pages clean words."""

    model_name = "m"

    def ocr_batch(self, images, batch_size=4, indices=None):
        from varco_ocr.document import Word
        from varco_ocr.layout import build_page

        pages = []
        for i, im in zip(indices or [0] * len(images), images):
            texts = ["a\x1bb", "ok\x00"] if im.size[0] == 90 else ["clean", "words"]
            words = [Word(t, (5 + 40 * k, 5, 40 + 40 * k, 25)) for k, t in enumerate(texts)]
            pages.append(build_page(words, index=i, width=im.size[0], height=im.size[1]))
        return pages


def test_replaced_xml_characters_are_noted_per_document_and_logged(tmp_path, capsys):
    from lxml import etree

    folder = tmp_path / "in"
    _png(folder / "bad.png", width=90)
    _png(folder / "good.png", width=120)
    out = tmp_path / "out"
    summary = run([folder], ControlCharacterBackend(), _opts(out, ("json", "hocr", "alto"), progress="plain"))
    assert summary.exit_code == 0 and [o.status for o in summary.outcomes] == ["done", "done"]
    note = f"{folder / 'bad.png'}: 2 characters that XML 1.0 forbids replaced by U+FFFD in hOCR/ALTO"
    assert summary.notes == [note]
    assert [line for line in capsys.readouterr().err.splitlines() if "XML" in line] == [note]
    records = {Path(r["source"]).name: r for r in _log(out) if "status" in r}
    assert records["bad.png"]["xml_replaced"] == 2 and "xml_replaced" not in records["good.png"]
    for name in ("bad.hocr", "bad.alto.xml"):
        etree.parse(str(out / name))  # well-formed
        assert (out / name).read_text(encoding="utf-8").count("\ufffd") == 2
    # JSON keeps what the model read: only the XML formats replace characters
    assert [w.text for w in Document.load(out / "bad.json").pages[0].words] == ["a\x1bb", "ok\x00"]


def test_ctrl_c_during_a_documents_bookkeeping_takes_effect_after_it():
    """The log record, the summary entry and the progress line of a finished document are written
    as one step: a Ctrl-C in the middle is raised right after it, also while another thread is alive
    (the prefetch thread of the local engine), to which the kernel may deliver the signal."""
    import signal
    import threading
    import time

    from varco_ocr.batch import _interrupts_deferred

    done = []
    other = threading.Event()
    thread = threading.Thread(target=other.wait)
    thread.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            with _interrupts_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)  # the signal has arrived by now
                done.append("record, summary and progress written")
    finally:
        other.set()
        thread.join()
    assert done == ["record, summary and progress written"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_log_records_of_another_shape_are_ignored_not_a_traceback(tmp_path, backend):
    """Run-log lines that parse as JSON but have other field types (another version, a hand edit):
    ignored, as an unparsable line is, so their document is redone; the run does not stop. The same
    reader (LogIndex) serves the Ray run's manifest."""
    src = _png(tmp_path / "in" / "x.png")
    out = tmp_path / "out"
    out.mkdir()
    key = str(src.resolve())
    bad = [{"source": str(src), "source_path": key, "status": "done", "outputs_by_format": ["x.json"]},
           {"source": str(src), "source_path": key, "event": "writing", "outputs": 5},
           {"source": str(src), "source_path": key, "status": "done", "outputs_by_format": {"json": [None]}},
           {"source": ["x.png"], "status": "done"}]
    (out / LOG_NAME).write_text("".join(json.dumps(r) + "\n" for r in bad), encoding="utf-8")
    summary = run([src], backend, _opts(out, ("json",)))
    assert [(o.status, o.outputs) for o in summary.outcomes] == [("done", ["x.json"])]


def test_a_done_record_with_malformed_page_warnings_is_ignored_not_a_traceback(tmp_path, backend):
    """A done record whose fingerprint and outputs match but whose ``page_warnings`` are not strings
    (a hand edit, another version) reached skipped_outcome and raised AttributeError; it is ignored
    like any other misshapen record, so the document's earlier good record decides."""
    src = _png(tmp_path / "in" / "x.png")
    out = tmp_path / "out"
    first = run([src], backend, _opts(out, ("json",)))
    assert [o.status for o in first.outcomes] == ["done"]
    log = out / LOG_NAME
    good = [r for r in map(json.loads, log.read_text(encoding="utf-8").splitlines()) if r.get("status") == "done"][-1]
    for damaged in ({**good, "page_warnings": [1], "pages_missing": "2"}, {**good, "pages_missing": 7}):
        with log.open("a", encoding="utf-8") as f:
            f.write(json.dumps(damaged) + "\n")
        again = run([src], backend, _opts(out, ("json",)))
        assert [o.status for o in again.outcomes] == ["skipped"]
