"""The batch pipeline on Ray Data (varco_ocr.ray_pipeline) on a local Ray of 2 CPUs: the same documents
as the local runner, resume from the manifest, failures recorded and retried, a killed model actor,
and object storage (an S3 server from moto, in this process)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pymupdf
import pytest
from PIL import Image

from varco_ocr.batch import BatchOptions, run
from varco_ocr.document import Document
from varco_ocr.engine import OCREngine
from varco_ocr.ray_pipeline import RayOptions, run_ray
from varco_ocr.storage import MANIFEST_DIR

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("documents_are_schema_valid")]
REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
PDF_DPI = 144.0  # the receipt's PDF pages render at 144 dpi to exactly the taught image


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (starting one costs seconds)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def factory(taught):
    """A picklable factory: each model actor builds the taught engine from it."""
    return functools.partial(OCREngine, str(taught.path), **taught.engine_args)


def _receipt_pdf(path: Path, pages: int = 2) -> Path:
    """A PDF whose pages show the sample receipt (the taught model reads its words), one rotated."""
    pdf = pymupdf.open()
    for i in range(pages):
        page = pdf.new_page(width=220, height=260)  # 440 x 520 px at 144 dpi
        page.insert_image(page.rect, filename=str(SAMPLES / "receipt.png"))
    pdf.save(path)
    return path


def _scans(root: Path) -> Path:
    """A folder: a 2-page PDF of the receipt, a 2-page TIFF in a sub-folder, the receipt and dense page as PNGs."""
    root.mkdir(parents=True)
    _receipt_pdf(root / "book.pdf")
    (root / "sub").mkdir()
    receipt = Image.open(SAMPLES / "receipt.png").convert("RGB")
    receipt.save(root / "sub" / "fax.tiff", save_all=True, append_images=[Image.new("L", (160, 120), 255)], dpi=(200, 200))
    shutil.copy(SAMPLES / "receipt.png", root / "receipt.png")
    shutil.copy(SAMPLES / "dense-page.png", root / "dense.png")
    return root


def _options(out, **kw) -> BatchOptions:
    base = dict(out_dir=out, formats=("json", "txt", "hocr"), dpi=PDF_DPI, batch_size=2, progress="none")
    return BatchOptions(**{**base, **kw})


def _json(out: Path) -> dict[str, dict]:
    return {p.relative_to(out).as_posix(): json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(out.rglob("*.json")) if MANIFEST_DIR not in p.as_posix()}


def _manifest(out: Path) -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((out / MANIFEST_DIR).glob("*.json"))]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, taught, factory):
    """The scans read once by the local runner and once on Ray (shared by the equality and resume tests)."""
    root = tmp_path_factory.mktemp("ray-first")
    scans = _scans(root / "scans")
    local = run([scans], OCREngine(str(taught.path), **taught.engine_args), _options(root / "local", model=str(taught.path)))
    summary = run_ray([scans], factory, _options(root / "ray", model=str(taught.path)), RayOptions(workers=1))
    return root, scans, local, summary


def test_documents_equal_the_local_runners(first_run, taught):
    root, scans, local, summary = first_run
    assert local.exit_code == 0 and summary.exit_code == 0
    assert sorted((Path(o.source).name, o.status, o.pages) for o in summary.outcomes) == [
        ("book.pdf", "done", 2), ("dense.png", "done", 1), ("fax.tiff", "done", 2), ("receipt.png", "done", 1)]
    expected, got = _json(root / "local"), _json(root / "ray")
    assert sorted(got) == ["book.json", "dense.json", "receipt.json", "sub/fax.json"]
    for name in expected:  # words, boxes, text, page fields and metadata: the same documents
        assert got[name] == expected[name], name
    for name in ("receipt.txt", "book.txt", "sub/fax.hocr"):
        assert (root / "ray" / name).read_bytes() == (root / "local" / name).read_bytes()
    receipt = Document.load(root / "ray" / "receipt.json")
    assert [(w.text, w.bbox) for w in receipt.pages[0].words] == list(taught.page("receipt").words)  # not empty
    book = Document.load(root / "ray" / "book.json")
    assert [[w.text for w in p.words] for p in book.pages] == [[t for t, _ in taught.page("receipt").words]] * 2
    assert all(w.bbox_pt is not None for p in book.pages for w in p.words)  # the PDF geometry came through the rows
    records = _manifest(root / "ray")
    assert sorted((Path(r["source"]).name, r["status"]) for r in records) == [
        ("book.pdf", "done"), ("dense.png", "done"), ("fax.tiff", "done"), ("receipt.png", "done")]
    assert not list((root / "ray").rglob("*.tmp"))


def test_a_rerun_skips_everything_without_the_model(first_run, factory, tmp_path, taught):
    root, scans, _, _ = first_run
    out = root / "ray"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    pids = tmp_path / "pids"
    pids.mkdir()
    summary = run_ray([scans], factory, _options(out, model=str(taught.path)), RayOptions(workers=1, pid_dir=str(pids)))
    assert sorted((Path(o.source).name, o.status) for o in summary.outcomes) == [
        ("book.pdf", "skipped"), ("dense.png", "skipped"), ("fax.tiff", "skipped"), ("receipt.png", "skipped")]
    assert list(pids.iterdir()) == []  # no model actor was started
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before  # nothing rewritten
    # another model (another fingerprint) redoes them
    other = run_ray([scans / "receipt.png"], factory, _options(out, model="another-name"), RayOptions(workers=1))
    assert [o.status for o in other.outcomes] == ["done"]


def test_a_corrupt_document_is_recorded_failed_and_retried(tmp_path, factory, taught):
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(SAMPLES / "receipt.png", scans / "receipt.png")
    (scans / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a PDF")
    (scans / "damaged.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    out = tmp_path / "out"
    first = run_ray([scans], factory, _options(out, model=str(taught.path)), RayOptions(workers=1))
    assert sorted((Path(o.source).name, o.status) for o in first.outcomes) == [
        ("broken.pdf", "failed"), ("damaged.png", "failed"), ("receipt.png", "done")]
    assert first.exit_code == 1
    failed = {Path(r["source"]).name: r for r in _manifest(out) if r["status"] == "failed"}
    assert "not a readable PDF" in failed["broken.pdf"]["error"]
    assert failed["damaged.png"]["error"].startswith(str(scans / "damaged.png"))  # an undecodable image: said why
    assert (out / "receipt.json").is_file() and not (out / "broken.json").exists()
    # the next run tries the failed ones again (and only them); a repaired file is then done
    _receipt_pdf(scans / "broken.pdf", pages=1)
    second = run_ray([scans], factory, _options(out, model=str(taught.path)), RayOptions(workers=1))
    assert sorted((Path(o.source).name, o.status) for o in second.outcomes) == [
        ("broken.pdf", "done"), ("damaged.png", "failed"), ("receipt.png", "skipped")]
    assert [w.text for w in Document.load(out / "broken.json").pages[0].words] == [t for t, _ in taught.page("receipt").words]


def test_a_killed_model_actor_loses_and_duplicates_no_document(tmp_path, factory, taught):
    """SIGKILL the model actor once the first document is exported: Ray starts another actor and gives
    it the lost batch; every document is exported once, with all its pages."""
    scans = tmp_path / "scans"
    scans.mkdir()
    for i in range(12):  # enough that the first export comes while most pages are still to read
        shutil.copy(SAMPLES / "receipt.png", scans / f"r{i:02d}.png")
    out, pids = tmp_path / "out", tmp_path / "pids"
    pids.mkdir()
    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        while not stop.is_set():
            manifest = out / MANIFEST_DIR
            done = [r for r in _manifest(out) if r.get("status") == "done"] if manifest.is_dir() else []
            running = sorted(pids.iterdir())
            if done and running and not killed:
                pid = int(running[0].read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=killer, daemon=True)
    watcher.start()
    try:
        summary = run_ray([scans], factory, _options(out, formats=("json",), batch_size=1, model=str(taught.path)),
                          RayOptions(workers=1, pid_dir=str(pids)))
    finally:
        stop.set()
        watcher.join()
    assert killed, "the run ended before the actor could be killed"
    assert len(list(pids.iterdir())) == 2  # a second actor took over
    assert sorted((Path(o.source).name, o.status) for o in summary.outcomes) == [(f"r{i:02d}.png", "done") for i in range(12)]
    assert len(_manifest(out)) == 12
    words = [t for t, _ in taught.page("receipt").words]
    for i in range(12):
        (page,) = Document.load(out / f"r{i:02d}.json").pages
        assert [w.text for w in page.words] == words


class _CrashesOnWidePages:
    """A backend that kills its own process, as a decoder or kernel crash would, whenever it is given
    a page wider than ``width`` pixels; other pages go to the taught engine. Defined at module level
    and pickled by value (below): Ray's workers need not import this test module."""

    def __init__(self, engine_factory, width: int, attempts_dir: str) -> None:
        self.engine, self.width, self.attempts_dir = engine_factory(), width, attempts_dir

    def ocr_batch(self, images, batch_size=1, indices=None):
        if any(im.width > self.width for im in images):
            Path(self.attempts_dir, f"{os.getpid()}-{time.monotonic_ns()}").touch()
            os._exit(1)
        return self.engine.ocr_batch(images, batch_size=batch_size, indices=indices)


