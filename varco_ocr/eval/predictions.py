"""Predictions to score, from any engine: the project's document JSON, or RRC submission files.

Readers
- document JSON (``varco_ocr.document.Document``): one ``.json`` file, a folder of them, or a
  ``.jsonl`` file with one document per line. A document is matched to a sample by the stem of its
  ``source`` (``.../img_12.jpg`` -> ``img_12``); its first page's words (pixel LTRB boxes of the
  original image) are the regions and the page's reading-order text is the text.
- RRC submissions: a folder or a zip of ``res_<key>.txt``, one region per line in the data set's
  official form (``RRC_BOX_FORMAT``): ``x1,y1,x2,y2,x3,y3,x4,y4[,transcription]`` (ICDAR2015; CORD and
  FUNSD, which have no official submission format, take the cleval package's default, quads) or
  ``xmin,ymin,xmax,ymax[,transcription]`` (ICDAR2013), integer coordinates. Zips are untrusted input:
  streamed and bounded (see the limits below).

Writers produce the same two forms (``--save-predictions``) and the RRC ground-truth form used to
feed the official scripts when checking agreement.
"""

from __future__ import annotations

import codecs
import io
import json
import lzma
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Mapping, Sequence

from varco_ocr.document import Document, Page, write_atomic
from varco_ocr.eval.datasets import _QUOTED, decode_text_file, unquote_transcription
from varco_ocr.eval.regions import EvalDataError, TextRegion, printable, reading_order_text


@dataclass(frozen=True)
class Prediction:
    regions: tuple[TextRegion, ...]
    text: str  # reading-order text of the page


# The RRC line form of each data set's submissions (see parse_rrc_line).
RRC_BOX_FORMAT = {"icdar2015": "quad", "icdar2013": "ltrb", "cord": "quad", "funsd": "quad"}

_RES_NAME = re.compile(r"res_(.+)\.txt", re.DOTALL)


# --- document JSON ---------------------------------------------------------------------------------


def prediction_from_page(page: Page) -> Prediction:
    regions = tuple(TextRegion.from_ltrb(*w.bbox, text=w.text) for w in page.words)
    return Prediction(regions, page.text)


def document_key(doc: Document) -> str:
    return Path(doc.source.replace("\\", "/")).stem


def _documents_from_path(path: Path) -> Iterable[tuple[Document, str]]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".json", ".jsonl"))
        if not files:
            raise EvalDataError(path, "no .json or .jsonl prediction files found")
        for f in files:
            yield from _documents_from_path(f)
        return
    text = decode_text_file(path.read_bytes(), path)
    if path.suffix.lower() == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                yield _parse_document(line, path, lineno), f"{path}:{lineno}"
    else:
        yield _parse_document(text, path, None), str(path)


def _parse_document(text: str, path: Path, lineno: int | None) -> Document:
    try:
        doc = Document.loads(text)
    except json.JSONDecodeError as e:
        raise EvalDataError(path, f"invalid JSON: {e.msg}", lineno if lineno is not None else e.lineno) from None
    except (KeyError, TypeError, ValueError, OverflowError) as e:  # OverflowError: int() of 1e400 (inf)
        raise EvalDataError(path, f"not a varco-ocr document: {e}", lineno) from None
    for page in doc.pages[:1]:  # only the first page is scored
        for w in page.words:
            if any(abs(v) > MAX_COORDINATE for v in w.bbox):
                raise EvalDataError(path, f"word {printable(w.text)[:20]!r} has a coordinate out of range "
                                    f"(|value| <= {MAX_COORDINATE:,})", lineno)
    return doc


def read_document_predictions(path: str | Path) -> dict[str, Prediction]:
    path = Path(path)
    out: dict[str, Prediction] = {}
    for doc, where in _documents_from_path(path):
        key = document_key(doc)
        if not doc.pages:
            out[key] = Prediction((), "")
            continue
        if key in out:
            raise EvalDataError(where, f"a second document for image {key!r}")
        out[key] = prediction_from_page(doc.pages[0])
    return out


