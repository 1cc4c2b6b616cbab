"""Inputs and outputs through fsspec, for the Ray pipeline: local paths and object-store URLs
(``s3://``, ``gs://``, ``az://``, ...) alike. Only the edges touch storage; everything between works
on local files (pymupdf and Pillow read a local copy of a remote source, the exporters write into a
local staging folder that is then uploaded).

- Listing (``list_sources``): local paths go through ``inputs.collect_inputs`` (the same rules as the
  local runner); URLs (a folder/prefix, a glob, or one object) are listed with the same supported
  suffixes, hidden-name and ``--glob`` rules. A source's identity for resume is its URL (the resolved
  path for a local file) plus its size and version (mtime_ns locally; the store's ETag, else its
  modification time).
- Reading (``local_copy``): a local file is read in place; an object is copied to a local temporary
  file (same suffix), removed when done.
- Writing (``Destination``): a local folder gets temp file + ``os.replace`` (``document.write_atomic``,
  what the exporters already do). An object store gets each file as one whole object at its final key
  (``put_file`` / ``pipe_file``): on S3, GCS and Azure Blob a PUT, and a multipart upload too, becomes
  visible only when complete, so a reader sees the old object or the new one, never part of one. A
  temp key + ``mv`` would be a copy + delete there (no rename exists), twice the traffic and no more
  atomic. Nothing is ever written over an input (URLs compared, as ``batch._InputGuard`` compares
  resolved paths locally).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Collection, Iterator, Sequence
from urllib.parse import urlsplit
from urllib.request import url2pathname

from varco_ocr.document import write_atomic
from varco_ocr.errors import VarcoOCRError
from varco_ocr.inputs import InputFile, _disambiguate, collect_inputs, is_supported

GLOB_CHARS = frozenset("*?[")
MANIFEST_DIR = ".varco-ocr/manifest"
# Where secrets live besides URLs: storage-option names (s3fs, gcsfs, adlfs) and the stores' own
# environment variables. Their values are removed from every message, record and output.
_SECRET_OPTION = re.compile(r"secret|token|password|passwd|credential|sas|account_key|connection_string|^key$", re.I)
SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY", "AZURE_STORAGE_ACCOUNT_KEY",
              "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING", "AZURE_CLIENT_SECRET")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/@]*)@")
# Azure's URLs name ``container@account`` where others put credentials: not a secret there
# (unless it holds a ``:``, as ``user:password`` does).
_AZURE = ("abfs", "abfss", "az", "adl", "wasb", "wasbs")


def _credentials(url: str) -> "re.Match[str] | None":
    m = _USERINFO.match(url)
    if m is None or (m.group(1)[:-3].lower() in _AZURE and ":" not in m.group(2)):
        return None
    return m
REDACTED = "***"
# The longest the driver waits for a store to answer one step before any work (the write probe,
# listing one input): a store that accepts connections and never answers would otherwise hold the
# run for many minutes (s3fs retries 5 times, botocore 5 times, 15 s read timeout each: measured
# over 9 minutes for one probe). Generous for a store that answers, even over a slow link.
STORE_TIMEOUT = 120.0


def within(seconds: float, fn: Any, what: str) -> Any:
    """``fn()``, or TimeoutError when it has not returned after ``seconds``. It runs in a daemon
    thread, left behind on a timeout (fsspec's calls cannot be cancelled from outside; the run is
    then stopping anyway)."""
    import threading

    result: list[Any] = []
    error: list[BaseException] = []

    def call() -> None:
        try:
            result.append(fn())
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            error.append(e)

    thread = threading.Thread(target=call, name=f"varco-ocr-{what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"{what}: no answer within {seconds:g} s")
    if error:
        raise error[0]
    return result[0]


class StorageError(VarcoOCRError):
    """A store refused or could not be reached while listing the inputs (one line, secrets removed)."""


def one_line(text: str) -> str:
    """A store's message on one line (botocore's validation errors span several)."""
    return " ".join(text.split())


def public_url(url: str) -> str:
    """``url`` as it may be shown and recorded (Document.source, the manifest, messages): the user
    and password of ``scheme://user:pass@host/...`` replaced by ``***``, and for http(s) the query
    string's values too (a presigned URL's signature is a credential). The URL itself, with them,
    is only used to open the source."""
    text = str(url)
    m = _credentials(text)
    if m is not None:
        text = m.group(1) + REDACTED + "@" + text[m.end():]
    if text.split("://", 1)[0].lower() in ("http", "https") and "?" in text:
        base, query = text.split("?", 1)
        text = base + "?" + "&".join(part.split("=", 1)[0] + ("=" + REDACTED if "=" in part else "") for part in query.split("&"))
    return text


def object_name(location: str) -> PurePosixPath:
    """The path part of a local path or URL, for its name and suffix: an http(s) URL without its
    query and fragment (``scan.png?X-Amz-Signature=...`` is a PNG called ``scan.png``); in a
    store, ``?`` and ``#`` are ordinary characters of a key."""
    text = str(location)
    if text.split("://", 1)[0].lower() in ("http", "https"):
        return PurePosixPath(urlsplit(text).path)
    return PurePosixPath(text.split("://", 1)[-1])