def test_a_page_that_kills_its_model_actor_every_time_ends_the_run_instead_of_hanging(tmp_path, factory, taught):
    """Ray Data retries a batch whose actor died for ever by default; here the batch is tried
    1 + RETRIES times, then the run stops, every unfinished document is recorded failed (the next run
    tries them again) and nothing half-written is left. Run in a thread: a hang fails the test."""
    from ray import cloudpickle  # Ray's own copy: the one that pickles its tasks' arguments

    from varco_ocr.ray_pipeline import RETRIES

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    scans, out, attempts = tmp_path / "scans", tmp_path / "out", tmp_path / "attempts"
    scans.mkdir()
    attempts.mkdir()
    shutil.copy(SAMPLES / "receipt.png", scans / "a-receipt.png")
    receipt_width = Image.open(SAMPLES / "receipt.png").width
    Image.new("RGB", (receipt_width + 8, 64), "white").save(scans / "b-poison.png")
    crashing = functools.partial(_CrashesOnWidePages, factory, receipt_width, str(attempts))
    result: list = []
    worker = threading.Thread(target=lambda: result.append(run_ray(
        [scans], crashing, _options(out, formats=("json",), batch_size=1, model=str(taught.path)),
        RayOptions(workers=1))), daemon=True)
    worker.start()
    worker.join(300)
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert not worker.is_alive(), "the run hung on a page that kills its actor every time"
    (summary,) = result
    assert len(list(attempts.iterdir())) == 1 + RETRIES  # tried, then retried RETRIES times, then given up
    outcomes = {Path(o.source).name: o for o in summary.outcomes}
    poison = outcomes["b-poison.png"]
    assert poison.status == "failed" and "the pipeline stopped (" in poison.error, poison.error  # with Ray's reason
    assert "\n" not in poison.error
    assert summary.exit_code == 1
    # the receipt's rows may share a block with the poison page's: then it stops with it, named the same way
    receipt = outcomes["a-receipt.png"]
    assert receipt.status == "done" or "the pipeline stopped (" in receipt.error
    statuses = {Path(r["source"]).name: r["status"] for r in _manifest(out)}
    assert statuses["b-poison.png"] == "failed" and not (out / "b-poison.json").exists()
    assert not list(out.rglob("*.tmp"))
    second = run_ray([scans], factory, _options(out, formats=("json",), batch_size=1, model=str(taught.path)),
                     RayOptions(workers=1))
    again = {Path(o.source).name: o.status for o in second.outcomes}
    assert again["b-poison.png"] == "done"  # retried by the next run (with a backend that does not crash)