# --- RRC submission files -------------------------------------------------------------------------
#
# Submission zips come from anywhere (a contestant, a colleague's run), so reading one is bounded:
# members are streamed line by line (never read whole), and a member that no prediction file could be
# is refused with one line before it is decompressed. A real ICDAR2015 res_img_N.txt holds tens of
# lines (< 10 KB); a dense FUNSD form a few hundred (< 30 KB); text files deflate 3-10x.

MAX_MEMBER_BYTES = 4 * 1024 * 1024  # one image's predictions: > 100x the densest real page
MAX_TOTAL_BYTES = 64 * 1024 * 1024  # all members together (500 ICDAR2015 images: ~1 MB)
MAX_LINE_BYTES = 64 * 1024  # one region; a line-level transcription is < 1 KB
# Deflated text shrinks 3-10x; zeros or newlines shrink ~1000x. Checked only for members over
# RATIO_FLOOR_BYTES, since a tiny repetitive file (empty predictions) may compress well and is harmless.
MAX_COMPRESSION_RATIO = 100
RATIO_FLOOR_BYTES = 64 * 1024
# The cleval package indexes regions with int16 arrays and fails past 32,767 per image.
MAX_REGIONS_PER_IMAGE = 32767
# Larger than any image's pixel coordinates, and small enough that every polygon area stays an exact
# integer in float64 (< 2**53); a 400-digit number would otherwise become inf and crash the geometry.
MAX_COORDINATE = 1_000_000
# zipfile builds one ZipInfo (~0.5 KB) per member before anything can be checked: the count is read
# from the end-of-central-directory record first. The largest test set here has 500 images.
MAX_MEMBERS = 20_000
_CHUNK = 64 * 1024
_SUPPORTED_COMPRESSION = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}

# The official RRC rule (rrc_evaluation_funcs ``get_tl_line_values``, which the cleval package copies):
# integer coordinates, then everything after the next comma is the transcription (it may hold commas).
_INT = r"\s*(-?[0-9]+)\s*"
_QUAD_RRC = re.compile(r"^" + ",".join([_INT] * 8) + r"(?:,(.*))?\Z", re.DOTALL)
# ICDAR2013 (Focused Scene Text) boxes: xmin,ymin,xmax,ymax; xmax and ymax have no sign in the rule.
_LTRB_RRC = re.compile(r"^" + _INT + "," + _INT + r",\s*([0-9]+)\s*,\s*([0-9]+)\s*(?:,(.*))?\Z", re.DOTALL)
BOX_FORMATS = ("quad", "ltrb")


_MAX_COORDINATE_CHARS = len(str(MAX_COORDINATE)) + 1  # with a minus sign


def _coordinates(groups: Sequence[str], path: str | Path, lineno: int) -> list[float]:
    # Length first: int() of a 5,000-digit string is refused by Python itself (and slow before that).
    if any(len(g) > _MAX_COORDINATE_CHARS for g in groups):
        values = None
    else:
        values = [int(g) for g in groups]
    if values is None or max(values) > MAX_COORDINATE or min(values) < -MAX_COORDINATE:
        bad = next(g for g in groups if len(g) > _MAX_COORDINATE_CHARS or abs(int(g)) > MAX_COORDINATE)
        raise EvalDataError(path, f"coordinate {bad[:12]}{'...' if len(bad) > 12 else ''} out of range "
                            f"(|value| <= {MAX_COORDINATE:,})", lineno)
    return [float(v) for v in values]