def url_secrets(url: str) -> list[str]:
    """The credentials written into ``url`` (see public_url), for ``Scrubber``."""
    found: list[str] = []
    m = _credentials(str(url))
    if m:
        found.append(m.group(2))
        found.extend(part for part in m.group(2).split(":", 1)[1:])
    if str(url).split("://", 1)[0].lower() in ("http", "https") and "?" in str(url):
        found.extend(part.split("=", 1)[1] for part in str(url).split("?", 1)[1].split("&") if "=" in part)
    return found


def option_secrets(options: Any, name: str = "") -> list[str]:
    """The values of secret-named storage options (nested dicts included, e.g. client_kwargs)."""
    if isinstance(options, dict):
        return [s for k, v in options.items() for s in option_secrets(v, str(k))]
    if isinstance(options, (list, tuple)):
        return [s for v in options for s in option_secrets(v, name)]
    return [str(options)] if name and _SECRET_OPTION.search(name) and isinstance(options, (str, bytes)) and options else []


@dataclass(frozen=True)
class Scrubber:
    """Removes known secrets (exact values of 4 characters or more: shorter ones would blank out
    ordinary text) from a message, then any ``user:pass@`` left in a URL. Picklable: Ray's tasks get one."""

    secrets: tuple[str, ...] = ()

    @classmethod
    def for_run(cls, inputs: Sequence[str | os.PathLike], storage_options: dict[str, Any] | None) -> "Scrubber":
        found = [s for url in inputs for s in url_secrets(str(url))] + option_secrets(storage_options or {})
        found += [os.environ[name] for name in SECRET_ENV if os.environ.get(name)]
        unique = {s.decode() if isinstance(s, bytes) else s for s in found}
        return cls(tuple(sorted((s for s in unique if len(s) >= 4), key=len, reverse=True)))  # longest first

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return re.sub(r"[A-Za-z][A-Za-z0-9+.-]*://[^/@\s'\"]*@", lambda m: public_url(m.group(0) + "x")[:-1], text)


def is_url(location: str | os.PathLike) -> bool:
    """Whether ``location`` names something through a protocol other than the local file system."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def local_path_of(location: str | os.PathLike) -> str:
    """A ``file://`` URL as the local path it names (percent-escapes decoded); anything else as given.
    File managers and browsers copy local files as such URLs; taken as a path, ``file:///a/b.png`` would
    become the relative ``file:/a/b.png`` and be reported missing. A URL naming another host is refused
    (ValueError): this program does not reach other machines' files."""
    text = str(location)
    if not text.startswith("file://"):
        return text
    parts = urlsplit(text)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"{text}: a file:// URL on another host ({parts.netloc}); give a local path or mount it")
    if parts.query or parts.fragment:  # '?' and '#' in a local file's name are escaped in its URL
        raise ValueError(f"{text}: a file:// URL with a query or fragment names no file (write '?' as %3F, '#' as %23)")
    return url2pathname(parts.path)


def url_to_fs(location: str, storage_options: dict[str, Any] | None = None):
    """(filesystem, path inside it) for a local path or a URL; fsspec caches the filesystem objects."""
    import fsspec.core

    return fsspec.core.url_to_fs(str(location), **(storage_options or {}))