# ------------------------------------------------------------------------------------------------
# Object storage: an S3 server (moto) on a free loopback port. fsspec's memory:// would not do: it
# lives in one process, and Ray's workers are other processes.
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": f"http://{host}:{port}"}}
    import s3fs

    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    fs.mkdir("scans")
    fs.mkdir("ocr")
    yield fs, options
    server.stop()


def test_object_storage_in_and_out_with_resume(s3, tmp_path, factory, taught, first_run):
    fs, options = s3
    root, scans, _, _ = first_run
    for name in ("receipt.png", "book.pdf", "sub/fax.tiff"):
        fs.put_file(str(scans / name), f"scans/in/{name}")
    fs.pipe_file("scans/in/notes.txt", b"not a page")
    fs.pipe_file("scans/in/broken.pdf", b"%PDF-1.4\nnot really a PDF")
    summary = run_ray(["s3://scans/in/"], factory, _options("s3://ocr/out", formats=("json", "txt", "pdf"), model=str(taught.path)),
                      RayOptions(workers=1, storage_options=options))
    assert sorted((o.source, o.status) for o in summary.outcomes) == [
        ("s3://scans/in/book.pdf", "done"), ("s3://scans/in/broken.pdf", "failed"), ("s3://scans/in/receipt.png", "done"),
        ("s3://scans/in/sub/fax.tiff", "done")]
    (broken,) = [o for o in summary.outcomes if o.status == "failed"]  # named by its URL, not the local copy read
    assert broken.error.startswith("s3://scans/in/broken.pdf: not a readable PDF") and "/tmp" not in broken.error
    assert summary.notes == ["skipped s3://scans/in/notes.txt: unsupported file type .txt"]
    written = sorted(p for p in fs.find("ocr/out") if "/.varco-ocr/" not in p)
    assert written == [f"ocr/out/{n}" for n in ("book.json", "book.pdf", "book.txt", "receipt.json", "receipt.pdf",
                                                  "receipt.txt", "sub/fax.json", "sub/fax.pdf", "sub/fax.txt")]
    # the same documents as the local runner's of the same files, but for where they came from
    local = _json(root / "local")
    for name in ("receipt.json", "book.json", "sub/fax.json"):
        doc = json.loads(fs.cat_file(f"ocr/out/{name}"))
        assert doc["pages"] == local[name]["pages"], name
        assert doc["source"].startswith("s3://scans/in/") and doc["metadata"]["source_path"] == doc["source"]
    with pymupdf.open(stream=fs.cat_file("ocr/out/book.pdf"), filetype="pdf") as searchable:  # made from a local copy of the source
        assert len(searchable) == 2 and "마포점" in searchable[0].get_text()
    assert sorted(fs.find("scans/in")) == ["scans/in/book.pdf", "scans/in/broken.pdf", "scans/in/notes.txt", "scans/in/receipt.png",
                                           "scans/in/sub/fax.tiff"]
    # resume: the done ones are skipped, the failed one is tried again; a changed object is redone
    again = run_ray(["s3://scans/in/"], factory, _options("s3://ocr/out", formats=("json", "txt", "pdf"), model=str(taught.path)),
                    RayOptions(workers=1, storage_options=options))
    assert sorted((o.source, o.status) for o in again.outcomes) == [
        ("s3://scans/in/book.pdf", "skipped"), ("s3://scans/in/broken.pdf", "failed"), ("s3://scans/in/receipt.png", "skipped"),
        ("s3://scans/in/sub/fax.tiff", "skipped")]
    fs.rm_file("scans/in/broken.pdf")
    fs.put_file(str(SAMPLES / "dense-page.png"), "scans/in/receipt.png")
    third = run_ray(["s3://scans/in/"], factory, _options("s3://ocr/out", formats=("json", "txt", "pdf"), model=str(taught.path)),
                    RayOptions(workers=1, storage_options=options))
    assert sorted((o.source, o.status) for o in third.outcomes) == [
        ("s3://scans/in/book.pdf", "skipped"), ("s3://scans/in/receipt.png", "done"), ("s3://scans/in/sub/fax.tiff", "skipped")]
    assert json.loads(fs.cat_file("ocr/out/receipt.json"))["pages"] == local["dense.json"]["pages"]


