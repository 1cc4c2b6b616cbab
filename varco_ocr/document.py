"""The document model: Document > Page > Block > Line > Word.

Every exporter, the eval command and the training data builders read this one model. Boxes are
``(x1, y1, x2, y2)`` in integer pixels of the *original* input page (for a PDF, the rendered page at
``Page.dpi``), never of the upscaled image the model saw.

JSON layout (schema ``varco_ocr/schemas/document.schema.json``): a page stores its words once, in
reading order, and its lines and blocks as index lists into them, so the file has no duplication and
``load(dump(doc)) == doc``. ``text`` fields are derived and written for the reader's convenience only.
"""

from __future__ import annotations

import json
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
import os
import re
import secrets
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

SCHEMA_VERSION = "1.0"

# One JSON value on one line, by json's C encoder (json uses it only without ``indent``, and builds it
# anew for every ``encode`` call: building it once saves a third of the time of a page of words).
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": "))
if c_make_encoder is not None:
    _c_encode = c_make_encoder(None, _ENCODER.default, encode_basestring, None, ": ", ", ", False, False, True)

    def _one_line(value: Any) -> str:
        return "".join(_c_encode(value, 0))
else:  # a Python without the _json accelerator
    _one_line = _ENCODER.encode
# Surrogate code points cannot be encoded as UTF-8; in JSON they are written as \uXXXX escapes.
_SURROGATE = re.compile("[\ud800-\udfff]")
# Page members written one item per line: a page of words stays readable and diffable.
_ONE_ITEM_PER_LINE = frozenset({"words", "lines", "blocks"})

BBox = tuple[int, int, int, int]
BBoxPt = tuple[float, float, float, float]


def union_bbox(boxes: Iterable[Sequence[float]]) -> BBox:
    """Smallest box holding all ``boxes`` (which must not be empty)."""
    boxes = list(boxes)
    if not boxes:
        raise ValueError("union of no boxes")
    return (
        int(min(b[0] for b in boxes)),
        int(min(b[1] for b in boxes)),
        int(max(b[2] for b in boxes)),
        int(max(b[3] for b in boxes)),
    )


