"""The batch runner: many documents through one OCR backend, resumable, with bounded memory.

Pipeline: a producer (a child process, or a thread where fork is unavailable) opens documents in
order and renders / decodes their pages into a bounded queue; the main thread takes pages from the
queue, from one document or several, in batches of ``batch_size`` for the backend's ``ocr_batch``,
reassembles each document when its last page is back, writes its exports (each file to a temporary name, then renamed) and appends the
outcome to a JSON-lines log in the output folder. Memory holds the queue's pages plus one batch
(two with the local engine, whose ``ocr_batches`` prepares the next batch while one generates:
``_Overlapped``), whatever the length of the documents.

Resume: a document is skipped when the log's last record for it says ``done`` with the same options
fingerprint (the options that change results, plus the source file's size and modification time)
and every output for the requested formats exists. Failed and partial documents are never marked
done, so they are retried on the next run. ``overwrite`` redoes everything.

The backend is anything with ``ocr_batch(images, batch_size=..., indices=...) -> list[Page]``
(``varco_ocr.engine.OCREngine`` or a server client).
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import multiprocessing
import os
import queue
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Protocol, Sequence

from PIL import Image

from varco_ocr.document import Document, Page
from varco_ocr.errors import InputError, VarcoOCRError
from varco_ocr.exporters import expected_outputs, planned_outputs, write_exports
from varco_ocr.exporters.common import xml_safe, xml_unsafe_count
from varco_ocr.inputs import (
    DEFAULT_DPI,
    PDF_SUFFIXES,
    InputFile,
    PageImage,
    PageRanges,
    attach_pdf_points,
    collect_inputs,
    missing_pages_note,
    open_document,
    selected_pages,
)
from varco_ocr.pdf_text import count_by_source
from varco_ocr.preprocessing import DEFAULT_MAX_PIXELS
from varco_ocr.storage import is_url

LOG_NAME = "varco-ocr.log.jsonl"


class OutputFolderError(VarcoOCRError):
    """The output folder cannot be created or written to."""


class OCRBackend(Protocol):
    def ocr_batch(self, images: list[Image.Image], batch_size: int = ..., indices: Sequence[int] | None = ...) -> list[Page]: ...


class BackendUnavailable(VarcoOCRError):
    """The backend (model) could not be created: nothing can be OCR'd, the run stops."""


class LazyBackend:
    """A backend built on first use, so a resumed run whose documents are all done (or all fail
    to open) never loads the model. A failure to build it stops the run (BackendUnavailable)."""

    def __init__(self, factory: Callable[[], OCRBackend], model_name: str | None = None) -> None:
        self._factory = factory
        self._backend: OCRBackend | None = None
        self.model_name = model_name

    def ocr_batch(self, images: list[Image.Image], batch_size: int = 4, indices: Sequence[int] | None = None) -> list[Page]:
        return self._built().ocr_batch(images, batch_size=batch_size, indices=indices)

    def ocr_batches(self, batches, **kwargs):
        """The built backend's ``ocr_batches`` (the local engine's overlapped stream); for a backend
        without one, its ``ocr_batch`` once per batch, with the same ``(batch, pages or error)`` items."""
        backend = self._built()
        if hasattr(backend, "ocr_batches"):
            yield from backend.ocr_batches(batches, **kwargs)
            return
        for b in batches:
            try:
                pages: Any = backend.ocr_batch(list(b.images), batch_size=len(b.images), indices=b.indices)
            except Exception as e:  # noqa: BLE001
                if not kwargs.get("isolate_errors"):
                    raise
                pages = e
            yield b, pages

    def _built(self) -> OCRBackend:
        if self._backend is None:
            try:
                self._backend = self._factory()
            except Exception as e:  # noqa: BLE001 - whatever the loader raises, the run cannot go on
                raise BackendUnavailable(str(e) or type(e).__name__) from e
        return self._backend


MIN_PREFETCH = 4  # the smallest default render-ahead queue (pages and document markers)


@dataclass
class BatchOptions:
    out_dir: Path | None = None  # None: documents are returned in the summary, nothing is written
    formats: tuple[str, ...] = ("json",)
    pages: PageRanges | None = None
    dpi: float = DEFAULT_DPI
    glob: str | None = None
    password: str | None = None
    overwrite: bool = False
    batch_size: int = 4
    # Pages rendered ahead of the model (the queue bound); default one batch but at least
    # MIN_PREFETCH: while the model reads a batch the producer renders the next, and the slack keeps
    # the renderer from stalling on a document's start and end markers, which share the queue
    # (measured, batch size 1: a bound of 1 made the pipeline slower than a naive loop, 4 faster).
    prefetch: int | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    model: str | None = None  # recorded in each Document; defaults to the backend's model_name
    # Everything else that changes the OCR result (min_long_side, max_grid, max_new_tokens, keep_raw,
    # ...): part of the fingerprint, so changing it redoes documents on resume.
    settings: dict[str, Any] = field(default_factory=dict)
    # "auto" (rich on a terminal, plain lines otherwise), "rich", "plain", "none", or "reading": one bar of
    # pages read and tokens/s on a terminal, nothing otherwise (for a caller that prints the documents and
    # their errors itself: the CLI without an output folder)
    progress: str = "auto"
    # None: the backend's ``render_in_thread`` if it has one (the server backend: measured cheaper,
    # see ServerBackend), else a forked child process on Linux, else a thread.
    render_in_process: bool | None = None
    text_mode: str = "force"  # PDF pages that carry text: varco_ocr.pdf_text.TEXT_MODES


@dataclass
class DocumentOutcome:
    source: str
    status: str  # "done" | "skipped" | "failed" | "partial" (some pages failed) | "interrupted"
    pages: int = 0
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    page_errors: list[str] = field(default_factory=list)
    page_warnings: list[str] = field(default_factory=list)  # damaged pages that were still read
    seconds: float = 0.0
    pages_from_pdf: int = 0  # of ``pages``, those whose words are the PDF's own text (--skip-text)
    # characters XML 1.0 forbids, replaced by U+FFFD in the hOCR / ALTO written (exporters.common.xml_safe)
    xml_replaced: int = 0
    # --pages asked for pages the document does not have (e.g. "5,9"): the request was not fully met
    pages_missing: str | None = None