def test_with_servers_the_model_actors_hold_the_server_backend(tmp_path, fake_servers):
    """--server on Ray: the actors call the OpenAI-compatible servers through ServerBackend; the documents
    equal the local runner's with the same servers (born-digital pages taken from the PDF's text with
    --skip-text pass the model by), and each page is asked for once per run."""
    from exporters.conftest import write_text_pdf
    from varco_ocr.server import ServerBackend
    from varco_ocr.testing.fake_server import SERVED_MODEL

    server = fake_servers()
    scans = tmp_path / "scans"
    scans.mkdir()
    _receipt_pdf(scans / "book.pdf", pages=3)
    # one born-digital page (12 lines of text cover it) and one that is not
    write_text_pdf(scans / "born.pdf", texts=[[f"{i + 1}. 서강대학교 백범로 35 Seoul report line {i + 1}" for i in range(12)], ["x"]],
                   rotations=(0, 0))
    shutil.copy(SAMPLES / "receipt.png", scans / "receipt.png")
    options = dict(model=SERVED_MODEL, batch_size=4, dpi=40, text_mode="skip-text")
    local = run([scans], ServerBackend([server.url], model=SERVED_MODEL), _options(tmp_path / "local", **options))
    assert local.exit_code == 0 and len(server.requests) == 5  # the born-digital page was not sent
    factory = functools.partial(ServerBackend, [server.url], model=SERVED_MODEL, concurrency=4)
    summary = run_ray([scans], factory, _options(tmp_path / "ray", **options), RayOptions(workers=2))
    assert sorted((Path(o.source).name, o.status, o.pages, o.pages_from_pdf) for o in summary.outcomes) == [
        ("book.pdf", "done", 3, 0), ("born.pdf", "done", 2, 1), ("receipt.png", "done", 1, 0)]
    assert len(server.requests) == 10
    assert _json(tmp_path / "ray") == _json(tmp_path / "local")
    assert [p.get("source") for p in _json(tmp_path / "ray")["born.json"]["pages"]] == ["pdf-text", None]
    (word,) = Document.load(tmp_path / "ray" / "receipt.json").pages[0].words
    assert word.text.startswith("W")  # the fake server's answer: the width of the image it was sent