def parse_rrc_line(line: str, box_format: str, path: str | Path = "<res>", lineno: int = 1) -> TextRegion:
    """One line of a submission file (``\\r`` already removed).

    ``quad`` (ICDAR2015, and the cleval package's default box type): ``x1,y1,...,x4,y4[,transcription]``;
    a line whose first 8 comma fields are not all integers is an error, so ``377,117,463,117,465,130,378,Word``
    is refused rather than read as a box from its first numbers. ``ltrb`` (ICDAR2013):
    ``xmin,ymin,xmax,ymax[,transcription]``. A missing transcription (detection-only files) is empty.
    """
    if box_format == "quad":
        m = _QUAD_RRC.match(line)
        if m is None:
            raise EvalDataError(path, "expected x1,y1,x2,y2,x3,y3,x4,y4,transcription with 8 integer coordinates", lineno)
        g = m.groups()
        x1, y1, x2, y2, x3, y3, x4, y4 = _coordinates(g[:8], path, lineno)
        text = unquote_transcription(g[8]) if g[8] is not None else ""
        return TextRegion(((x1, y1), (x2, y2), (x3, y3), (x4, y4)), text)
    if box_format == "ltrb":
        m = _LTRB_RRC.match(line)
        if m is None:
            raise EvalDataError(path, "expected xmin,ymin,xmax,ymax,transcription with 4 integer coordinates", lineno)
        x1, y1, x2, y2 = _coordinates(m.groups()[:4], path, lineno)
        if x2 < x1 or y2 < y1:
            raise EvalDataError(path, "LTRB box with right < left or bottom < top", lineno)
        text = unquote_transcription(m.group(5)) if m.group(5) is not None else ""
        return TextRegion.from_ltrb(x1, y1, x2, y2, text)
    raise ValueError(f"unknown box format {box_format!r} (choose from {', '.join(BOX_FORMATS)})")


def _decoded_lines(raw_lines: Iterable[tuple[int, bytes]], path: str | Path) -> Iterator[tuple[int, str]]:
    for lineno, raw in raw_lines:
        if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8):]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise EvalDataError(path, f"not UTF-8 ({e.reason} at byte {e.start} of the line)", lineno) from None
        # The package splits on "\n" and deletes every "\r"; splitlines() would also split on \x85,
        # \u2028 and others, which may sit inside a transcription.
        yield lineno, line.replace("\r", "")


def parse_rrc_result(content: str, path: str | Path = "<res>", box_format: str = "quad") -> list[TextRegion]:
    """A whole submission file's regions (blank lines skipped); see :func:`parse_rrc_line`."""
    raw = ((n, line.encode("utf-8")) for n, line in enumerate(content.split("\n"), start=1))
    return _parse_lines(_decoded_lines(raw, path), path, box_format)


def _parse_lines(lines: Iterable[tuple[int, str]], path: str | Path, box_format: str) -> list[TextRegion]:
    regions = []
    for lineno, line in lines:
        if not line.strip():
            continue
        if len(regions) == MAX_REGIONS_PER_IMAGE:
            raise EvalDataError(path, f"more than {MAX_REGIONS_PER_IMAGE:,} regions for one image", lineno)
        regions.append(parse_rrc_line(line, box_format, path, lineno))
    return regions