@dataclass
class BatchSummary:
    outcomes: list[DocumentOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. unsupported files skipped in folders
    seconds: float = 0.0
    interrupted: bool = False
    documents: list[Document] = field(default_factory=list)  # only when no out_dir was given

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def pages(self) -> int:
        return sum(o.pages for o in self.outcomes if o.status in ("done", "partial"))

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if any(o.status in ("failed", "partial") or o.pages_missing for o in self.outcomes) else 0


# ------------------------------------------------------------------------------------------------
# Fingerprints and the log
# ------------------------------------------------------------------------------------------------


def options_fingerprint(path: Path, options: BatchOptions) -> str:
    """Hash of what decides a document's result: its file (size, mtime) and the result-changing
    options. The password and output formats are not part of it (formats are checked by file)."""
    st = path.stat()
    return source_fingerprint({"size": st.st_size, "mtime_ns": st.st_mtime_ns}, path.suffix, options)


def source_fingerprint(identity: dict[str, Any], suffix: str, options: BatchOptions) -> str:
    """``options_fingerprint`` for a source known by ``identity`` (a local file: size and mtime_ns;
    an object in a store: size and its version, ETag or modification time, see varco_ocr.storage):
    one rule for the local run log and the Ray run's manifest."""
    is_pdf = suffix.lower() in PDF_SUFFIXES
    payload = {
        **identity,
        "pages": None if options.pages is None else str(options.pages),
        "dpi": options.dpi if is_pdf else None,
        "model": options.model,
        "settings": options.settings,
        **({"text_mode": options.text_mode} if options.text_mode != "force" else {}),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RunLogError(VarcoOCRError):
    """The run log cannot be appended to (disk full, permissions): the run stops, resumable."""


class RunLog:
    """The JSON-lines log: one record per document outcome (and one per run start/end), plus a
    ``writing`` record naming a document's output files before they are written, so that a file
    found later in the output folder can be told apart from a file this tool did not write."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOG_NAME

    def records(self) -> list[dict[str, Any]]:
        """Every record in order. Unparsable lines (a record cut by kill -9) are ignored."""
        records: list[dict[str, Any]] = []
        if not self.path.exists():
            return records
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict):
                    records.append(rec)
        return records

    def last_records(self) -> dict[str, dict[str, Any]]:
        """The last outcome record of each source (by ``source_key``)."""
        return {_record_key(rec): rec for rec in self.records() if _well_formed(rec) and "status" in rec}

    def append(self, record: dict[str, Any]) -> None:
        """Append one record, whole or not at all: one ``os.write`` of the encoded line on an
        append-only descriptor, and if it fails or comes up short (disk full) the file is cut back to
        its previous length, so no later reader meets half a record. Raises RunLogError."""
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **record}
        data = json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as e:
            raise RunLogError(self._failure(e)) from None
        try:
            size = os.fstat(fd).st_size
            # A run killed mid-write leaves a line without its newline: start on a fresh line.
            if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data
            try:
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(errno.ENOSPC, f"only {written} of {len(data)} bytes written")
                os.fsync(fd)
            except OSError as e:
                try:
                    os.ftruncate(fd, size)
                except OSError:
                    pass
                raise RunLogError(self._failure(e)) from None
        except OSError as e:  # fstat / pread
            raise RunLogError(self._failure(e)) from None
        finally:
            os.close(fd)

    def _failure(self, e: OSError) -> str:
        return (f"cannot write the run log {self.path} ({e.strerror or e}); the run stopped, documents "
                f"finished so far are kept: run the same command again to resume")


def source_key(path: Path | str) -> str:
    """A document's identity in the log: its resolved path (the same file from any folder)."""
    return str(Path(path).resolve())


def _record_key(rec: dict[str, Any]) -> str:
    return str(rec.get("source_path") or source_key(str(rec["source"])))


@dataclass
class LogIndex:
    """What the log says: each source's last outcome, and who last wrote (or set out to write) each file."""

    last: dict[str, dict[str, Any]] = field(default_factory=dict)  # source key -> last outcome record
    writers: dict[Path, str] = field(default_factory=dict)  # output path (under the resolved folder) -> source key

    @classmethod
    def read(cls, log: RunLog, out_root: Path) -> "LogIndex":
        return cls.from_records(log.records(), out_root)

    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]], out_root: Path) -> "LogIndex":
        """The index of records in order (the run log's lines, or the Ray run's manifest records)."""
        index = cls()
        for rec in records:
            if not _well_formed(rec):
                continue
            key = _record_key(rec)
            if rec.get("event") == "writing":
                rels: list[str] = list(rec.get("outputs") or [])
            elif "status" in rec:
                index.last[key] = rec
                rels = [rel for paths in (rec.get("outputs_by_format") or {}).values() for rel in paths]
            else:
                continue
            for rel in rels:
                index.writers[out_root / rel] = key
        return index


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _well_formed(rec: Any) -> bool:
    """Whether a record has the fields resume relies on, with their types. A record from another
    version, edited by hand or otherwise damaged is ignored (its document is redone) rather than
    stopping the run with a traceback."""
    if not isinstance(rec, dict) or not isinstance(rec.get("source"), str) or not rec["source"]:
        return False
    if not isinstance(rec.get("source_path", ""), (str, type(None))):
        return False
    if rec.get("event") == "writing":
        return rec.get("outputs") is None or _is_str_list(rec["outputs"])
    by_format = rec.get("outputs_by_format")
    if by_format is not None and not (isinstance(by_format, dict) and all(isinstance(k, str) and _is_str_list(v) for k, v in by_format.items())):
        return False
    warnings = rec.get("page_warnings")  # read back when the document is skipped (skipped_outcome)
    if warnings is not None and not _is_str_list(warnings):
        return False
    if not isinstance(rec.get("pages_missing"), (str, type(None))):
        return False
    return isinstance(rec.get("status", ""), str) and isinstance(rec.get("fingerprint", ""), (str, type(None)))


def is_complete(record: dict[str, Any] | None, fingerprint: str, formats: Sequence[str], out_dir: Path,
                writers: dict[Path, str] | None = None, *, out_root: Path | None = None,
                is_file: Callable[[Path], bool] = Path.is_file) -> bool:
    """Whether a document's log record shows it done with these options (the fingerprint covers the
    source's content and the result-changing options), every output present and, with ``writers``,
    every output last written for this record's source (not since replaced by another document's).
    ``out_root`` (default: ``out_dir`` resolved) and ``is_file`` let an object store's folder be checked."""
    if not record or record.get("status") != "done" or record.get("fingerprint") != fingerprint:
        return False
    by_format: dict[str, list[str]] = record.get("outputs_by_format") or {}
    out_root = out_dir.resolve() if out_root is None else out_root
    key = _record_key(record)
    for fmt in formats:
        if fmt not in by_format:
            return False
        for rel in by_format[fmt]:
            if not is_file(out_dir / rel):
                return False
            if writers is not None and writers.get(out_root / rel) != key:
                return False
    return True