def test_listing_an_object_store_follows_the_local_rules(s3):
    """No Ray needed: a prefix is listed recursively in path order with the supported suffixes, hidden
    objects and the output prefix inside it left out, --glob applied, names that collide kept apart;
    a source's identity is its URL, size and ETag; a planned output that is an input is refused."""
    from varco_ocr.batch import LogIndex, _foreign_file
    from varco_ocr.storage import Destination, list_sources

    fs, options = s3
    for name in ("a/x.png", "b/x.png", "b/x.pdf", "c.tiff", ".hidden/y.png", "notes.txt", "out/old.png"):
        fs.pipe_file(f"scans/list/{name}", (SAMPLES / "receipt.png").read_bytes())
    out = Destination("s3://scans/list/out", options)
    listing = list_sources(["s3://scans/list/", "s3://scans/nothing-here"], None, out, (), options)
    assert [(s.url, s.output_stem.as_posix()) for s in listing.files] == [
        ("s3://scans/list/a/x.png", "a/x"), ("s3://scans/list/b/x.pdf", "b/x_pdf"), ("s3://scans/list/b/x.png", "b/x_png"),
        ("s3://scans/list/c.tiff", "c")]
    assert listing.skipped == [("s3://scans/list/notes.txt", "unsupported file type .txt")]
    assert listing.missing == ["s3://scans/nothing-here"]
    info = fs.info("scans/list/c.tiff")
    assert listing.files[-1].identity == {"size": info["size"], "version": info["ETag"]}
    assert [s.url for s in list_sources(["s3://scans/list/"], "*.pdf", out, (), options).files] == ["s3://scans/list/b/x.pdf"]
    assert [s.url for s in list_sources(["s3://scans/list/a/*.png"], None, out, (), options).files] == ["s3://scans/list/a/x.png"]
    inputs = frozenset(Path("scans/list/c.tiff").parents[0] / p for p in ("c.tiff",))
    refused = _foreign_file([Path("scans/list/c.tiff")], "k", LogIndex(), inputs, True, exists=out.exists)
    assert refused == "scans/list/c.tiff is an input of this run; it is never overwritten"
    assert _foreign_file([Path("scans/list/notes.txt")], "k", LogIndex(), inputs, False, exists=out.exists).startswith(
        "scans/list/notes.txt exists and was not written by varco-ocr")
    assert _foreign_file([Path("scans/list/new.json")], "k", LogIndex(), inputs, False, exists=out.exists) is None


# ------------------------------------------------------------------------------------------------
# The command line
# ------------------------------------------------------------------------------------------------