@dataclass(frozen=True)
class Word:
    text: str
    bbox: BBox
    confidence: float | None = None
    # For PDF inputs: the same box in PDF user-space points of the unrotated page (origin top-left
    # of the MediaBox as pymupdf reports it), ready for a text layer or for matching PDF text.
    bbox_pt: BBoxPt | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"text": self.text, "bbox": list(self.bbox), "confidence": self.confidence}
        if self.bbox_pt is not None:
            d["bbox_pt"] = list(self.bbox_pt)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Word":
        pt = d.get("bbox_pt")
        return cls(
            text=str(d["text"]),
            bbox=tuple(int(v) for v in d["bbox"]),  # type: ignore[arg-type]
            confidence=None if d.get("confidence") is None else float(d["confidence"]),
            bbox_pt=None if pt is None else tuple(float(v) for v in pt),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class Line:
    words: tuple[Word, ...]

    @property
    def bbox(self) -> BBox:
        return union_bbox(w.bbox for w in self.words)

    @property
    def text(self) -> str:
        return join_words([w.text for w in self.words])


@dataclass(frozen=True)
class Block:
    lines: tuple[Line, ...]

    @property
    def bbox(self) -> BBox:
        return union_bbox(line.bbox for line in self.lines)

    @property
    def words(self) -> list[Word]:
        return [w for line in self.lines for w in line.words]

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


@dataclass(frozen=True)
class Page:
    index: int  # 0-based page number in the source document
    width: int  # pixels of the original (or rendered) page
    height: int
    blocks: tuple[Block, ...] = ()
    truncated: bool = False  # generation hit the token limit or the loop guard cut it
    raw: str | None = None  # the model's raw answer, kept on request (--keep-raw)
    dpi: float | None = None  # render resolution for PDF pages; scan resolution when known
    error: str | None = None  # set when this page could not be read or OCR'd
    dropped_boxes: int = 0  # words whose box lay wholly outside the page, dropped by the parser
    # Where the words came from: None = the model; "pdf-text" = the PDF's own text (--skip-text).
    source: str | None = None

    @property
    def lines(self) -> list[Line]:
        return [line for block in self.blocks for line in block.lines]

    @property
    def words(self) -> list[Word]:
        return [w for block in self.blocks for w in block.words]

    @property
    def text(self) -> str:
        return "\n\n".join(block.text for block in self.blocks)

    def to_dict(self) -> dict[str, Any]:
        words: list[dict[str, Any]] = []
        lines: list[dict[str, Any]] = []
        blocks: list[dict[str, Any]] = []
        for block in self.blocks:
            line_ids = []
            for line in block.lines:
                word_ids = []
                for w in line.words:
                    word_ids.append(len(words))
                    words.append(w.to_dict())
                line_ids.append(len(lines))
                lines.append({"text": line.text, "bbox": list(line.bbox), "word_ids": word_ids})
            blocks.append({"bbox": list(block.bbox), "line_ids": line_ids})
        d: dict[str, Any] = {
            "index": self.index,
            "width": self.width,
            "height": self.height,
            "dpi": self.dpi,
            "truncated": self.truncated,
            "dropped_boxes": self.dropped_boxes,
            "text": self.text,
            "words": words,
            "lines": lines,
            "blocks": blocks,
        }
        if self.raw is not None:
            d["raw"] = self.raw
        if self.error is not None:
            d["error"] = self.error
        if self.source is not None:
            d["source"] = self.source
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Page":
        words = [Word.from_dict(w) for w in d.get("words", [])]
        lines = [Line(tuple(words[i] for i in line["word_ids"])) for line in d.get("lines", [])]
        blocks = tuple(Block(tuple(lines[i] for i in b["line_ids"])) for b in d.get("blocks", []))
        return cls(
            index=int(d["index"]),
            width=int(d["width"]),
            height=int(d["height"]),
            blocks=blocks,
            truncated=bool(d.get("truncated", False)),
            raw=d.get("raw"),
            dpi=None if d.get("dpi") is None else float(d["dpi"]),
            error=d.get("error"),
            dropped_boxes=int(d.get("dropped_boxes", 0)),  # absent in files written before it existed
            source=d.get("source"),
        )


@dataclass(frozen=True)
class Document:
    source: str  # the input file's path as given
    pages: tuple[Page, ...] = ()
    model: str | None = None  # hub id or folder of the model that read it
    metadata: dict[str, Any] = field(default_factory=dict, compare=True, hash=False)

    @property
    def words(self) -> list[Word]:
        return [w for p in self.pages for w in p.words]

    @property
    def text(self) -> str:
        """Reading-order text, pages separated by form feeds."""
        return "\f".join(p.text for p in self.pages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SCHEMA_VERSION,
            "source": self.source,
            "model": self.model,
            "metadata": self.metadata,
            "pages": [p.to_dict() for p in self.pages],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Document":
        version = str(d.get("version", ""))
        if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise ValueError(f"unsupported document schema version {version!r} (expected {SCHEMA_VERSION})")
        return cls(
            source=str(d.get("source", "")),
            pages=tuple(Page.from_dict(p) for p in d.get("pages", [])),
            model=d.get("model"),
            metadata=dict(d.get("metadata") or {}),
        )

    def dumps(self, indent: int | None = 2) -> str:
        """The document as JSON text. With ``indent``, objects are broken over indented lines down to
        each page's members, and every word, line and block is one line (``{"text": ..., "bbox":
        [x1, y1, x2, y2], ...}``); ``indent=None`` gives one line. Every value is encoded by ``json``
        itself (its C encoder), and the layout only joins whole encoded values, so string content is
        written exactly as ``json`` writes it and ``loads(dumps(doc)) == doc``. Surrogate code points
        (a lone ``\\ud800`` from a server's JSON; text never holds them otherwise) cannot be UTF-8,
        so they are written as ``\\uXXXX`` escapes, which ``json`` reads back as the same code point;
        the one exception is a high surrogate followed by a low one, which JSON reads as the pair's
        character."""
        d = self.to_dict()
        if indent is None:
            text = json.dumps(d, ensure_ascii=False)
        else:
            step = " " * indent
            pages = [_json_object(p, step, step * 2, _ONE_ITEM_PER_LINE) for p in d.pop("pages")]
            head = [f"{step}{_one_line(k)}: {_one_line(v)}" for k, v in d.items()]
            head.append(f"{step}\"pages\": " + (f"[\n{step * 2}" + f",\n{step * 2}".join(pages) + f"\n{step}]" if pages else "[]"))
            text = "{\n" + ",\n".join(head) + "\n}"
        if _SURROGATE.search(text):  # rare: only then pay for the substitution
            text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
        return text

    @classmethod
    def loads(cls, s: str) -> "Document":
        return cls.from_dict(json.loads(s))

    def save(self, path: str | os.PathLike) -> None:
        write_atomic(path, self.dumps())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Document":
        return cls.loads(Path(path).read_text(encoding="utf-8"))


def _json_object(d: dict[str, Any], step: str, pad: str, listed: frozenset[str]) -> str:
    """``d`` as an indented JSON object (closing brace at ``pad``); the lists named in ``listed``
    with one item per line, every other value on one line."""
    inner = pad + step
    members = []
    for key, value in d.items():
        if key in listed and value:
            value_text = f"[\n{inner}{step}" + f",\n{inner}{step}".join(map(_one_line, value)) + f"\n{inner}]"
        else:
            value_text = _one_line(value)
        members.append(f"{inner}{_one_line(key)}: {value_text}")
    return "{\n" + ",\n".join(members) + "\n" + pad + "}"


def join_words(texts: Sequence[str]) -> str:
    """Join a line's words with single spaces.

    The model emits one entry per word, so a space between entries is what separates words in
    Korean too (Korean is written with spaces between eojeol); no space is ever added *inside* an
    entry. Entries that are empty are skipped.
    """
    return " ".join(t for t in texts if t)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (same folder, so the rename is atomic), renamed over ``path``
    only when the block finishes: an interrupted write never leaves a partial file under the final
    name, and a failed one leaves no temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp_beside(path)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _create_temp_beside(path: Path) -> str:
    """Create ``.NAME.XXXXXXXX.tmp`` beside ``path`` with the mode a plain ``open()`` gives (0666 minus
    the umask). Not ``mkstemp``: it creates 0600, and the rename would carry that mode to the output."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return str(tmp)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (see ``atomic_path``)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