def check_output_folder(out_dir: Path) -> None:
    """Create ``out_dir`` and prove it writable, before any work; OutputFolderError otherwise."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".varco-ocr-write-test.", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputFolderError(f"output folder {out_dir} is not writable ({e.strerror or e})") from None


def remove_stale_temp_files(plans: Sequence["_Plan"], index: "LogIndex", skipped_keys: Collection[str]) -> None:
    """Temporary files a killed run left (``.NAME.xxxxxxxx.tmp``: never complete) beside any
    document's outputs: the planned ones and those of the documents skipped as done (local folders)."""
    for path in [p for p, k in index.writers.items() if k in skipped_keys] + [p for pl in plans for p in pl.outputs]:
        if path.parent.is_dir():
            for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
                try:
                    tmp.unlink()
                except OSError:
                    pass


class _InputGuard:
    """The run's inputs, by resolved path and by file identity (device, inode): an output path that
    names one of them, through a symlink or a hard link too, is never written."""

    def __init__(self, files: Sequence[InputFile]) -> None:
        self.paths = {f.path.resolve() for f in files}
        self.ids = set()
        for f in files:
            try:
                st = f.path.stat()
            except OSError:
                continue
            self.ids.add((st.st_dev, st.st_ino))

    def __contains__(self, path: Path) -> bool:
        if path.resolve() in self.paths:
            return True
        try:
            st = path.stat()
        except OSError:
            return False
        return (st.st_dev, st.st_ino) in self.ids


@dataclass
class _Plan:
    """Where one document's outputs go, decided before it is read."""

    file: InputFile  # output_stem as planned
    key: str
    outputs: list[Path]  # every path it may write, under the resolved output folder
    page_indices: list[int]
    refused: str | None = None  # why it cannot be written (a foreign file in the way)


