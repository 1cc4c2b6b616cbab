"""The batch pipeline on Ray Data: the local runner's work spread over a Ray cluster.

    driver: list documents (varco_ocr.storage), skip done ones (manifest), plan outputs
      -> ray.data.from_items(documents)
      -> flat_map  (CPU tasks)   open each document, render / decode it page by page
                                 (batch.document_events: same --pages, --dpi, password, pixel limits)
      -> map_batches (actors)    the model: OCREngine (num_gpus=1 each when the cluster has GPUs,
                                 CPU actors otherwise, --workers of them), or ServerBackend with --server
      -> driver: streams the small page results, reassembles each document when all its pages are in
      -> ray.remote export task (CPU): batch.finish_document (the local runner's own step: Document,
                                 exporters, record) then the document's manifest record

Pages stream: a document's pages leave its render task one at a time (a generator under Ray Data's
streaming executor and backpressure, blocks of about one page), so a 2,000-page PDF never sits whole
in the object store. Rows carry a page's raw pixels plus its index, dpi, size and PDF geometry.

Resume and retries: one manifest record per document (storage.Manifest) after its outputs, with the
local run log's fingerprint rule; done documents with the same fingerprint and all outputs present are
skipped, failed ones redone. Model actors are restarted and their batches retried when their process
dies (max_restarts / max_task_retries), render and export tasks retried (max_retries); the driver keys
pages by (document, page index), so a batch done twice never gives a page twice, and a document is
exported once. The entry point, ``run_ray``, is a plain function a benchmark can call.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from PIL import Image

from varco_ocr import batch
from varco_ocr.batch import (
    BackendUnavailable,
    BatchOptions,
    BatchSummary,
    DocumentOutcome,
    LogIndex,
    OCRBackend,
    _DocState,
    source_fingerprint,
)
from varco_ocr.errors import VarcoOCRError
from varco_ocr.exporters import NEEDS_SOURCE
from varco_ocr.inputs import InputFile, PageImage, selected_pages
from varco_ocr.storage import Destination, Manifest, Scrubber, Source, is_url, list_sources, local_copy, one_line

INSTALL_HINT = 'pip install "varco-ocr[ray]"'
# Blocks of about one page (a 300-dpi A4 page is 26 MB of RGB): Ray Data splits a render task's
# output at this size, so pages move, and are held back by backpressure, one at a time.
TARGET_BLOCK_BYTES = 8 << 20
RETRIES = 3  # a render task or model batch whose process died is run again this many times


class RayUnavailable(VarcoOCRError):
    """Ray Data (or fsspec) is not installed."""


def require_ray() -> None:
    """Raise RayUnavailable with the install command when ray[data] or fsspec is missing."""
    try:
        import fsspec  # noqa: F401
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as e:
        raise RayUnavailable(f"--ray needs Ray Data and fsspec ({e.name or e} is not installed): {INSTALL_HINT}") from None


@dataclass
class RayOptions:
    address: str | None = None  # None: start a local Ray in this process (--ray local); "auto": join the running cluster
    workers: int = 1  # model actors (each one GPU when the cluster has GPUs)
    num_cpus: int | None = None  # a local Ray's CPUs (default: this machine's)
    gpus_per_worker: float | None = None  # None: 1 when the cluster has GPUs, else 0 (CPU actors)
    # None: 1 each, but never so many that the actors hold every CPU (rendering and exports would wait
    # for ever): with W actors on C CPUs and W >= C, each gets (C - 1) / W
    cpus_per_worker: float | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)  # fsspec options (e.g. an S3 endpoint)
    exports_in_flight: int = 0  # export tasks submitted at once (0: twice the cluster's CPUs)
    # Each model actor writes its PID to a file in this folder once its backend is built (for operators
    # and the tests, which kill one to check that no document is lost or duplicated).
    pid_dir: str | None = None


# ------------------------------------------------------------------------------------------------
# Rows: one schema for every row, so Arrow blocks stay uniform
# ------------------------------------------------------------------------------------------------


def _row(doc: int, kind: str, meta: Any = None, index: int = -1, pixels: bytes = b"") -> dict[str, Any]:
    return {"doc": doc, "kind": kind, "index": index, "pixels": pixels, "meta": pickle.dumps(meta)}


class _Render:
    """The flat_map stage: one document (a row of the listing) -> its events as rows, page by page."""

    def __init__(self, options: BatchOptions, storage_options: dict[str, Any], scrub: Scrubber = Scrubber()) -> None:
        self.options = options
        self.storage_options = storage_options
        self.scrub = scrub

    def __call__(self, item: dict[str, Any]) -> Iterator[dict[str, Any]]:
        doc_no, url = int(item["doc"]), str(item["url"])
        try:
            with local_copy(str(item["open"]), self.storage_options) as local:
                for event in batch.document_events(doc_no, local, self.options):
                    yield self._event_row(event, str(local), url)
        except Exception as e:  # noqa: BLE001 - the copy failed (object gone, no permission): this document fails
            yield _row(doc_no, "failed", one_line(self.scrub(f"{url}: cannot be read ({type(e).__name__}: {e})")))

    @staticmethod
    def _event_row(event: Any, local: str, url: str) -> dict[str, Any]:
        if isinstance(event, batch._DocOpened):
            return _row(event.doc_no, "opened", (event.page_indices, event.missing_note, event.missing_pages))
        if isinstance(event, batch._DocFailed):  # name the source, not a temporary copy of it
            return _row(event.doc_no, "failed", event.error.replace(local, url) if local != url else event.error)
        if isinstance(event, batch._DocEnd):
            return _row(event.doc_no, "end")
        page: PageImage = event.page
        if page.image is None:  # failed, or taken from the PDF's own text: no model needed
            return _row(event.doc_no, "page", replace(page, raw=None), page.index)
        image = page.image
        meta = (replace(page, image=None, raw=None), image.mode, image.size)
        return _row(event.doc_no, "page", meta, page.index, image.tobytes())


class _ModelStage:
    """The map_batches stage: an actor holding the backend (OCREngine, or ServerBackend with --server),
    built once from a picklable factory. Pages with pixels are read (a failing batch is retried page by
    page, as in the local runner: batch._ocr_pages); other rows pass through."""

    def __init__(self, factory: Callable[[], OCRBackend], pid_dir: str | None = None) -> None:
        self.backend: OCRBackend | None = None
        self.error: str | None = None
        try:
            self.backend = factory()
        except Exception as e:  # noqa: BLE001 - reported on the first batch: the run cannot go on
            self.error = str(e) or type(e).__name__
        if pid_dir:
            Path(pid_dir, f"{os.getpid()}.pid").write_text(str(os.getpid()))

    def __call__(self, rows: dict[str, Any]) -> dict[str, list[Any]]:
        if self.backend is None:
            raise BackendUnavailable(self.error or "the model could not be built")
        out: dict[str, list[Any]] = {"doc": [], "kind": [], "index": [], "pixels": [], "meta": []}
        items: list[batch._DocPage] = []
        for doc, kind, index, pixels, meta in zip(rows["doc"], rows["kind"], rows["index"], rows["pixels"], rows["meta"]):
            if kind == "page" and len(pixels):
                page, mode, size = pickle.loads(meta)
                items.append(batch._DocPage(int(doc), replace(page, image=Image.frombytes(mode, tuple(size), bytes(pixels)))))
                continue
            for k, v in zip(out, (int(doc), str(kind), int(index), b"", bytes(meta))):
                out[k].append(v)
        if items:
            for item, page in zip(items, batch._ocr_pages(self.backend, items)):
                for k, v in zip(out, (item.doc_no, "read", item.page.index, b"", pickle.dumps((page, item.page.warning)))):
                    out[k].append(v)
        return out


# ------------------------------------------------------------------------------------------------
# Export: a CPU task per finished document
# ------------------------------------------------------------------------------------------------


def _export(st: _DocState, options: BatchOptions, dest: Destination, index: LogIndex, guard: Any,
            seconds: float, storage_options: dict[str, Any], open_url: str | None = None,
            scrub: Scrubber = Scrubber()) -> tuple[DocumentOutcome, dict[str, Any]]:
    """Write one document's outputs with the local runner's ``finish_document``, then its manifest
    record. A local destination is written in place (temp file + rename per file); a store's outputs
    are written into a local staging folder, checked against the store and uploaded one whole object
    each (storage module doc). Runs as a Ray task, retried if its worker dies: every write is whole.
    ``open_url``: the source's URL with its credentials when ``st.source`` (shown) has them removed;
    ``scrub`` removes known secrets from the errors recorded."""
    manifest = Manifest(dest)
    needs_source = is_url(st.source or "") and any(f in NEEDS_SOURCE for f in options.formats) and st.error is None
    with local_copy((open_url or st.source) if needs_source and st.source else str(st.file.path), storage_options) as source_file:
        st = replace(st, file=replace(st.file, path=source_file))
        if dest.local:
            outcome, record = batch.finish_document(st, options, dest.local_dir, manifest, BatchSummary(), index, guard, seconds)
        else:
            outcome, record = _export_to_store(st, options, dest, manifest, index, guard, seconds)
    assert record is not None  # an output folder always gets a record
    if outcome.error:
        outcome.error = record["error"] = scrub(outcome.error)
    manifest.append(record)
    return outcome, record


def _export_to_store(st: _DocState, options: BatchOptions, dest: Destination, manifest: Manifest, index: LogIndex,
                     guard: Any, seconds: float) -> tuple[DocumentOutcome, dict[str, Any] | None]:
    staging = Path(tempfile.mkdtemp(prefix="varco-ocr-out-")).resolve()
    try:
        plan = st.plan
        if plan is not None:  # the same relative paths, under the staging folder
            plan = replace(plan, outputs=[staging / p.relative_to(dest.out_root) for p in plan.outputs])
        outcome, record = batch.finish_document(replace(st, plan=plan), options, staging, manifest, BatchSummary(),
                                                LogIndex(), (), seconds)
        targets = [dest.out_root / rel for rel in outcome.outputs]
        # checked again just before writing, against the store: an object may have appeared since planning
        key = st.plan.key if st.plan is not None else st.source or str(st.file.path)
        reason = batch._foreign_file(targets, key, index, guard, options.overwrite, exists=dest.exists)
        if reason is not None:
            outcome.status, outcome.error, outcome.outputs = "failed", f"{outcome.source}: export failed ({reason})", []
            if record is not None:
                record.update(status="failed", error=outcome.error, outputs_by_format={})
            return outcome, record
        for rel, target in zip(outcome.outputs, targets):
            dest.upload(staging / rel, target)
        return outcome, record
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


def _start_ray(ray_options: RayOptions) -> bool:
    """Connect to Ray unless this process already is; True when this call started it (and so stops it)."""
    import ray

    if ray.is_initialized():
        return False
    if ray_options.address is None:
        # "local": a new Ray in this process even when a cluster runs here (address None would join it)
        ray.init(address="local", num_cpus=ray_options.num_cpus or os.cpu_count() or 1, include_dashboard=False)
    else:
        ray.init(address=ray_options.address)
    return True


def run_ray(inputs: Sequence[str | os.PathLike], backend_factory: Callable[[], OCRBackend], options: BatchOptions,
            ray_options: RayOptions | None = None) -> BatchSummary:
    """OCR every document ``inputs`` name (local paths, folders, URLs, globs) on Ray, writing to
    ``options.out_dir`` (a local folder or a URL). ``backend_factory`` (picklable) builds the backend in
    each model actor. Same outputs, resume rule and summary as ``batch.run``; raises OutputFolderError
    before any work when the destination is not writable, BackendUnavailable when the model cannot be built."""
    require_ray()
    import ray

    ray_options = ray_options or RayOptions()
    if options.out_dir is None:
        raise ValueError("the Ray pipeline writes its results to an output folder (-o)")
    started = time.monotonic()
    summary = BatchSummary()
    storage_options = ray_options.storage_options
    scrub = Scrubber.for_run([*map(str, inputs), str(options.out_dir)], storage_options)
    dest = Destination(str(options.out_dir), storage_options)
    dest.prepare()
    manifest = Manifest(dest)
    index = LogIndex.from_records(manifest.records(), dest.out_root)

    listing = list_sources(inputs, options.glob, dest, {dest.url_of(p) for p in index.writers}, storage_options)
    summary.notes.extend(f"skipped {name}: {reason}" for name, reason in listing.skipped)
    summary.outcomes.extend(DocumentOutcome(m, "failed", error=f"{m}: no such file or folder") for m in listing.missing)
    summary.outcomes.extend(DocumentOutcome(name, "failed", error=f"{name}: not read: {reason}") for name, reason in listing.refused)

    todo: list[Source] = []
    fingerprints: list[str] = []
    skipped_keys: set[str] = set()
    for s in listing.files:
        fp = source_fingerprint(s.identity, s.suffix, options)
        record = index.last.get(s.key)
        if not options.overwrite and batch.is_complete(record, fp, options.formats, dest.out_root, index.writers,
                                                       out_root=dest.out_root, is_file=dest.is_file):
            summary.outcomes.append(batch.skipped_outcome(s.url, record or {}))
            skipped_keys.add(s.key)
            continue
        todo.append(s)
        fingerprints.append(fp)

    # Overlays are named by page, so their paths need the page numbers before reading (a remote
    # document is fetched for that); no other format does.
    page_indices = [_page_indices(s, options, storage_options) if "overlay" in options.formats else [] for s in todo]
    keys = [s.key for s in todo]
    if dest.local:
        guard: Any = batch._InputGuard([InputFile(s.path, s.output_stem) for s in listing.files if s.local])
    else:
        guard = frozenset(Path(s.open_url.split("://", 1)[1]) for s in listing.files
                          if not s.local and s.open_url.split("://", 1)[0] == dest.protocol)
    files = [InputFile(s.path, s.output_stem) for s in todo]
    plans = batch.plan_outputs(files, page_indices, keys, options, dest.out_root, index, guard, skipped_keys, exists=dest.exists)
    if dest.local:
        batch.remove_stale_temp_files(plans, index, skipped_keys)
    for s, plan, fp in zip(todo, plans, fingerprints):
        if plan.refused is not None:
            error = f"{s.url}: {plan.refused}"
            summary.outcomes.append(DocumentOutcome(s.url, "failed", error=error))
            manifest.append({"source": s.url, "source_path": s.key, "status": "failed", "error": error, "fingerprint": fp})
    work = [(i, s) for i, (s, plan) in enumerate(zip(todo, plans)) if plan.refused is None]

    progress = batch._Progress(options.progress, len(work), sum(len(p) for p in page_indices))
    for note in summary.notes:
        progress.note(note)
    for o in summary.outcomes:
        if o.status == "failed":
            progress.note(f"failed {o.source}: {o.error}")

    started_ray = _start_ray(ray_options) if work else False
    try:
        if work:
            _run_dataset(work, todo, plans, fingerprints, backend_factory, options, ray_options, dest, index, guard,
                         summary, progress, manifest, scrub)
    finally:
        progress.close()
        if started_ray:
            ray.shutdown()
    summary.seconds = time.monotonic() - started
    progress.summary(summary)
    return summary


def _page_indices(source: Source, options: BatchOptions, storage_options: dict[str, Any]) -> list[int]:
    try:
        with local_copy(source.open_url, storage_options) as local:
            return selected_pages(local, options.pages, options.password)
    except Exception:  # noqa: BLE001 - unreadable: it fails when rendered, with its reason
        return []


def _run_dataset(work: list[tuple[int, Source]], todo: list[Source], plans: list[Any], fingerprints: list[str],
                 backend_factory: Callable[[], OCRBackend], options: BatchOptions, ray_options: RayOptions,
                 dest: Destination, index: LogIndex, guard: Any, summary: BatchSummary, progress: Any,
                 manifest: Manifest, scrub: Scrubber = Scrubber()) -> None:
    import ray
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.target_max_block_size = TARGET_BLOCK_BYTES
    ctx.enable_progress_bars = options.progress != "none"
    ctx.enable_operator_progress_bars = options.progress != "none"
    gpus = ray_options.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    cpus = ray.cluster_resources().get("CPU", 1)
    workers = max(1, ray_options.workers)
    actor_cpus = ray_options.cpus_per_worker
    if actor_cpus is None:
        actor_cpus = 1.0 if workers < cpus else max(0.1, (cpus - 1) / workers)
    # Render and export tasks take what the actors leave, at most one CPU each: on a one-CPU Ray the
    # actors' 0.1 left 0.9, and tasks asking for 1 were never scheduled (the run hung).
    left = cpus - workers * actor_cpus
    if left < 0.1:
        raise ValueError(f"{workers} model actors of {actor_cpus:g} CPUs hold all {cpus:g} CPUs of the Ray cluster: "
                         "no CPU is left to render or export pages")
    task_cpus = min(1.0, left)
    cap = ray_options.exports_in_flight or max(2, int(2 * cpus))

    items = [{"doc": i, "url": s.url, "open": str(Path(s.url).resolve()) if s.local else s.open_url} for i, s in work]
    render_options = replace(options, settings={}, out_dir=None)
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 1000)))
    # Retries, for system failures only (a Python error in a stage is caught here, per page or
    # document). Ray Data's defaults (Ray 2.60) retry for ever: max_retries=-1 for its map tasks
    # (remote_fn.py), max_restarts=-1 and max_task_retries=-1 for its actor pools
    # (actor_pool_map_operator.py). A dead model actor is replaced for ever (max_restarts stays -1),
    # but a page or document that kills its process every time (a decoder or kernel bug) would be
    # retried for ever and hang the run: its task is tried RETRIES more times, then the dataset stops
    # and the unfinished documents fail (recorded, retried by the next run), as when the local
    # runner's renderer dies. Ray 2.60 warns that extra remote args are deprecated; these have no named
    # parameter yet, so the warning is silenced for these calls.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        ds = ds.flat_map(_Render(render_options, ray_options.storage_options, scrub), num_cpus=task_cpus, max_retries=RETRIES)
        ds = ds.map_batches(
            _ModelStage,
            fn_constructor_kwargs={"factory": backend_factory, "pid_dir": ray_options.pid_dir},
            batch_size=max(1, options.batch_size),
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_gpus=gpus,
            num_cpus=actor_cpus,
            max_restarts=-1,
            max_task_retries=RETRIES,
        )
    export = ray.remote(_export).options(max_retries=RETRIES, num_cpus=task_cpus)
    guard_ref = ray.put(guard)  # the inputs, once in the object store, not once per document
    first_seen: dict[int, float] = {}
    states: dict[int, _DocState] = {}
    page_warnings: dict[int, dict[int, str]] = {}
    submitted: dict[Any, int] = {}
    finished: set[int] = set()

    def state(doc: int) -> _DocState:
        if doc not in states:
            first_seen[doc] = time.monotonic()
            src = todo[doc]
            # a local file by its absolute path (Ray's workers need not share our working folder),
            # named as it was given
            file = replace(plans[doc].file, path=Path(src.url).resolve()) if src.local else plans[doc].file
            states[doc] = _DocState(file, fingerprints[doc], first_seen[doc], plans[doc], source=src.url)
            page_warnings[doc] = {}
        return states[doc]

    def collect(block: bool, everything: bool = False) -> None:
        """Take in finished exports: those ready, at least one with ``block``, all with ``everything``."""
        while submitted:
            done, _ = ray.wait(list(submitted), num_returns=1, timeout=None if block or everything else 0)
            if not done:
                return
            doc = submitted.pop(done[0])
            try:
                outcome, _record = ray.get(done[0])
            except Exception as e:  # noqa: BLE001 - the task failed for good: this document fails, the run goes on
                src = todo[doc]
                error = scrub(f"{src.url}: export failed ({_short(e)})")
                outcome = DocumentOutcome(src.url, "failed", error=error)
                manifest.append({"source": src.url, "source_path": src.key, "status": "failed", "error": error,
                                 "fingerprint": fingerprints[doc]})
            summary.outcomes.append(outcome)
            if outcome.xml_replaced:
                note = batch.xml_replaced_note(outcome)
                summary.notes.append(note)
                progress.note(note)
            progress.document(outcome)
            block = False

    def finish(doc: int) -> None:
        st = states.pop(doc)
        by_page = page_warnings.pop(doc, {})  # in page order, as the local runner meets them
        st.warnings = st.warnings + [by_page[i] for i in sorted(by_page)]
        finished.add(doc)
        ref = export.remote(st, options, dest, _writers_of(index, plans[doc]), guard_ref,
                            time.monotonic() - first_seen[doc], ray_options.storage_options, todo[doc].open_url, scrub)
        submitted[ref] = doc
        while len(submitted) >= cap:
            collect(block=True)

    stopped: str | None = None  # why the dataset stopped early, for every document it left unfinished
    try:
        for row in ds.iter_rows():
            doc, kind = int(row["doc"]), row["kind"]
            if doc in finished:
                continue  # a retried task's rows for a document already exported
            st = state(doc)
            meta = pickle.loads(row["meta"])
            if kind == "opened":
                if st.page_indices is None and "overlay" not in options.formats:
                    progress.more_pages(len(meta[0]))  # the total grows as documents open
                st.page_indices, note, st.missing_pages = meta
                if note:
                    st.warnings = [note]
            elif kind == "failed":
                st.error = meta
            elif kind == "end":
                st.ended = True
            elif kind == "read":
                page, warning = meta
                if page.index not in st.pages:
                    progress.pages(1)
                st.pages[page.index] = page
                if warning:
                    page_warnings[doc][page.index] = warning
            elif kind == "page":  # no pixels: the PDF's own text, or a page that failed
                if meta.index not in st.pages:
                    progress.pages(1)
                if meta.warning:
                    page_warnings[doc][meta.index] = meta.warning
                if meta.text_page is not None:
                    st.pages[meta.index] = meta.text_page
                else:
                    width, height = meta.size or (0, 0)
                    st.pages[meta.index] = batch.Page(index=meta.index, width=width, height=height, dpi=meta.dpi, error=meta.error)
            if st.complete():
                finish(doc)
            collect(block=False)
    except Exception as e:  # noqa: BLE001 - the dataset stopped (the model cannot be built, a task failed for good)
        cause = getattr(e, "cause", None)
        if isinstance(cause, BackendUnavailable) or isinstance(e, BackendUnavailable):
            collect(True, everything=True)
            raise BackendUnavailable(str(cause or e)) from None
        stopped = _short(e)
        for doc in list(states):
            states[doc].error = scrub(f"{todo[doc].url}: not finished, the pipeline stopped ({stopped})")
            finish(doc)
    # documents the stream never finished (without a stop: only if rows were lost): failed, redone next run
    for doc in [d for d in states if d not in finished]:
        states[doc].error = f"{todo[doc].url}: some pages never came back from the pipeline"
        finish(doc)
    for i, _ in work:
        if i not in finished:  # not a single row came back
            why = f"not finished, the pipeline stopped ({stopped})" if stopped else "never came back from the pipeline"
            state(i).error = scrub(f"{todo[i].url}: {why}")
            finish(i)
    collect(True, everything=True)


def _writers_of(index: LogIndex, plan: Any) -> LogIndex:
    """The part of the log index one document's export needs: who wrote its planned outputs."""
    return LogIndex(writers={p: index.writers[p] for p in plan.outputs if p in index.writers})


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}"