def _cli(*args: str, cwd: Path, pythonpath: tuple[str, ...] = (), env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join([*pythonpath, str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "varco_ocr", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)


def test_cli_runs_a_folder_on_a_local_ray(tmp_path, taught):
    """`varco-ocr scans -o out --ray local --workers 1`: a Ray of its own in the command (beside the
    one this module runs), outputs and manifest records written."""
    scans = tmp_path / "scans"
    (scans / "sub").mkdir(parents=True)
    shutil.copy(SAMPLES / "receipt.png", scans / "receipt.png")
    _receipt_pdf(scans / "sub" / "book.pdf", pages=1)
    args = ["scans", "-o", "out", "--format", "json,txt", "--dpi", str(PDF_DPI), "--ray", "local", "--workers", "1", *taught.cli_args]
    done = _cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    receipt = Document.load(tmp_path / "out" / "receipt.json")
    assert receipt.source == "scans/receipt.png"  # named as given, as the local runner names it
    assert [(w.text, w.bbox) for w in receipt.pages[0].words] == list(taught.page("receipt").words)
    assert (tmp_path / "out" / "sub" / "book.txt").read_text(encoding="utf-8") == (tmp_path / "out" / "receipt.txt").read_text(encoding="utf-8")
    assert len([r for r in _manifest(tmp_path / "out") if r["status"] == "done"]) == 2


def test_cli_with_servers_on_a_local_ray(tmp_path, fake_servers):
    """`--ray local --server URL`: the driver finds the served model, the actors call the server with it."""
    from varco_ocr.testing.fake_server import SERVED_MODEL

    server = fake_servers()
    (tmp_path / "scans").mkdir()
    shutil.copy(SAMPLES / "receipt.png", tmp_path / "scans" / "receipt.png")
    _receipt_pdf(tmp_path / "scans" / "book.pdf", pages=2)
    done = _cli("scans", "-o", "out", "--format", "json", "--dpi", "40", "--ray", "local", "--workers", "2",
                "--server", server.url, "--concurrency", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(server.requests) == 3 and {r["model"] for r in server.requests} == {SERVED_MODEL}
    book = Document.load(tmp_path / "out" / "book.json")
    assert book.model == SERVED_MODEL and [len(p.words) for p in book.pages] == [1, 1]


def test_cli_one_line_errors(tmp_path):
    (tmp_path / "scans").mkdir()
    shutil.copy(SAMPLES / "receipt.png", tmp_path / "scans" / "receipt.png")
    no_ray = tmp_path / "no-ray" / "ray"
    no_ray.mkdir(parents=True)
    (no_ray / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\", name='ray')\n")
    no_s3fs = tmp_path / "no-s3fs" / "s3fs"
    no_s3fs.mkdir(parents=True)
    (no_s3fs / "__init__.py").write_text("raise ImportError(\"No module named 's3fs'\", name='s3fs')\n")
    cases = [
        (("s3://bucket/scans/", "-o", "out"), (), "s3://bucket/scans/: a URL as input or output needs --ray (e.g. --ray local)"),
        (("scans", "-o", "gs://bucket/out"), (), "gs://bucket/out: a URL as input or output needs --ray (e.g. --ray local)"),
        (("scans", "--ray", "local"), (), "--ray writes its results to an output folder or URL: give -o"),
        (("scans", "-o", "out", "--ray", "somewhere"), (), "--ray takes local, auto or a ray:// address, not 'somewhere'"),
        (("scans", "-o", "out", "--ray", "local"), (str(no_ray.parent),),
         '--ray needs Ray Data and fsspec (ray is not installed): pip install "varco-ocr[ray]"'),
        (("s3://bucket/scans/", "-o", "out", "--ray", "local"), (str(no_s3fs.parent),),
         'Install s3fs to access S3 (e.g. pip install "varco-ocr[s3]")'),
    ]
    for args, pythonpath, message in cases:
        done = _cli(*args, cwd=tmp_path, pythonpath=pythonpath)
        assert (done.returncode, done.stderr) == (2, f"varco-ocr: {message}\n"), args
    # nothing written: at most the empty folder, made when the output was checked before listing a store
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ------------------------------------------------------------------------------------------------
# A hostile user (issue 15): credentials, refusing stores, odd names, damaged manifests
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def http_source():
    """A local HTTP server that serves the receipt at /scan.png to user:Pa55word-9x only (401 to
    anyone else, 404 for other paths); yields its base URL without credentials."""
    import base64
    import http.server

    body = (SAMPLES / "receipt.png").read_bytes()
    allowed = "Basic " + base64.b64encode(b"user:Pa55word-9x").decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_HEAD(self) -> None:
            self.do_GET(send_body=False)

        def do_GET(self, send_body: bool = True) -> None:
            if self.headers.get("Authorization") != allowed:
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path.split("?")[0] != "/scan.png":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_credentials_in_an_input_url_are_never_shown_or_written(http_source, tmp_path, factory, taught):
    """`https://user:pass@host/scan.png` (and a presigned URL's query) is opened with its credentials
    but named without them: in Document.source and metadata, the manifest, every output and the summary."""
    from varco_ocr.storage import list_sources

    secret = "Pa55word-9x"
    url = f"http://user:{secret}@{http_source}/scan.png?X-Amz-Signature=sig-0123456789abcdef"
    out = tmp_path / "out"
    summary = run_ray([url, f"http://user:{secret}@{http_source}/gone.png"], factory,
                      _options(out, formats=("json", "txt", "hocr", "alto"), model=str(taught.path)), RayOptions(workers=1))
    shown = f"http://***@{http_source}/scan.png?X-Amz-Signature=***"
    assert sorted((o.source, o.status) for o in summary.outcomes) == [
        (f"http://***@{http_source}/gone.png", "failed"), (shown, "done")]
    doc = Document.load(out / "scan.json")
    assert doc.source == shown and doc.metadata["source_path"] == shown
    assert [w.text for w in doc.pages[0].words] == [t for t, _ in taught.page("receipt").words]  # read with the credentials
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) == 5  # 4 outputs and the manifest record (a source not found has none)
    for p in files:
        data = p.read_bytes()
        assert secret.encode() not in data and b"sig-0123456789abcdef" not in data, p
    text = repr([(o.source, o.error, o.page_errors, o.page_warnings) for o in summary.outcomes]) + repr(summary.notes)
    assert secret not in text and "sig-0123456789abcdef" not in text
    # refused credentials: fsspec's HTTP file system says "not found" (exit 1, as a missing file), without them
    wrong = list_sources([f"http://user:wrong-{secret}@{http_source}/scan.png"])
    assert (wrong.files, wrong.missing) == ([], [f"http://***@{http_source}/scan.png"])


@pytest.fixture
def refusing_s3():
    """An S3 endpoint that answers every request with 403 AccessDenied (a store refusing the credentials)."""
    import http.server

    body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message>'
            b"<RequestId>1</RequestId></Error>")

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _refuse(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _refuse

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_cli_a_store_that_refuses_or_is_not_there(tmp_path, refusing_s3):
    """The secret in the environment never shows; a 403 on the output or on the inputs, and an endpoint
    where nothing listens: one line, exit code 2 (as an unwritable output folder), no traceback, no Ray started."""
    import socket

    (tmp_path / "scans").mkdir()
    shutil.copy(SAMPLES / "receipt.png", tmp_path / "scans" / "receipt.png")
    secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    cases = [
        (("scans", "-o", "s3://ocr/out"), refusing_s3, "varco-ocr: output location s3://ocr/out is not writable (PermissionError: "),
        (("s3://scans/in/", "-o", "out"), refusing_s3, "varco-ocr: s3://scans/in/: cannot be listed (PermissionError: "),
        (("s3://scans/in/", "-o", "out"), closed, "varco-ocr: s3://scans/in/: cannot be listed (EndpointConnectionError: "),
        (("scans", "-o", f"s3://AKIAEXAMPLEID:{secret}@ocr/out"), refusing_s3, "varco-ocr: output location s3://***@ocr/out is not writable ("),
    ]
    for args, endpoint, start in cases:
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEID", "AWS_SECRET_ACCESS_KEY": secret,
               "AWS_MAX_ATTEMPTS": "1"}
        done = _cli(*args, "--ray", "local", cwd=tmp_path, env=env)
        assert done.returncode == 2, (args, done.stderr[-2000:])
        assert done.stderr.startswith(start) and done.stderr.count("\n") == 1, (args, done.stderr[-2000:])
        assert secret not in done.stderr + done.stdout and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.json"))


def test_a_store_that_never_answers_stops_the_run_in_one_line(monkeypatch):
    """An endpoint that accepts connections and never answers: the write probe and the listing give
    up after STORE_TIMEOUT with one line (before: s3fs and botocore retried for over 9 minutes)."""
    import socket

    from varco_ocr import storage
    from varco_ocr.batch import OutputFolderError

    monkeypatch.setattr(storage, "STORE_TIMEOUT", 1.0)
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)  # connections queue up, nothing is ever read or answered
    options = {"key": "k", "secret": "never-shown-secret", "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{hole.getsockname()[1]}"}}
    try:
        started = time.monotonic()
        with pytest.raises(OutputFolderError) as refused:
            storage.Destination("s3://ocr/out", options).prepare()
        assert str(refused.value) == "output location s3://ocr/out is not writable (TimeoutError: write probe: no answer within 1 s)"
        with pytest.raises(storage.StorageError) as unlisted:
            storage.list_sources(["s3://scans/in/"], storage_options=options)
        assert str(unlisted.value) == "s3://scans/in/: cannot be listed (TimeoutError: listing: no answer within 1 s)"
        assert time.monotonic() - started < 10
    finally:
        hole.close()