def _exists_locally(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _foreign_file(paths: Sequence[Path], key: str, index: LogIndex, inputs: Collection[Path], overwrite: bool,
                  exists: Callable[[Path], bool] = _exists_locally) -> str | None:
    """The reason writing ``paths`` for source ``key`` is refused, or None. An input is never
    written; an existing file is replaced only when the log says this tool wrote it for this
    source, or with ``overwrite``. ``inputs``: an _InputGuard, or the set of an object store's input
    paths; ``exists``: how to ask the destination (an object store's, for the Ray run)."""
    for path in paths:
        if path in inputs:
            return f"{path} is an input of this run; it is never overwritten"
        if not overwrite and exists(path) and index.writers.get(path) != key:
            return (f"{path} exists and was not written by varco-ocr for this source; "
                    f"not replaced (use --overwrite to replace it)")
    return None


def plan_outputs(files: Sequence[InputFile], page_indices: Sequence[list[int]], keys: Sequence[str], options: BatchOptions,
                 out_root: Path, index: LogIndex, inputs: Collection[Path], skipped_keys: Collection[str],
                 exists: Callable[[Path], bool] = _exists_locally) -> list[_Plan]:
    """Give each document a set of output paths unique in the run, checked before anything is
    written: not an input, not a path planned for another document of this run or owned (per the
    log) by another source of this run (such a document gets a numbered stem, ``NAME-2``), and not
    a foreign existing file (the document is refused, unless ``overwrite``). The outputs of the
    documents skipped as done (``skipped_keys``) stay theirs. Used by both runners (local and Ray)."""
    run_keys = set(keys) | set(skipped_keys)
    claimed = {p for p, k in index.writers.items() if k in skipped_keys}  # grows with each plan
    others = {p: k for p, k in index.writers.items() if k in run_keys}
    plans: list[_Plan] = []
    for f, indices, key in zip(files, page_indices, keys):
        base, n = f.output_stem, 1
        while True:
            stem = base if n == 1 else base.with_name(f"{base.name}-{n}")
            outputs = planned_outputs(out_root, stem, options.formats, indices)
            taken = any(p in claimed or others.get(p, key) != key or p in inputs for p in outputs)
            if not taken:
                break
            n += 1
        claimed.update(outputs)
        refused = _foreign_file(outputs, key, index, inputs, options.overwrite, exists)
        plans.append(_Plan(replace(f, output_stem=stem), key, outputs, list(indices), refused))
    return plans


# ------------------------------------------------------------------------------------------------
# Producer: documents -> pages, ahead of the model
# ------------------------------------------------------------------------------------------------


@dataclass
class _DocOpened:
    doc_no: int
    page_indices: list[int]
    missing_note: str | None = None  # the --pages the document does not have, as a note
    missing_pages: str | None = None  # the same pages, as ranges ("5,9")


@dataclass
class _DocFailed:
    doc_no: int
    error: str


@dataclass
class _DocPage:
    doc_no: int
    page: PageImage


@dataclass
class _DocEnd:
    doc_no: int


@dataclass
class _End:
    """The producer has nothing more to send."""


@dataclass
class _SharedPixels:
    """A rendered page's pixels in a shared-memory block, so a 300-dpi page (26 MB of RGB) crosses
    from the renderer process to the model without being pickled through a pipe (measured: the pipe
    and pickling cost about as much as rendering the page)."""

    name: str
    mode: str
    size: tuple[int, int]


def _to_shared(page: PageImage, created: list[str]) -> PageImage:
    from multiprocessing import resource_tracker, shared_memory

    if page.raw is not None:  # a pymupdf pixmap: its samples go straight into the block
        mode, size, pixmap = page.raw
        data: Any = pixmap.samples_mv  # type: ignore[attr-defined]
    elif page.image is not None:
        mode, size, data = page.image.mode, page.image.size, page.image.tobytes()
    else:
        return page
    block = shared_memory.SharedMemory(create=True, size=max(1, len(data)))
    block.buf[: len(data)] = data
    # The parent unlinks the block once it has copied the pixels; the child's tracker must not
    # unlink it too (or warn about a leak) when the child exits.
    resource_tracker.unregister(block._name, "shared_memory")  # type: ignore[attr-defined]
    created.append(block.name)
    shared = _SharedPixels(block.name, mode, size)
    del data
    block.close()
    return replace(page, image=shared, raw=None)  # type: ignore[arg-type]


def _from_shared(page: PageImage) -> PageImage:
    """Copy a page's pixels out of shared memory (parent side) and free the block."""
    from multiprocessing import shared_memory

    shared = page.image
    if not isinstance(shared, _SharedPixels):
        return page
    block = shared_memory.SharedMemory(name=shared.name)
    try:
        # The one copy, straight from the block into the image (a bytes() of the block first was a
        # second full-page copy: ~30 ms and the kernel time of touching 26 MB more per page).
        with block.buf[: _image_bytes(shared)] as pixels:
            image = Image.frombytes(shared.mode, shared.size, pixels)
    finally:
        block.close()
        _free(block)
    return replace(page, image=image)


def _image_bytes(shared: _SharedPixels) -> int:
    return shared.size[0] * shared.size[1] * len(shared.mode)  # RGB / L: one byte per band


def _free(block) -> None:
    try:
        block.unlink()  # also forgets it in the resource tracker
    except FileNotFoundError:
        pass


def _unlink_shared(name: str) -> None:
    from multiprocessing import shared_memory

    try:
        block = shared_memory.SharedMemory(name=name)
    except FileNotFoundError:
        return
    block.close()
    _free(block)


DocEvent = Any  # _DocOpened | _DocFailed | _DocPage | _DocEnd


def document_events(doc_no: int, path: Path, options: BatchOptions, raw_pixels: bool = False) -> Iterator[DocEvent]:
    """One document opened and rendered page by page, as the events the runner reassembles it from:
    ``_DocOpened`` (its pages), then ``_DocPage`` for each, then ``_DocEnd``; or ``_DocFailed`` when
    it cannot be opened or a decoder fails mid-document (the pages before it may have come). The local
    runner's renderer and the Ray pipeline's page tasks both produce pages through this, one at a time."""
    try:
        doc = open_document(path, options.pages, options.dpi, options.password, options.max_pixels)
    except InputError as e:
        yield _DocFailed(doc_no, str(e))
        return
    doc.raw_pixels = raw_pixels  # pixmaps go to shared memory without a trip through Pillow
    doc.text_mode = options.text_mode
    with doc:
        missing = options.pages.beyond(doc.page_count) if options.pages is not None else None
        note = missing_pages_note(options.pages, missing, doc.page_count) if options.pages and missing else None
        yield _DocOpened(doc_no, list(doc.page_indices), note, None if missing is None else str(missing))
        try:
            for page in doc.iter_pages():
                if doc.kind == "image" and page.image is None:
                    # An image is its one page: not decoding it is not opening the document, said
                    # in one line naming the file (load_image's), as open_document says it.
                    yield _DocFailed(doc_no, page.error or f"{path}: cannot be read")
                    return
                yield _DocPage(doc_no, page)
        except Exception as e:  # noqa: BLE001 - a decoder failing mid-document fails that document only
            yield _DocFailed(doc_no, f"{path}: {e}")
            return
        yield _DocEnd(doc_no)


def _produce_pages(files: Sequence[InputFile], options: BatchOptions, out: Any, stop: Any, in_child: bool) -> None:
    """Open each document in order and send its pages into the bounded queue ``out``.

    Runs in a child process by default (see ``_start_producer``) or in a thread. A put waits while the
    queue is full, which is what bounds memory; it gives up when ``stop`` is set or, in a child, when
    the parent has died (a kill -9 must not leave a renderer blocked forever).
    """
    parent = os.getppid()
    created: list[str] = []  # shared-memory blocks this child made (freed here if the parent is gone)
    if in_child:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle

    def put(item: Any) -> bool:
        while not stop.is_set():
            if in_child and os.getppid() != parent:
                return False
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for doc_no, f in enumerate(files):
            if stop.is_set():
                return
            for event in document_events(doc_no, f.path, options, raw_pixels=in_child):
                if isinstance(event, _DocPage) and in_child:
                    event = _DocPage(doc_no, _to_shared(event.page, created))
                if not put(event):
                    return
    finally:
        put(_End())
        if in_child:
            # Pages may still wait in the queue: stay until the parent has finished with them (it sets
            # stop when the run ends) or has died (kill -9), then free whatever is left.
            while not stop.is_set() and os.getppid() == parent:
                time.sleep(0.05)
            for name in created:
                _unlink_shared(name)


@dataclass
class _Producer:
    queue: Any
    stop: Any
    worker: Any  # threading.Thread or multiprocessing.Process

    def alive(self) -> bool:
        return self.worker.is_alive()

    def close(self) -> None:
        self.stop.set()
        deadline = time.monotonic() + 10
        while self.worker.is_alive() and time.monotonic() < deadline:
            try:  # unblock a producer waiting on a full queue
                item = self.queue.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, _DocPage) and isinstance(item.page.image, _SharedPixels):
                _unlink_shared(item.page.image.name)
        if self.worker.is_alive() and hasattr(self.worker, "terminate"):
            self.worker.terminate()
        self.worker.join(timeout=5)


def _start_producer(files: Sequence[InputFile], options: BatchOptions, maxsize: int) -> _Producer:
    """Render pages ahead of the model, in a forked child process on Linux, else in a thread. A process because pymupdf holds the GIL while rendering: in a thread it would compete
    with the model's Python work instead of overlapping it (measured: benchmarks/batch_throughput.py).
    A process also keeps a crash inside a PDF decoder from taking the whole batch down."""
    use_process = options.render_in_process
    if use_process is None:  # fork is available on macOS too, but unsafe there with system frameworks
        use_process = sys.platform.startswith("linux")
    if use_process:
        # fork, not spawn: spawn re-imports the caller's __main__ (a script would run twice); the
        # child only renders with pymupdf/Pillow and never touches torch.
        ctx = multiprocessing.get_context("fork")
        pages_queue, stop = ctx.Queue(maxsize=maxsize), ctx.Event()
        worker: Any = ctx.Process(target=_produce_pages, args=(files, options, pages_queue, stop, True), name="varco-ocr-pages", daemon=True)
    else:
        pages_queue, stop = queue.Queue(maxsize=maxsize), threading.Event()
        worker = threading.Thread(target=_produce_pages, args=(files, options, pages_queue, stop, False), name="varco-ocr-pages", daemon=True)
    worker.start()
    return _Producer(pages_queue, stop, worker)


# ------------------------------------------------------------------------------------------------
# Progress display
# ------------------------------------------------------------------------------------------------


