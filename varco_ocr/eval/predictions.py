"""Predictions to score, from any engine: the project's document JSON, or RRC submission files.

Readers
- document JSON (``varco_ocr.document.Document``): one ``.json`` file, a folder of them, or a
  ``.jsonl`` file with one document per line. A document is matched to a sample by the stem of its
  ``source`` (``.../img_12.jpg`` -> ``img_12``); its first page's words (pixel LTRB boxes of the
  original image) are the regions and the page's reading-order text is the text.
- RRC submissions: a folder or a zip of ``res_<key>.txt``, one region per line, either
  ``x1,y1,x2,y2,x3,y3,x4,y4[,transcription]`` or ``xmin,ymin,xmax,ymax[,transcription]``.

Writers produce the same two forms (``--save-predictions``) and the RRC ground-truth form used to
feed the official scripts when checking agreement.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from varco_ocr.document import Document, Page, write_atomic
from varco_ocr.eval.datasets import _QUOTED, decode_text_file, unquote_transcription
from varco_ocr.eval.regions import EvalDataError, TextRegion, reading_order_text


@dataclass(frozen=True)
class Prediction:
    regions: tuple[TextRegion, ...]
    text: str  # reading-order text of the page


_RES_NAME = re.compile(r"^res_(.+)\.txt$")
_NUM = re.compile(r"^\s*-?\d+(?:\.\d+)?\s*$")


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
        return Document.loads(text)
    except json.JSONDecodeError as e:
        raise EvalDataError(path, f"invalid JSON: {e.msg}", lineno if lineno is not None else e.lineno) from None
    except (KeyError, TypeError, ValueError) as e:
        raise EvalDataError(path, f"not a varco-ocr document: {e}", lineno) from None


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


def parse_rrc_result(content: str, path: str | Path = "<res>") -> list[TextRegion]:
    """One region per line: 8 coordinates (quad) or 4 (LTRB), then an optional transcription.

    A line with at least 8 leading numbers is a quad; otherwise the first 4 are LTRB. (The official
    scripts take the choice as a parameter; here it is decided per line so any engine's files read.)
    """
    regions = []
    for lineno, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(",")
        n_numbers = 0
        while n_numbers < len(fields) and n_numbers < 8 and _NUM.match(fields[n_numbers]):
            n_numbers += 1
        try:
            if n_numbers >= 8:
                c = [float(v) for v in fields[:8]]
                text = unquote_transcription(",".join(fields[8:])) if len(fields) > 8 else ""
                regions.append(TextRegion(tuple((c[i], c[i + 1]) for i in range(0, 8, 2)), text))
            elif n_numbers >= 4:
                x1, y1, x2, y2 = (float(v) for v in fields[:4])
                if x2 < x1 or y2 < y1:
                    raise EvalDataError(path, "LTRB box with right < left or bottom < top", lineno)
                text = unquote_transcription(",".join(fields[4:])) if len(fields) > 4 else ""
                regions.append(TextRegion.from_ltrb(x1, y1, x2, y2, text))
            else:
                raise EvalDataError(path, "expected x1,y1,...,x4,y4[,text] or xmin,ymin,xmax,ymax[,text]", lineno)
        except ValueError as e:
            if isinstance(e, EvalDataError):
                raise
            raise EvalDataError(path, f"bad number ({e})", lineno) from None
    return regions


def read_rrc_predictions(path: str | Path) -> dict[str, Prediction]:
    path = Path(path)
    entries: list[tuple[str, str, bytes]] = []  # (key, where, raw)
    if path.is_dir():
        for f in sorted(path.rglob("res_*.txt")):
            m = _RES_NAME.match(f.name)
            if m:
                entries.append((m.group(1), str(f), f.read_bytes()))
    else:
        try:
            with zipfile.ZipFile(path) as zf:
                for name in zf.namelist():
                    m = _RES_NAME.match(Path(name).name)
                    if m:
                        entries.append((m.group(1), f"{path}!{name}", zf.read(name)))
        except zipfile.BadZipFile:
            raise EvalDataError(path, "not a zip file") from None
    if not entries:
        raise EvalDataError(path, "no res_<image>.txt files found")
    out = {}
    for key, where, raw in entries:
        regions = parse_rrc_result(decode_text_file(raw, where), where)
        out[key] = Prediction(tuple(regions), reading_order_text(regions))
    return out


def read_predictions(path: str | Path) -> dict[str, Prediction]:
    """Any supported prediction source, told apart by its content."""
    path = Path(path)
    if not path.exists():
        raise EvalDataError(path, "predictions not found")
    if path.is_file():
        if path.suffix.lower() == ".zip":
            return read_rrc_predictions(path)
        if path.suffix.lower() in (".json", ".jsonl"):
            return read_document_predictions(path)
        raise EvalDataError(path, "predictions must be a .json/.jsonl document file, a folder, or a .zip of res_*.txt")
    if any(path.rglob("res_*.txt")):
        return read_rrc_predictions(path)
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