def test_listing_odd_object_names(s3):
    """An object whose name holds glob characters is that object when named; a pattern matching
    nothing is reported missing (as the shell leaves it), not an empty success; an object directly in
    the output prefix is read, as locally (`varco-ocr scan.png -o .`); folder markers are no files; a
    key with a `..` segment is named as skipped, not dropped in silence."""
    from varco_ocr.storage import Destination, list_sources

    fs, options = s3
    for name in ("scan[1].png", "what?.png", "a b #2 ü.png"):
        fs.pipe_file(f"scans/odd/{name}", (SAMPLES / "receipt.png").read_bytes())
    out = Destination("s3://scans/odd", options)
    for name in ("scan[1].png", "what?.png", "a b #2 ü.png"):
        listing = list_sources([f"s3://scans/odd/{name}"], None, out, (), options)
        assert [s.url for s in listing.files] == [f"s3://scans/odd/{name}"] and not listing.refused, name
    fs.pipe_file("scans/dots/a/../x.png", (SAMPLES / "receipt.png").read_bytes())  # keys are literal: no folder is climbed
    dots = list_sources(["s3://scans/dots/"], None, None, (), options)
    assert (dots.files, dots.skipped) == ([], [("s3://scans/dots/a/../x.png", "a '..' in its name; name it alone to read it")])
    (alone,) = list_sources(["s3://scans/dots/a/../x.png"], None, None, (), options).files
    assert (alone.url, alone.output_stem.as_posix()) == ("s3://scans/dots/a/../x.png", "x")
    fs.pipe_file("scans/odd/folder/", b"")  # folder markers: an empty "folder" is empty, not an unsupported file
    fs.pipe_file("scans/odd-empty/", b"")
    assert [len(list_sources([f"s3://scans/{p}/"], None, out, (), options).skipped) for p in ("odd", "odd-empty")] == [0, 0]
    nothing = list_sources(["s3://scans/odd/*.tiff"], None, out, (), options)
    assert (nothing.files, nothing.missing) == ([], ["s3://scans/odd/*.tiff"])
    assert [s.url for s in list_sources(["s3://scans/odd/scan*.png"], None, out, (), options).files] == ["s3://scans/odd/scan[1].png"]