class _Progress:
    """Rich progress bars on a terminal, plain log lines otherwise (or nothing); see BatchOptions.progress."""

    def __init__(self, mode: str, total_docs: int, total_pages: int) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        if mode == "auto":
            mode = "rich" if self.console.is_terminal else "plain"
        self.mode = mode
        self.total_docs, self.total_pages = total_docs, total_pages
        self.docs_done = self.pages_done = 0
        self.started = time.monotonic()
        self._rich = None
        self._tokens = 0
        # Tokens generated are counted (OCREngine's on_tokens) only for the bar that shows them.
        self.on_tokens: Callable[[int], None] | None = None
        if mode == "reading" and self.console.is_terminal:
            # With real weights on a CPU one page takes minutes: pages done and tokens/s show it is alive.
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._rich = Progress(TextColumn("reading"), BarColumn(), MofNCompleteColumn(), TextColumn("pages"),
                                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=self.console)
            self._pages = self._rich.add_task("ocr", total=total_pages, rate="")
            self.on_tokens = self._count_tokens
            self._rich.start()
        elif mode == "rich":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._rich = Progress(
                TextColumn("{task.description:<9}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._docs = self._rich.add_task("documents", total=total_docs, rate="")
            self._pages = self._rich.add_task("pages", total=total_pages, rate="")
            self._rich.start()

    def _rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.pages_done / elapsed if elapsed > 0 else 0.0

    def _count_tokens(self, n: int) -> None:
        self._tokens += n
        if self._rich is not None:
            elapsed = max(time.monotonic() - self.started, 1e-6)
            self._rich.update(self._pages, rate=f"{self._tokens / elapsed:.1f} tokens/s")

    def pages(self, n: int) -> None:
        self.pages_done += n
        if self._rich is not None and self.mode == "reading":
            self._rich.update(self._pages, advance=n)
        elif self._rich is not None:
            self._rich.update(self._pages, advance=n, rate=f"{self._rate():.2f} pages/s")

    def more_pages(self, n: int) -> None:
        """Raise the page total (the Ray run learns it as documents open, not before)."""
        self.total_pages += n
        if self._rich is not None:
            self._rich.update(self._pages, total=self.total_pages)

    def document(self, outcome: DocumentOutcome) -> None:
        self.docs_done += 1
        if self.mode == "reading":
            return
        if self._rich is not None:
            self._rich.update(self._docs, advance=1)
            if outcome.status not in ("done", "skipped"):
                self._rich.console.print(f"[red]{outcome.status}[/red] {outcome.source}: {outcome.error or '; '.join(outcome.page_errors)}")
            for warning in outcome.page_warnings:
                self._rich.console.print(f"[yellow]warning[/yellow] {outcome.source}: {warning}", highlight=False)
            return
        if self.mode == "plain":
            rate = self._rate()
            left = self.total_pages - self.pages_done
            eta = f"{left / rate:.0f} s" if rate > 0 and outcome.status != "skipped" else "-"
            detail = outcome.error or "; ".join(outcome.page_errors) or f"{outcome.pages} pages, {outcome.seconds:.1f} s"
            if outcome.page_warnings:
                detail += "; " + "; ".join(outcome.page_warnings)
            print(
                f"[{self.docs_done}/{self.total_docs}] {outcome.status} {outcome.source}: {detail} "
                f"({self.pages_done}/{self.total_pages} pages, {rate:.2f} pages/s, ETA {eta})",
                file=sys.stderr,
                flush=True,
            )

    def note(self, text: str) -> None:
        if self.mode not in ("none", "reading"):
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)  # one line per note, whatever the width

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    def summary(self, summary: BatchSummary) -> None:
        if self.mode in ("none", "reading"):
            return
        from rich.table import Table

        table = Table(title="varco-ocr batch" + (" (interrupted)" if summary.interrupted else ""))
        for col in ("done", "skipped", "partial", "failed", "pages", "time", "pages/s"):
            table.add_column(col, justify="right")
        rate = summary.pages / summary.seconds if summary.seconds > 0 else 0.0
        table.add_row(
            *(str(summary.count(s)) for s in ("done", "skipped", "partial", "failed")),
            str(summary.pages),
            f"{summary.seconds:.1f} s",
            f"{rate:.2f}",
        )
        self.console.print(table)
        from_pdf = sum(o.pages_from_pdf for o in summary.outcomes if o.status in ("done", "partial"))
        if from_pdf:
            self.console.print(f"{summary.pages - from_pdf} pages read by the model, {from_pdf} taken from the PDF's own text")


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


@dataclass
class _DocState:
    file: InputFile
    fingerprint: str | None
    started: float
    plan: _Plan | None = None  # with an output folder
    page_indices: list[int] | None = None
    ended: bool = False
    pages: dict[int, Page] = field(default_factory=dict)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    missing_pages: str | None = None  # see _DocOpened
    # The source's name when it is not ``file.path``. In the Ray run: an object store URL (``file.path``
    # is then a local copy, or a placeholder when no export reads the source again), or a local path
    # as given (``file.path`` is then the absolute path: Ray's workers need not share our folder).
    source: str | None = None

    def complete(self) -> bool:
        if self.error is not None:
            return True
        return self.ended and self.page_indices is not None and all(i in self.pages for i in self.page_indices)


def _ocr_pages(backend: OCRBackend, items: list[_DocPage]) -> list[Page]:
    """OCR a batch; if the batch fails, retry page by page so one bad page fails alone."""
    images = [it.page.image for it in items]
    indices = [it.page.index for it in items]
    try:
        pages = backend.ocr_batch(images, batch_size=len(images), indices=indices)  # type: ignore[arg-type]
    except (KeyboardInterrupt, BackendUnavailable):
        raise
    except Exception as e:  # noqa: BLE001
        if len(items) == 1:  # a page that fails alone is a recorded page failure, not the run's end
            return [_failed_alone(items[0], e)]
        return [page for it in items for page in _ocr_pages(backend, [it])]
    return [_placed(page, it) for page, it in zip(pages, items)]


def _placed(page: Page, item: _DocPage) -> Page:
    """A page the backend read, with the runner's page number, dpi, size and PDF geometry."""
    return attach_pdf_points(replace(page, index=item.page.index, dpi=item.page.dpi if item.page.dpi else page.dpi,
                                     **_known_size(page, item)), item.page.geometry)


def _failed_alone(item: _DocPage, e: BaseException) -> Page:
    """A page that failed alone: a recorded page failure (keeping its size), not the run's end."""
    width, height = item.page.image.size  # type: ignore[union-attr]
    return Page(index=item.page.index, width=width, height=height, dpi=item.page.dpi,
                error=f"page {item.page.index + 1}: OCR failed ({type(e).__name__}: {e})")


class _Overlapped:
    """The runner's batches through the backend's ``ocr_batches`` stream (the local engine): batch
    N+1 is loaded and pre-processed in the engine's prefetch thread while batch N generates on this
    thread, across the runner's batches. ``submit`` hands a batch over; ``collect`` reads the oldest
    one back. The runner collects only while another batch is submitted behind it (or the feed is
    ended), so exactly one batch is prepared ahead and the prefetch thread never waits on an empty
    feed while this thread waits for it. A batch that fails is retried page by page through the
    same stream, so one failing page fails alone, as in ``_ocr_pages``."""

    def __init__(self, backend: OCRBackend, on_tokens: Callable[[int], None] | None = None) -> None:
        from varco_ocr.engine import PageBatch

        self._batch = PageBatch
        self._backend = backend
        self._on_tokens = on_tokens
        self.in_flight = 0
        self._ended = False  # the runner has no more batches
        self._start()

    def _start(self) -> None:
        self._feed: queue.Queue = queue.Queue()
        self._sentinel = False  # the feed's end marker is in: nothing can follow it in this stream
        # This stream's own: set by close(), and by the stream itself when it ends however it ends (a
        # Ctrl-C inside it included), so the prefetch thread waiting on the feed stops and can be joined.
        self._closing = threading.Event()
        self._results = self._backend.ocr_batches(self._batches(self._feed, self._closing), isolate_errors=True,  # type: ignore[attr-defined]
                                                  stop=self._closing, on_tokens=self._on_tokens)

    @staticmethod
    def _batches(feed: queue.Queue, closing: threading.Event) -> Iterator[Any]:
        # Iterated in the engine's prefetch thread; polls so that the stream's end always ends it.
        while not closing.is_set():
            try:
                batch = feed.get(timeout=0.1)
            except queue.Empty:
                continue
            if batch is None:
                return
            yield batch

    def submit(self, items: list[_DocPage]) -> None:
        self._feed.put(self._batch(images=[it.page.image for it in items], indices=[it.page.index for it in items],
                                   tag=items))
        self.in_flight += 1

    def end(self) -> None:
        """No more batches: what is in flight can be collected to the last."""
        self._ended = True

    def collect(self) -> list[tuple[_DocPage, Page]]:
        if self._ended and self.in_flight == 1 and not self._sentinel:
            # The last batch: the feed's end lets the prefetch thread finish instead of waiting for more.
            self._feed.put(None)
            self._sentinel = True
        batch, pages = next(self._results)
        self.in_flight -= 1
        items: list[_DocPage] = batch.tag
        if not isinstance(pages, Exception):
            return [(it, _placed(page, it)) for it, page in zip(items, pages)]
        if len(items) == 1:
            return [(items[0], _failed_alone(items[0], pages))]
        if self._sentinel:  # the stream was told it had its last batch: retry on a fresh one
            self._results.close()
            self._start()
        for it in items:  # behind the batches already in flight; the runner collects them in turn
            self.submit([it])
        return []

    def close(self) -> None:
        self._closing.set()
        self._results.close()


def _known_size(page: Page, item: _DocPage) -> dict[str, int]:
    """A page the backend failed (a server error) may come back 0 x 0: the runner knows its size."""
    if page.width > 0 and page.height > 0 or item.page.image is None:
        return {}
    width, height = item.page.image.size  # type: ignore[union-attr]
    return {"width": width, "height": height}


def skipped_outcome(source: str, record: dict[str, Any]) -> DocumentOutcome:
    """The outcome of a document skipped as done, from its record: one whose --pages asked for pages
    it lacks is said again, and exits 1 again."""
    missing = record.get("pages_missing")
    warnings = [w for w in record.get("page_warnings") or [] if missing and w.startswith("--pages ")]
    return DocumentOutcome(source, "skipped", pages=0, pages_missing=missing, page_warnings=warnings)


def run(inputs: Sequence[Path], backend: OCRBackend, options: BatchOptions) -> BatchSummary:
    """OCR every document found in ``inputs`` (files and folders) with ``backend``.

    Raises OutputFolderError before any work if the output folder is not writable, and RunLogError
    (the run stops, resumable) if the run log cannot be appended to. Ctrl-C stops the run cleanly:
    finished documents stay finished, the summary says ``interrupted``.
    """
    started = time.monotonic()
    summary = BatchSummary()
    out_dir = Path(options.out_dir) if options.out_dir is not None else None
    if out_dir is not None:
        check_output_folder(out_dir)
    model = options.model or getattr(backend, "model_name", None)
    options = replace(options, model=model)

    log = RunLog(out_dir) if out_dir is not None else None
    out_root = out_dir.resolve() if out_dir is not None else None
    index = LogIndex.read(log, out_root) if log is not None and out_root is not None else LogIndex()
    # What this tool wrote is never read back as an input: the output folder inside an input folder
    # is pruned, and files the log names as outputs are left out wherever they are.
    listing = collect_inputs([Path(p) for p in inputs], options.glob, exclude_dir=out_dir, exclude_files=set(index.writers))
    summary.notes.extend(f"skipped {s.path}: {s.reason}" for s in listing.skipped)
    for missing in listing.missing:
        summary.outcomes.append(DocumentOutcome(str(missing), "failed", error=f"{missing}: no such file or folder"))
    for output in listing.refused:
        summary.outcomes.append(DocumentOutcome(str(output.path), "failed", error=f"{output.path}: not read: {output.reason}"))

    todo: list[InputFile] = []
    fingerprints: list[str | None] = []
    keys: list[str] = []
    skipped_keys: set[str] = set()
    for f in listing.files:
        key = source_key(f.path)
        fp = options_fingerprint(f.path, options) if out_dir is not None else None
        if (out_dir is not None and not options.overwrite
                and is_complete(index.last.get(key), fp or "", options.formats, out_dir, index.writers)):
            summary.outcomes.append(skipped_outcome(str(f.path), index.last[key]))
            skipped_keys.add(key)
            continue
        todo.append(f)
        fingerprints.append(fp)
        keys.append(key)
    page_indices = [selected_pages(f.path, options.pages, options.password) for f in todo]

    plans: list[_Plan] = []
    refused: list[tuple[InputFile, _Plan, str | None]] = []
    guard = _InputGuard(())
    if out_dir is not None and out_root is not None:
        guard = _InputGuard(listing.files)
        plans = plan_outputs(todo, page_indices, keys, options, out_root, index, guard, skipped_keys)
        remove_stale_temp_files(plans, index, skipped_keys)
        kept: list[int] = []
        for i, plan in enumerate(plans):
            if plan.refused is None:
                kept.append(i)
            else:
                refused.append((todo[i], plan, fingerprints[i]))
        todo = [plans[i].file for i in kept]
        fingerprints = [fingerprints[i] for i in kept]
        page_indices = [page_indices[i] for i in kept]
        plans = [plans[i] for i in kept]
        for f, plan, fp in refused:
            summary.outcomes.append(DocumentOutcome(str(f.path), "failed", error=f"{f.path}: {plan.refused}"))

    total_pages = sum(len(indices) for indices in page_indices)
    progress = _Progress(options.progress, len(todo), total_pages)
    for note in summary.notes:
        progress.note(note)
    for o in summary.outcomes:
        if o.status == "failed":
            progress.note(f"failed {o.source}: {o.error}")
        for warning in o.page_warnings if o.status == "skipped" else ():
            progress.note(f"skipped {o.source}: {warning}")

    if log is not None:
        log.append({"event": "run", "formats": list(options.formats), "documents": len(todo), "skipped": summary.count("skipped")})
        for f, plan, fp in refused:
            log.append({"source": str(f.path), "source_path": plan.key, "status": "failed", "error": f"{f.path}: {plan.refused}",
                        "fingerprint": fp})

    batch_size = max(1, options.batch_size)
    if options.render_in_process is None and getattr(backend, "render_in_thread", False):
        options = replace(options, render_in_process=False)
    producer = _start_producer(todo, options, options.prefetch or max(batch_size, MIN_PREFETCH)) if todo else None
    states: dict[int, _DocState] = {}
    finished: set[int] = set()
    pending: list[_DocPage] = []

    def state(doc_no: int) -> _DocState:
        if doc_no not in states:
            states[doc_no] = _DocState(todo[doc_no], fingerprints[doc_no], time.monotonic(), plans[doc_no] if plans else None)
        return states[doc_no]

    def finish_ready() -> None:
        for doc_no in sorted(states):
            st = states[doc_no]
            if st.complete():
                del states[doc_no]
                finished.add(doc_no)
                outcome, record = finish_document(st, options, out_dir, log, summary, index, guard)
                with _interrupts_deferred():  # the log, the summary and the progress lines agree
                    if log is not None and record is not None:
                        log.append(record)
                    summary.outcomes.append(outcome)
                    if outcome.xml_replaced:
                        note = xml_replaced_note(outcome)
                        summary.notes.append(note)
                        progress.note(note)
                    progress.document(outcome)

    # A backend with ocr_batches (the local engine) prepares the next batch while this one generates;
    # others (the server backend: its requests overlap in its own workers) get ocr_batch per batch.
    overlapped = _Overlapped(backend, progress.on_tokens) if producer is not None and hasattr(backend, "ocr_batches") else None

    def store(read: list[tuple[_DocPage, Page]]) -> None:
        for it, page in read:
            state(it.doc_no).pages[it.page.index] = page
        progress.pages(len(read))

    def run_batch() -> None:
        nonlocal pending
        items, pending = pending, []
        if overlapped is None:
            store(list(zip(items, _ocr_pages(backend, items))))
            return
        overlapped.submit(items)
        while overlapped.in_flight >= 2:  # one batch stays behind, being prepared while this one generates
            store(overlapped.collect())

    def drain() -> None:
        if overlapped is not None:
            overlapped.end()
            while overlapped.in_flight:
                store(overlapped.collect())

    try:
        while producer is not None:
            try:
                msg = producer.queue.get(timeout=1.0)
            except queue.Empty:
                if producer.alive():
                    continue
                # The renderer died without saying it was done (a crash in a decoder): every
                # document not finished yet fails, and the run ends normally.
                for doc_no in range(len(todo)):
                    if doc_no not in finished:
                        state(doc_no).error = f"{todo[doc_no].path}: page renderer stopped unexpectedly (exit code {getattr(producer.worker, 'exitcode', None)})"
                pending = []
                finish_ready()
                break
            if isinstance(msg, _End):
                if pending:
                    run_batch()
                drain()
                finish_ready()
                break
            if isinstance(msg, _DocOpened):
                st = state(msg.doc_no)
                st.page_indices = msg.page_indices
                if msg.missing_note:  # reported with the document, like a damaged page
                    st.warnings.append(msg.missing_note)
                    st.missing_pages = msg.missing_pages
            elif isinstance(msg, _DocFailed):
                state(msg.doc_no).error = msg.error
            elif isinstance(msg, _DocEnd):
                state(msg.doc_no).ended = True
            elif isinstance(msg, _DocPage) and msg.page.text_page is not None:
                state(msg.doc_no).pages[msg.page.index] = msg.page.text_page  # words from the PDF itself
                progress.pages(1)
            elif isinstance(msg, _DocPage):
                msg.page = _from_shared(msg.page)
                if msg.page.warning:
                    state(msg.doc_no).warnings.append(msg.page.warning)
                if msg.page.image is None:
                    st = state(msg.doc_no)
                    # a failed page keeps its size when the file tells it; 0 x 0 only when unknown
                    width, height = msg.page.size or (0, 0)
                    st.pages[msg.page.index] = Page(index=msg.page.index, width=width, height=height, dpi=msg.page.dpi, error=msg.page.error)
                    progress.pages(1)
                else:
                    pending.append(msg)
                    if len(pending) >= batch_size:
                        run_batch()
            finish_ready()
    except KeyboardInterrupt:
        summary.interrupted = True
        for st in states.values():
            summary.outcomes.append(DocumentOutcome(str(st.file.path), "interrupted", pages=len(st.pages)))
    finally:
        # also on RunLogError: the renderer stops and frees its shared-memory pages
        if overlapped is not None:
            overlapped.close()  # ends the engine's prefetch thread (after the batch it is preparing)
        if producer is not None:
            producer.close()
        progress.close()
    summary.seconds = time.monotonic() - started
    if log is not None:
        log.append({"event": "run-end", "interrupted": summary.interrupted, "done": summary.count("done"), "failed": summary.count("failed") + summary.count("partial")})
    progress.summary(summary)
    return summary


XML_FORMATS = ("hocr", "alto")


def document_metadata(path: Path, options: BatchOptions, source_path: str | None = None) -> dict[str, Any]:
    """A document's ``metadata``, the same whichever way it is written (an output folder or stdout):
    one document for one input. ``source_path``: the source's URL when it is not the local file
    ``path`` (object storage, in the Ray run)."""
    return {
        k: v
        for k, v in {
            # the absolute path lets `varco-ocr export` find the source from any folder later
            "source_path": source_path or str(path.resolve()),
            "dpi": options.dpi if path.suffix.lower() in PDF_SUFFIXES else None,
            "pages": None if options.pages is None else str(options.pages),
            # the searchable-PDF export strips old invisible layers in these modes
            "text_mode": options.text_mode if options.text_mode != "force" else None,
        }.items()
        if v is not None
    }


def xml_replaced_note(outcome: DocumentOutcome) -> str:
    """The run's note for a document whose hOCR / ALTO had characters replaced (the name made safe
    to print too: it may hold the very control characters counted)."""
    n = outcome.xml_replaced
    return (f"{xml_safe(outcome.source)[0]}: {n} character{'s' if n != 1 else ''} that XML 1.0 forbids "
            f"replaced by U+FFFD in hOCR/ALTO")


@contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) back for a few statements: a document's run-log record, its place in the
    summary and its progress line are written together, so an interrupt cannot leave the log saying
    "done" while the summary says nothing; it takes effect right after. A Python-level handler that
    only records the signal, not a blocked signal mask: with other threads alive (the prefetch thread,
    the thread renderer) the kernel hands a process signal to a thread that does not block it, and
    Python then raises in the main thread all the same."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt here
            elif previous != signal.SIG_IGN:
                raise KeyboardInterrupt