def object_version(info: dict[str, Any]) -> str | None:
    """An object's version as the store reports it: its ETag (S3, GCS, Azure), else its modification time."""
    for key in ("ETag", "etag", "md5Hash", "generation", "LastModified", "last_modified", "updated", "mtime", "created"):
        value = info.get(key)
        if value:
            return str(value)
    return None


@dataclass(frozen=True)
class Source:
    """One document to read."""

    url: str  # a local path as given (relative or not) or a full URL, without credentials (public_url)
    key: str  # identity in the manifest: the resolved local path, or the URL (public_url)
    identity: dict[str, Any]  # what changes when the content does (see batch.source_fingerprint)
    output_stem: Path  # as for InputFile
    location: str = ""  # the URL to open when it differs from ``url`` (it carries credentials)

    @property
    def open_url(self) -> str:
        return self.location or self.url

    @property
    def local(self) -> bool:
        return not is_url(self.url)

    @property
    def suffix(self) -> str:
        return object_name(self.url).suffix

    @property
    def path(self) -> Path:
        """The local file (for a URL: a placeholder path with the object's name, never opened)."""
        if self.local:
            return Path(self.url)
        host = urlsplit(self.url).netloc.rsplit("@", 1)[-1] if self.url.split("://", 1)[0].lower() in ("http", "https") else ""
        return Path(host + object_name(self.url).as_posix()) if host else Path(object_name(self.url).as_posix())


@dataclass
class SourceListing:
    """As inputs.InputListing, with sources named by path or URL (strings: a Path would fold ``s3://``)."""

    files: list[Source] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason): unsupported, a note
    missing: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (name, reason): outputs named as inputs


def list_sources(inputs: Sequence[str | os.PathLike], glob: str | None = None, out: "Destination | None" = None,
                 exclude: Collection[str] = (), storage_options: dict[str, Any] | None = None) -> SourceListing:
    """The documents ``inputs`` name, in a stable order: see the module doc. ``exclude``: keys of
    files this tool wrote (they are never read back as inputs); the output folder inside an input
    folder is pruned, as by ``collect_inputs``."""
    listing = SourceListing()
    local = [Path(p) for p in inputs if not is_url(p)]
    found: list[tuple[InputFile, Source]] = []
    if local:
        local_out = out.local_dir if out is not None and out.local else None
        got = collect_inputs(local, glob, exclude_dir=local_out, exclude_files={Path(k) for k in exclude if not is_url(k)})
        for f in got.files:
            st = f.path.stat()
            found.append((f, Source(str(f.path), str(f.path.resolve()), {"size": st.st_size, "mtime_ns": st.st_mtime_ns}, f.output_stem)))
        listing.skipped.extend((str(f.path), f.reason) for f in got.skipped)
        listing.missing.extend(str(p) for p in got.missing)
        listing.refused.extend((str(f.path), f.reason) for f in got.refused)
    excluded = set(exclude)
    for url in (str(p) for p in inputs if is_url(p)):
        try:
            fs, path = url_to_fs(url, storage_options)
            entries = within(STORE_TIMEOUT, lambda: _list_url(fs, path), "listing")
        except FileNotFoundError:
            listing.missing.append(public_url(url))
            continue
        except ImportError:  # the store's fsspec back end is not installed: the caller names the extra
            raise
        except Exception as e:  # noqa: BLE001 - each store raises its own kinds (403, no endpoint, bad URL)
            scrub = Scrubber.for_run(inputs, storage_options)
            raise StorageError(one_line(scrub(f"{public_url(url)}: cannot be listed ({type(e).__name__}: {e})"))) from None
        out_prefix = out.root.rstrip("/") + "/" if out is not None and not out.local and out.protocol == _protocol(url) else None
        if isinstance(entries, dict) and "name" in entries:  # one object, named exactly
            info = entries
            full = fs.unstrip_protocol(info["name"])
            # as locally: refused when varco-ocr wrote it or it lies below the output prefix; an
            # object directly in it (``s3://b/scans/x.png -o s3://b/scans``) is read
            below = out_prefix is not None and info["name"].startswith(out_prefix) and "/" in info["name"][len(out_prefix):]
            if full in excluded or below:
                listing.refused.append((public_url(full), "it is an output varco-ocr wrote; outputs are never inputs"))
                continue
            name = object_name(full)
            found.append((InputFile(Path(name.as_posix()), Path(name.stem)), _remote(fs, info, Path(name.stem))))
            continue
        base, entries = entries
        if not entries and any(c in path for c in GLOB_CHARS):  # as the shell leaves a pattern matching nothing
            listing.missing.append(public_url(url))
            continue
        prune = out_prefix is not None and out_prefix.rstrip("/") != base and out_prefix.startswith(base + "/")
        for p in sorted(entries, key=lambda p: PurePosixPath(p).relative_to(base).as_posix()):
            if p.endswith("/"):
                continue  # a folder marker (a console's "Create folder"), not a document
            rel = PurePosixPath(p).relative_to(base)
            if ".." in rel.parts:  # a literal key segment: as an output path it would climb out of the output folder
                listing.skipped.append((public_url(fs.unstrip_protocol(p)), "a '..' in its name; name it alone to read it"))
                continue
            if any(part.startswith(".") for part in rel.parts):
                continue  # hidden objects, among them the manifest (.varco-ocr/)
            if (prune and p.startswith(out_prefix or "")) or fs.unstrip_protocol(p) in excluded:
                continue
            if glob and not (rel.match(glob) or PurePosixPath(p).match(glob)):
                continue
            if not is_supported(Path(p)):
                listing.skipped.append((public_url(fs.unstrip_protocol(p)), f"unsupported file type {rel.suffix or '(none)'}"))
                continue
            stem = Path(rel.with_suffix("").as_posix())
            found.append((InputFile(Path(p), stem), _remote(fs, entries[p], stem)))
    # names that collide (a/x.pdf and b/x.pdf given as files) get distinct stems, as locally
    stems = _disambiguate([f for f, _ in found])
    listing.files = [replace(s, output_stem=f.output_stem) for f, (_, s) in zip(stems, found)]
    return listing