def test_a_damaged_or_stale_manifest_never_marks_a_document_done(s3, factory, taught):
    """Records that are not JSON, cut short, from another version (other field types), for other
    options, for outputs deleted since, or left by a run killed mid-document (a `writing` record,
    outputs partly uploaded): none is reported skipped, and the run does not stop. Those whose
    outputs the manifest still shows ours are read again; those whose record is unreadable fail
    with the --overwrite advice, their outputs kept (their writer is unknown, as a foreign file's).
    An intact one is skipped."""
    from varco_ocr.storage import Destination, Manifest

    fs, options = s3
    names = ["junk", "cut", "other-version", "other-options", "deleted", "killed", "intact"]
    for name in names:
        fs.pipe_file(f"scans/man/{name}.png", (SAMPLES / "receipt.png").read_bytes())
    opts = _options("s3://ocr/man", formats=("json", "txt"), model=str(taught.path))
    first = run_ray(["s3://scans/man/"], factory, opts, RayOptions(workers=1, storage_options=options))
    assert {o.status for o in first.outcomes} == {"done"}
    manifest = Manifest(Destination("s3://ocr/man", options))
    before = {name: fs.cat_file(f"ocr/man/{name}.json") for name in names}

    def record_path(name: str) -> str:
        return str(manifest.path_for(f"s3://scans/man/{name}.png"))

    def record(name: str) -> dict:
        return json.loads(fs.cat_file(record_path(name)))

    fs.pipe_file(record_path("junk"), b"\x00not json")
    fs.pipe_file(record_path("cut"), fs.cat_file(record_path("cut"))[:40])
    fs.pipe_file(record_path("other-version"), json.dumps({**record("other-version"), "outputs_by_format": ["other-version.json"]}).encode())
    fs.pipe_file(record_path("other-options"), json.dumps({**record("other-options"), "fingerprint": "0123456789abcdef"}).encode())
    fs.rm_file("ocr/man/deleted.txt")
    killed = record("killed")
    fs.pipe_file(record_path("killed"), json.dumps({"event": "writing", "source": killed["source"], "source_path": killed["source_path"],
                                                    "outputs": ["killed.json", "killed.txt"]}).encode())
    fs.rm_file("ocr/man/killed.txt")  # the json was uploaded, the txt not yet
    second = run_ray(["s3://scans/man/"], factory, opts, RayOptions(workers=1, storage_options=options))
    damaged = ["junk", "cut", "other-version"]  # who wrote their outputs is unknown now: kept, never replaced
    assert sorted((o.source.rsplit("/", 1)[1], o.status) for o in second.outcomes) == sorted(
        [(f"{n}.png", "skipped" if n == "intact" else "failed" if n in damaged else "done") for n in names])
    for o in second.outcomes:
        if o.status == "failed":
            assert o.error.endswith("not replaced (use --overwrite to replace it)") and "\n" not in o.error
    assert second.exit_code == 1
    for name in damaged:  # left as they were
        assert fs.cat_file(f"ocr/man/{name}.json") == before[name]
    words = [t for t, _ in taught.page("receipt").words]
    for name in set(names) - set(damaged):
        assert record(name)["status"] == "done"
        assert [w.text for w in Document.from_dict(json.loads(fs.cat_file(f"ocr/man/{name}.json"))).pages[0].words] == words
        assert fs.cat_file(f"ocr/man/{name}.txt").decode("utf-8").strip()


def test_public_names_and_the_scrubber():
    """Pure rules: credentials (user:password, an http user or presigned query) are masked; a store's
    `?`/`#` are key characters; Azure's container@account is a name, not a secret."""
    from varco_ocr.storage import Scrubber, public_url

    assert public_url("https://user:pw-123@host/a/scan.png?X-Amz-Signature=abc&flag") == "https://***@host/a/scan.png?X-Amz-Signature=***&flag"
    assert public_url("https://token-1234@host/scan.png") == "https://***@host/scan.png"
    assert public_url("s3://AKID:secret-42@bucket/x.png") == "s3://***@bucket/x.png"
    assert public_url("s3://bucket/q?x=1#2.png") == "s3://bucket/q?x=1#2.png"
    azure = "abfs://scans@account.dfs.core.windows.net/a.png"
    assert public_url(azure) == azure
    scrub = Scrubber.for_run(["https://user:pw-123@host/x.png", azure], {"secret": "opt-secret-9", "key": "AKIDKEY1",
                                                                           "client_kwargs": {"endpoint_url": "http://h"}})
    message = f"{azure}: failed; http://user:pw-123@host/x.png said pw-123, opt-secret-9, AKIDKEY1 and http://other:zz@h/"
    assert scrub(message) == f"{azure}: failed; http://***@host/x.png said ***, ***, *** and http://***@h/"


def test_a_one_cpu_ray_reads_every_page(tmp_path, fake_servers):
    """On a Ray of one CPU the model actor took 0.1 CPU and render/export tasks asked for a whole one,
    so none was ever scheduled and the run hung; they now take what the actors leave. Its own Ray in a
    subprocess (this module's Ray has 2 CPUs), bounded by a timeout."""
    from varco_ocr.testing.fake_server import SERVED_MODEL

    server = fake_servers()
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (300 + len(name), 200), "white").save(scans / name)
    script = (
        "import functools, sys\n"
        "from varco_ocr.batch import BatchOptions\n"
        "from varco_ocr.ray_pipeline import RayOptions, run_ray\n"
        "from varco_ocr.server import ServerBackend\n"
        f"factory = functools.partial(ServerBackend, [{server.url!r}], model={SERVED_MODEL!r}, concurrency=2)\n"
        f"s = run_ray([{str(scans)!r}], factory, BatchOptions(out_dir={str(tmp_path / 'out')!r}, formats=('json',), "
        f"progress='none', model={SERVED_MODEL!r}), RayOptions(num_cpus=1))\n"
        "print(sorted(o.status for o in s.outcomes))\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "['done', 'done']"
    assert len(server.requests) == 2