class RecordSink(Protocol):
    def append(self, record: dict[str, Any]) -> None: ...


def finish_document(
    st: _DocState, options: BatchOptions, out_dir: Path | None, log: RecordSink | None, summary: BatchSummary,
    index: LogIndex | None = None, guard: Collection[Path] | None = None, seconds: float | None = None,
) -> tuple[DocumentOutcome, dict[str, Any] | None]:
    """Build a finished document from its read pages and write its outputs; return its outcome and its
    record (None without an output folder), which the caller stores with the outcome (the local
    runner: the run log, see ``_interrupts_deferred``; the Ray run: the manifest). ``log`` gets the
    ``writing`` record before any output is written. The one implementation of this step for both."""
    source = st.source or str(st.file.path)
    seconds = time.monotonic() - st.started if seconds is None else seconds
    key = st.plan.key if st.plan is not None else source_key(st.file.path)
    if st.error is not None:
        outcome = DocumentOutcome(source, "failed", error=st.error, seconds=seconds)
        return outcome, {"source": source, "source_path": key, "status": "failed", "error": st.error, "fingerprint": st.fingerprint}
    pages = tuple(st.pages[i] for i in sorted(st.pages))
    document = Document(source=source, pages=pages, model=options.model,
                        metadata=document_metadata(st.file.path, options, source_path=st.source if st.source is not None and is_url(st.source) else None))
    page_errors = [p.error for p in pages if p.error]
    status = "done" if not page_errors else ("failed" if len(page_errors) == len(pages) else "partial")
    outcome = DocumentOutcome(source, status, pages=len(pages) - len(page_errors), page_errors=page_errors,
                              page_warnings=list(st.warnings), seconds=seconds, pages_from_pdf=count_by_source(pages)[1],
                              pages_missing=st.missing_pages)
    if out_dir is None:  # printed, not written: no run log
        summary.documents.append(document)
        return outcome, None
    by_format: dict[str, list[str]] = {}
    try:
        expected = expected_outputs(document, out_dir, st.file.output_stem, options.formats) if status != "failed" else []
        if expected:
            out_root = out_dir.resolve()
            resolved = [out_root / p.relative_to(out_dir) for p in expected]
            planned = set(st.plan.outputs) if st.plan is not None else set(resolved)
            unplanned = [str(p) for p in resolved if p not in planned]
            if unplanned:  # a path another document of the run may have: never write it
                raise RuntimeError(f"output paths not planned: {', '.join(unplanned)}")
            # checked again just before writing: a file may have appeared since the run started
            reason = _foreign_file(resolved, key, index or LogIndex(), guard or _InputGuard(()), options.overwrite)
            if reason is not None:
                raise RuntimeError(reason)
            if log is not None:  # named before written, so the next run knows these files are ours
                log.append({"event": "writing", "source": source, "source_path": key,
                            "outputs": [p.relative_to(out_dir).as_posix() for p in expected]})
        opts: dict[str, Any] = {"source": st.file.path, "password": options.password}
        for fmt in options.formats if status != "failed" else ():  # no page read: nothing to write
            written = write_exports(document, out_dir, (fmt,), stem=st.file.output_stem, **opts)
            by_format[fmt] = [p.relative_to(out_dir).as_posix() for p in written]
        outcome.outputs = [p for paths in by_format.values() for p in paths]
        if any(fmt in by_format for fmt in XML_FORMATS):
            outcome.xml_replaced = xml_unsafe_count(document)
        missing = {p.relative_to(out_dir).as_posix() for p in expected} - set(outcome.outputs)
        if missing and status != "failed":
            raise RuntimeError(f"outputs not written: {', '.join(sorted(missing))}")
    except (KeyboardInterrupt, RunLogError):
        raise
    except Exception as e:  # noqa: BLE001 - an export failure fails this document, not the batch
        outcome.status, outcome.error = "failed", f"{source}: export failed ({e})"
    return outcome, {
                "source": source,
                "source_path": key,
                "status": outcome.status,
                "fingerprint": st.fingerprint,
                "pages": len(pages),
                "page_errors": page_errors,
                "page_warnings": outcome.page_warnings,
                "pages_model": outcome.pages - outcome.pages_from_pdf,
                "pages_pdf_text": outcome.pages_from_pdf,
                **({"pages_missing": outcome.pages_missing} if outcome.pages_missing else {}),
                **({"xml_replaced": outcome.xml_replaced} if outcome.xml_replaced else {}),
                "error": outcome.error,
                # what was written, even when the document failed half-way: those files are ours
                "outputs_by_format": by_format,
                "seconds": round(seconds, 3),
    }