def _list_url(fs, path: str) -> dict[str, Any] | tuple[str, dict[str, dict[str, Any]]]:
    """One object's info when ``path`` names one (its name may hold ``*?[``: an object called
    ``scan[1].png`` is that object, not a pattern), else (base, {path: info}) of the files under the
    prefix or matching the pattern. FileNotFoundError when there is neither."""
    globbing = any(c in path for c in GLOB_CHARS)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        if not globbing:
            raise
        info = None
    if info is not None and info.get("type") != "directory":
        return info
    if info is not None:
        return path.rstrip("/"), {p: i for p, i in fs.find(path, detail=True).items() if i.get("type") == "file"}
    base = path[: min(path.index(c) for c in GLOB_CHARS if c in path)].rsplit("/", 1)[0]
    return base, {p: i for p, i in fs.glob(path, detail=True).items() if i.get("type") == "file"}


def _protocol(url: str) -> str:
    return url.split("://", 1)[0] if is_url(url) else "file"


def _remote(fs, info: dict[str, Any], stem: Path) -> Source:
    url = fs.unstrip_protocol(info["name"])
    shown = public_url(url)
    return Source(shown, shown, {"size": info.get("size"), "version": object_version(info)}, stem, url if shown != url else "")


@contextmanager
def local_copy(url: str, storage_options: dict[str, Any] | None = None, name: str = "source") -> Iterator[Path]:
    """A local file holding ``url``'s bytes for the block: the file itself when local, else a
    temporary copy with the same suffix (pymupdf and Pillow need a seekable local file), removed after."""
    if not is_url(url):
        yield Path(url)
        return
    fs, path = url_to_fs(url, storage_options)
    fd, tmp = tempfile.mkstemp(prefix=f"varco-ocr-{name}-", suffix=object_name(url).suffix)
    os.close(fd)
    try:
        fs.get_file(path, tmp)
        yield Path(tmp)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