def _stream_lines(stream: BinaryIO, path: str, limit: int) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of a binary stream split on ``\\n``, reading at most ``limit`` bytes and
    holding at most one line (<= MAX_LINE_BYTES) plus one chunk in memory."""
    pending = b""
    lineno = 0
    total = 0
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            raise EvalDataError(path, f"larger than {limit:,} bytes, more than any prediction file holds")
        parts = (pending + chunk).split(b"\n")
        pending = parts.pop()
        for part in parts:
            lineno += 1
            if len(part) > MAX_LINE_BYTES:
                raise EvalDataError(path, f"line longer than {MAX_LINE_BYTES:,} bytes", lineno)
            yield lineno, part
        if len(pending) > MAX_LINE_BYTES:
            raise EvalDataError(path, f"line longer than {MAX_LINE_BYTES:,} bytes", lineno + 1)
    if pending:
        yield lineno + 1, pending


def _regions_from_stream(stream: BinaryIO, where: str, limit: int, box_format: str) -> list[TextRegion]:
    return _parse_lines(_decoded_lines(_stream_lines(stream, where, limit), where), where, box_format)


def _res_key(name: str) -> str | None:
    # fullmatch: "res_img_1.txt\n" is not res_img_1.txt; DOTALL: a newline in a key is kept (escaped when printed)
    m = _RES_NAME.fullmatch(name)
    return m.group(1) if m else None


def _zip_member_count(path: Path) -> int | None:
    # zipfile's own reader of the end record (ZIP64 aware); None when there is no end record.
    with path.open("rb") as f:
        end = zipfile._EndRecData(f)  # noqa: SLF001 - the only way to read the count before ZipFile does
    return None if end is None else int(end[zipfile._ECD_ENTRIES_TOTAL])  # noqa: SLF001


def _read_rrc_zip(path: Path, box_format: str) -> list[tuple[str, str, list[TextRegion]]]:
    count = _zip_member_count(path)
    if count is not None and count > MAX_MEMBERS:
        raise EvalDataError(path, f"{count:,} members, more than a predictions zip holds (limit {MAX_MEMBERS:,})")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise EvalDataError(path, f"not a zip file ({e})") from None
    with zf:
        chosen: list[tuple[str, str, zipfile.ZipInfo]] = []
        first_of: dict[str, str] = {}
        total = 0
        # Every check that needs no decompression comes first, for all members.
        for info in zf.infolist():
            base = info.filename.rstrip("/").rsplit("/", 1)[-1]
            key = _res_key(base)
            if key is None:
                continue
            where = f"{path}!{info.filename}"
            if info.is_dir():
                raise EvalDataError(where, "a folder named like a prediction file")
            if key in first_of:
                raise EvalDataError(where, f"a second prediction file for image {key!r} (first: {printable(first_of[key])})")
            first_of[key] = info.filename
            if info.flag_bits & 0x1:
                raise EvalDataError(where, "encrypted member; predictions must be stored without a password")
            if info.compress_type not in _SUPPORTED_COMPRESSION:
                raise EvalDataError(where, f"unsupported compression method {info.compress_type} "
                                    f"(supported: {', '.join(_SUPPORTED_COMPRESSION.values())})")
            if info.file_size > MAX_MEMBER_BYTES:
                raise EvalDataError(where, f"{info.file_size:,} bytes uncompressed, more than any prediction file "
                                    f"holds (limit {MAX_MEMBER_BYTES:,})")
            if info.file_size > RATIO_FLOOR_BYTES and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
                raise EvalDataError(where, f"compression ratio {info.file_size / max(info.compress_size, 1):,.0f}:1, "
                                    f"which no prediction file has (limit {MAX_COMPRESSION_RATIO}:1)")
            total += info.file_size
            if total > MAX_TOTAL_BYTES:
                raise EvalDataError(path, f"prediction files hold more than {MAX_TOTAL_BYTES:,} bytes uncompressed")
            chosen.append((key, where, info))
        out = []
        for key, where, info in chosen:
            try:
                with zf.open(info) as member:
                    # The declared size bounds what zipfile returns; the limit guards it once more.
                    regions = _regions_from_stream(member, where, MAX_MEMBER_BYTES, box_format)
            except zipfile.BadZipFile as e:  # bad CRC-32, a truncated or overwritten member
                raise EvalDataError(where, f"damaged member ({e})") from None
            except (zlib.error, EOFError, lzma.LZMAError, OSError) as e:
                raise EvalDataError(where, f"damaged member, cannot decompress ({e})") from None
            except (NotImplementedError, RuntimeError) as e:  # what zipfile raises for what it cannot open
                raise EvalDataError(where, f"cannot read member ({e})") from None
            out.append((key, where, regions))
        return out


def _read_rrc_folder(path: Path, box_format: str) -> list[tuple[str, str, list[TextRegion]]]:
    out = []
    first_of: dict[str, Path] = {}
    total = 0
    for f in sorted(path.rglob("res_*.txt")):
        key = _res_key(f.name)
        if key is None:
            continue
        if f.is_dir():
            raise EvalDataError(f, "a folder named like a prediction file")
        if key in first_of:
            raise EvalDataError(f, f"a second prediction file for image {key!r} (first: {printable(str(first_of[key]))})")
        first_of[key] = f
        size = f.stat().st_size
        if size > MAX_MEMBER_BYTES:
            raise EvalDataError(f, f"{size:,} bytes, more than any prediction file holds (limit {MAX_MEMBER_BYTES:,})")
        total += size
        if total > MAX_TOTAL_BYTES:
            raise EvalDataError(path, f"prediction files hold more than {MAX_TOTAL_BYTES:,} bytes")
        with f.open("rb") as stream:
            out.append((key, str(f), _regions_from_stream(stream, str(f), MAX_MEMBER_BYTES, box_format)))
    return out


def read_rrc_predictions(path: str | Path, box_format: str = "quad") -> dict[str, Prediction]:
    """A folder or zip of ``res_<key>.txt`` files, each line in ``box_format`` (see :func:`parse_rrc_line`)."""
    path = Path(path)
    entries = _read_rrc_folder(path, box_format) if path.is_dir() else _read_rrc_zip(path, box_format)
    if not entries:
        raise EvalDataError(path, "no res_<image>.txt files found")
    return {key: Prediction(tuple(regions), reading_order_text(regions)) for key, _, regions in entries}


def read_predictions(path: str | Path, box_format: str = "quad") -> dict[str, Prediction]:
    """Any supported prediction source, told apart by its content. ``box_format`` is the RRC line form
    of the data set (``RRC_BOX_FORMAT``); document JSON carries its own boxes."""
    path = Path(path)
    if not path.exists():
        raise EvalDataError(path, "predictions not found")
    if path.is_file():
        if path.suffix.lower() == ".zip":
            return read_rrc_predictions(path, box_format)
        if path.suffix.lower() in (".json", ".jsonl"):
            return read_document_predictions(path)
        raise EvalDataError(path, "predictions must be a .json/.jsonl document file, a folder, or a .zip of res_*.txt")
    if any(path.rglob("res_*.txt")):
        return read_rrc_predictions(path, box_format)
    return read_document_predictions(path)


# --- writers ----------------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    # RRC files hold integers; the official parser rejects decimals. Truncation matches what the
    # official scripts do with decimals anyway (int()).
    return str(int(v))


def quote_transcription(text: str) -> str:
    """Inverse of the RRC readers' unquoting: a text that itself looks quoted (``"Yes"``) is wrapped in
    quotes with ``\\`` and ``"`` escaped, so every reader gets the original back."""
    if _QUOTED.match(text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def rrc_lines(regions: Sequence[TextRegion], with_text: bool = True, ltrb: bool = False) -> str:
    lines = []
    for r in regions:
        if ltrb:
            coords = [_fmt(v) for v in r.ltrb]
        else:
            if len(r.points) != 4:
                raise ValueError("RRC quads need exactly 4 points")
            coords = [_fmt(v) for v in r.flat_points()]
        text = r.text
        if with_text:
            if r.dont_care:
                text = "###"
            lines.append(",".join(coords + [quote_transcription(text)]))
        else:
            lines.append(",".join(coords))
    return "\n".join(lines) + ("\n" if lines else "")


def rrc_zip_bytes(per_image: Mapping[str, Sequence[TextRegion]], prefix: str, with_text: bool = True, ltrb: bool = False) -> bytes:
    """A zip of ``<prefix><key>.txt`` files (``res_`` for submissions, ``gt_`` for ground truth)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, regions in per_image.items():
            zf.writestr(f"{prefix}{key}.txt", rrc_lines(regions, with_text, ltrb))
    return buf.getvalue()


def write_rrc_zip(path: str | Path, per_image: Mapping[str, Sequence[TextRegion]], prefix: str = "res_", with_text: bool = True, ltrb: bool = False) -> None:
    write_atomic(path, rrc_zip_bytes(per_image, prefix, with_text, ltrb))


def write_rrc_folder(folder: str | Path, per_image: Mapping[str, Sequence[TextRegion]], prefix: str = "res_") -> None:
    for key, regions in per_image.items():
        write_atomic(Path(folder) / f"{prefix}{key}.txt", rrc_lines(regions))


def write_documents_jsonl(path: str | Path, documents: Iterable[Document]) -> None:
    write_atomic(path, "".join(d.dumps(indent=None) + "\n" for d in documents))