@dataclass
class Destination:
    """Where outputs go: a local folder or a URL prefix. Output paths are ``Path`` objects under
    ``out_root`` (for a store: the path inside it, e.g. ``bucket/ocr/x.json``), so the batch
    runner's planning works on both. Picklable (the filesystem is rebuilt from the URL and options)."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def local(self) -> bool:
        return not is_url(self.url)

    @property
    def protocol(self) -> str:
        return _protocol(self.url)

    @property
    def fs(self):
        if "_fs" not in self.__dict__:
            self.__dict__["_fs"], self.__dict__["_root"] = url_to_fs(self.url, self.storage_options)
        return self.__dict__["_fs"]

    @property
    def root(self) -> str:
        self.fs  # noqa: B018 - sets _root
        return self.__dict__["_root"].rstrip("/") if not self.local else str(Path(self.url).resolve())

    @property
    def local_dir(self) -> Path:
        return Path(self.url)

    @property
    def out_root(self) -> Path:
        return Path(self.url).resolve() if self.local else Path(self.root)

    def exists(self, path: Path) -> bool:
        if self.local:
            return path.exists() or path.is_symlink()
        return self.fs.exists(str(path))

    def is_file(self, path: Path) -> bool:
        return path.is_file() if self.local else self.fs.isfile(str(path))

    def prepare(self) -> None:
        """Create the folder (local) and prove it writable before any work: batch.check_output_folder;
        for a store, write and remove a probe object (credentials, bucket, permissions)."""
        if self.local:
            from varco_ocr.batch import check_output_folder

            check_output_folder(self.local_dir)
            return
        from varco_ocr.batch import OutputFolderError

        probe = f"{self.root}/.varco-ocr/write-test"

        def write_and_remove() -> None:
            self.fs.pipe_file(probe, b"")
            self.fs.rm_file(probe)

        try:
            within(STORE_TIMEOUT, write_and_remove, "write probe")
        except Exception as e:  # noqa: BLE001 - each store raises its own kinds
            scrub = Scrubber.for_run([self.url], self.storage_options)
            raise OutputFolderError(one_line(scrub(f"output location {public_url(self.url)} is not writable ({type(e).__name__}: {e})"))) from None

    def upload(self, local_file: Path, path: Path) -> None:
        """One output file to its final key in one upload (see the module doc for why that is atomic)."""
        self.fs.put_file(str(local_file), str(path))

    def write_bytes(self, path: Path, data: bytes) -> None:
        if self.local:
            write_atomic(path, data)
        else:
            self.fs.pipe_file(str(path), data)

    def url_of(self, path: Path) -> str:
        return str(path) if self.local else self.fs.unstrip_protocol(str(path))


class Manifest:
    """The Ray run's resume records: one small JSON object per document at
    ``<out>/.varco-ocr/manifest/<sha256 of its key>.json``, replaced whole (atomically, as any output)
    by each new record for that document: a ``writing`` record naming its outputs before they are
    written, then its outcome (``done``/``failed``/``partial``, error, fingerprint, outputs). A shared
    destination may offer no atomic append, and one object per document lets many export tasks write
    at once without a lock. The records have the run log's fields, so ``batch.LogIndex`` reads them."""

    def __init__(self, dest: Destination) -> None:
        self.dest = dest

    def path_for(self, key: str) -> Path:
        return self.dest.out_root / MANIFEST_DIR / f"{hashlib.sha256(key.encode('utf-8')).hexdigest()}.json"

    def append(self, record: dict[str, Any]) -> None:
        """Store ``record`` as its document's current record (the name matches batch.RecordSink)."""
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **record}
        self.dest.write_bytes(self.path_for(str(record["source_path"])), json.dumps(record, ensure_ascii=False).encode("utf-8"))

    def records(self) -> list[dict[str, Any]]:
        """Every document's record (unreadable ones are ignored: that document is simply redone)."""
        folder = self.dest.out_root / MANIFEST_DIR
        out: list[dict[str, Any]] = []
        if self.dest.local:
            names = sorted(folder.glob("*.json")) if folder.is_dir() else []
            blobs = {}
            for p in names:
                try:
                    blobs[str(p)] = p.read_bytes()
                except OSError:
                    continue
        else:
            fs = self.dest.fs
            try:
                names = sorted(p for p in fs.find(str(folder)) if p.endswith(".json"))
            except FileNotFoundError:
                names = []
            blobs = fs.cat(names, on_error="omit") if names else {}  # fetched concurrently by async stores
        for name in sorted(blobs):
            try:
                rec = json.loads(blobs[name])
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(rec, dict) and rec.get("source"):
                out.append(rec)
        return out
