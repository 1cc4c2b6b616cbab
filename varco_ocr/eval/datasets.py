"""Ground-truth loaders for the benchmark data sets, each from its native layout.

- ICDAR2015 (Incidental Scene Text, ch. 4): ``gt_img_N.txt`` beside or apart from ``img_N.jpg``;
  lines ``x1,y1,...,x4,y4,transcription`` (the transcription may hold commas; ``###`` = do not care).
- ICDAR2013 (Focused Scene Text, ch. 2): ``gt_img_N.txt`` with ``x1, y1, x2, y2, "text"``.
- CORD v2: ``image/*.png`` + ``json/*.json`` (``valid_line[].words[].quad``), or the Hugging Face
  parquet files (image bytes + ``ground_truth`` JSON string per row) when pyarrow is installed.
- FUNSD: ``images/*.png`` + ``annotations/*.json`` (``form[].words[]`` with LTRB ``box``).

Parsing is pure (text in, regions out); the ``load_*`` functions do the file I/O. A malformed line or
file raises :class:`EvalDataError` naming the path and line: nothing is skipped silently.
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Iterable

from varco_ocr.eval.regions import DONT_CARE_TEXT, EvalDataError, Sample, TextRegion, reading_order_text

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DATASET_NAMES = ("icdar2015", "icdar2013", "cord", "funsd")

_NUMBER = r"\s*(-?\d+(?:\.\d+)?)\s*"
# Eight coordinates then everything after the eighth comma, as the RRC scripts read it.
_QUAD_LINE = re.compile(r"^" + ",".join([_NUMBER] * 8) + r",(.*)$")
# ICDAR2013 separates with ", " (or just spaces in some releases); the text is double-quoted.
_LTRB_LINE = re.compile(r"^" + r"[,\s]".join([_NUMBER] * 4) + r"[,\s](.*)$")
_QUOTED = re.compile(r'^\s*"(.*)"\s*$')


def natural_key(s: str) -> list[Any]:
    """``img_2`` before ``img_10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def decode_text_file(raw: bytes, path: str | Path) -> str:
    # The RRC files are UTF-8, sometimes with a byte-order mark.
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise EvalDataError(path, f"not UTF-8 ({e.reason} at byte {e.start})") from None


def unquote_transcription(text: str) -> str:
    """The RRC rule: a transcription in double quotes is unquoted and ``\\\\`` / ``\\"`` unescaped."""
    m = _QUOTED.match(text)
    if m:
        return m.group(1).replace("\\\\", "\\").replace('\\"', '"')
    return text


def parse_icdar2015_gt(content: str, path: str | Path = "<gt>") -> list[TextRegion]:
    regions = []
    for lineno, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        m = _QUAD_LINE.match(line)
        if not m:
            raise EvalDataError(path, "expected x1,y1,x2,y2,x3,y3,x4,y4,transcription", lineno)
        coords = [float(m.group(i)) for i in range(1, 9)]
        text = unquote_transcription(m.group(9))
        points = tuple((coords[i], coords[i + 1]) for i in range(0, 8, 2))
        regions.append(TextRegion(points, text, text == DONT_CARE_TEXT))
    return regions


def parse_icdar2013_gt(content: str, path: str | Path = "<gt>") -> list[TextRegion]:
    regions = []
    for lineno, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        m = _LTRB_LINE.match(line)
        if not m:
            raise EvalDataError(path, 'expected x1, y1, x2, y2, "transcription"', lineno)
        x1, y1, x2, y2 = (float(m.group(i)) for i in range(1, 5))
        if x2 < x1 or y2 < y1:
            raise EvalDataError(path, f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) has right < left or bottom < top", lineno)
        text = unquote_transcription(m.group(5))
        regions.append(TextRegion.from_ltrb(x1, y1, x2, y2, text, text == DONT_CARE_TEXT))
    return regions


def _index_images(root: Path) -> dict[str, Path]:
    images: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            images.setdefault(p.stem, p)
    return images


def _require_dir(data_dir: Path) -> None:
    if not data_dir.is_dir():
        raise EvalDataError(data_dir, "data folder not found")


def _load_rrc_folder(
    data_dir: Path, parse: Callable[[str, Path], list[TextRegion]], max_images: int | None
) -> list[Sample]:
    _require_dir(data_dir)
    gt_files = sorted(data_dir.rglob("gt_*.txt"), key=lambda p: natural_key(p.name))
    if not gt_files:
        raise EvalDataError(data_dir, "no ground-truth files gt_*.txt found")
    images = _index_images(data_dir)
    samples = []
    for gt_path in gt_files[: max_images if max_images else None]:
        key = gt_path.stem[len("gt_"):]
        regions = parse(decode_text_file(gt_path.read_bytes(), gt_path), gt_path)
        if key not in images:
            raise EvalDataError(gt_path, f"no image named {key}.* under {data_dir}")
        samples.append(Sample(key, images[key], tuple(regions), reading_order_text(regions)))
    return samples


def load_icdar2015(data_dir: str | Path, max_images: int | None = None) -> list[Sample]:
    return _load_rrc_folder(Path(data_dir), parse_icdar2015_gt, max_images)


def load_icdar2013(data_dir: str | Path, max_images: int | None = None) -> list[Sample]:
    return _load_rrc_folder(Path(data_dir), parse_icdar2013_gt, max_images)


# --- CORD v2 -------------------------------------------------------------------------------------


def _items(value: Any, path: str | Path, where: str, default: list[Any] | None = None) -> list[Any]:
    """``value`` when it is a list (``default`` when it is absent), else a one-line data error: a
    hand-edited annotation with an object or a number where a list belongs is named, not a traceback."""
    if value is None and default is not None:
        return default
    if not isinstance(value, list):
        raise EvalDataError(path, f"{where}: expected a list, got {type(value).__name__}")
    return value


def _fields(value: Any, path: str | Path, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EvalDataError(path, f"{where}: expected an object, got {type(value).__name__}")
    return value


def _coordinate(value: Any) -> float:
    """A coordinate as the annotations write it (a number, or a number in a string); NaN and
    infinities are refused: they would pass every comparison of the matching rules silently."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a coordinate")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"coordinate {value!r} is not finite")
    return number


def _pixel_count(value: Any, path: str | Path, where: str) -> int:
    """An image size field: a whole number of pixels (an int, or digits in a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise EvalDataError(path, f"{where}: expected a whole number of pixels, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise EvalDataError(path, f"{where}: expected a whole number of pixels, got {value!r}") from None
    if number < 1:
        raise EvalDataError(path, f"{where}: expected a whole number of pixels, got {value!r}")
    return number


def parse_cord_annotation(annotation: dict[str, Any], path: str | Path = "<cord>") -> tuple[list[TextRegion], str, int | None, int | None]:
    """Words of ``valid_line[]`` with their quads; the text is the lines in annotation order."""
    if not isinstance(annotation, dict) or "valid_line" not in annotation:
        raise EvalDataError(path, "not a CORD annotation (no valid_line)")
    regions: list[TextRegion] = []
    lines: list[str] = []
    for li, line in enumerate(_items(annotation["valid_line"], path, "valid_line")):
        line = _fields(line, path, f"valid_line[{li}]")
        words = []
        for wi, word in enumerate(_items(line.get("words"), path, f"valid_line[{li}].words", default=[])):
            try:
                q = word["quad"]
                points = tuple((_coordinate(q[f"x{k}"]), _coordinate(q[f"y{k}"])) for k in range(1, 5))
                text = str(word["text"])
            except (KeyError, TypeError, ValueError) as e:
                raise EvalDataError(path, f"valid_line[{li}].words[{wi}]: missing or bad {e}") from None
            regions.append(TextRegion(points, text, False))
            words.append(text)
        if words:
            lines.append(" ".join(words))
    meta = _fields(annotation.get("meta") or {}, path, "meta")
    size = _fields(meta.get("image_size") or {}, path, "meta.image_size")
    width = _pixel_count(size["width"], path, "meta.image_size.width") if "width" in size else None
    height = _pixel_count(size["height"], path, "meta.image_size.height") if "height" in size else None
    return regions, "\n".join(lines), width, height


def load_cord(data_dir: str | Path, max_images: int | None = None) -> list[Sample]:
    data_dir = Path(data_dir)
    _require_dir(data_dir)
    parquet_files = sorted(data_dir.rglob("*.parquet"))
    json_files = sorted(data_dir.rglob("*.json"), key=lambda p: natural_key(p.name))
    if not json_files and parquet_files:
        return _load_cord_parquet(parquet_files, max_images)
    if not json_files:
        raise EvalDataError(data_dir, "no CORD annotations (json/*.json or *.parquet) found")
    images = _index_images(data_dir)
    samples = []
    for jp in json_files[: max_images if max_images else None]:
        try:
            annotation = json.loads(decode_text_file(jp.read_bytes(), jp))
        except json.JSONDecodeError as e:
            raise EvalDataError(jp, f"invalid JSON: {e.msg}", e.lineno) from None
        regions, text, w, h = parse_cord_annotation(annotation, jp)
        if jp.stem not in images:
            raise EvalDataError(jp, f"no image named {jp.stem}.* under {data_dir}")
        samples.append(Sample(jp.stem, images[jp.stem], tuple(regions), text, width=w, height=h))
    return samples


def _load_cord_parquet(files: Iterable[Path], max_images: int | None) -> list[Sample]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise EvalDataError(next(iter(files)), "reading CORD parquet files needs pyarrow (pip install pyarrow)") from None
    samples: list[Sample] = []
    for path in files:
        table = pq.read_table(path, columns=["image", "ground_truth"]).to_pylist()
        for row_no, row in enumerate(table):
            where = f"{path} row {row_no}"
            try:
                annotation = json.loads(row["ground_truth"])
            except (TypeError, json.JSONDecodeError) as e:
                raise EvalDataError(where, f"invalid ground_truth JSON: {e}") from None
            regions, text, w, h = parse_cord_annotation(annotation, where)
            image = row.get("image") or {}
            data = image.get("bytes") if isinstance(image, dict) else None
            if not data:
                raise EvalDataError(where, "row has no image bytes")
            key = f"{path.stem}_{row_no:05d}"
            samples.append(Sample(key, None, tuple(regions), text, image_bytes=data, width=w, height=h))
            if max_images and len(samples) >= max_images:
                return samples
    return samples


# --- FUNSD ---------------------------------------------------------------------------------------


def parse_funsd_annotation(annotation: dict[str, Any], path: str | Path = "<funsd>") -> tuple[list[TextRegion], str]:
    """Word boxes of every entity. Words with empty text are dropped, as docTR's FUNSD loader does:
    some are large blank-field boxes that cover real words, and as do-not-care regions they would make
    the RRC rule ignore correct detections of the words inside them."""
    if not isinstance(annotation, dict) or not isinstance(annotation.get("form"), list):
        raise EvalDataError(path, "not a FUNSD annotation (no form list)")
    regions: list[TextRegion] = []
    entity_texts = []
    for ei, entity in enumerate(annotation["form"]):
        entity = _fields(entity, path, f"form[{ei}]")
        words = []
        for wi, word in enumerate(_items(entity.get("words"), path, f"form[{ei}].words", default=[])):
            try:
                box = word["box"]
                if not isinstance(box, list):  # a string of four digits would otherwise read as a box
                    raise TypeError(f"box {box!r} is not a list")
                x1, y1, x2, y2 = (_coordinate(v) for v in box)
                text = str(word["text"]).strip()
            except (KeyError, TypeError, ValueError) as e:
                raise EvalDataError(path, f"form[{ei}].words[{wi}]: missing or bad box/text ({e})") from None
            if text:
                regions.append(TextRegion.from_ltrb(x1, y1, x2, y2, text))
                words.append(text)
        if words:
            entity_texts.append(" ".join(words))
    return regions, "\n".join(entity_texts)


def load_funsd(data_dir: str | Path, max_images: int | None = None) -> list[Sample]:
    data_dir = Path(data_dir)
    _require_dir(data_dir)
    json_files = sorted(data_dir.rglob("*.json"), key=lambda p: natural_key(p.name))
    if not json_files:
        raise EvalDataError(data_dir, "no FUNSD annotations (annotations/*.json) found")
    images = _index_images(data_dir)
    samples = []
    for jp in json_files[: max_images if max_images else None]:
        try:
            annotation = json.loads(decode_text_file(jp.read_bytes(), jp))
        except json.JSONDecodeError as e:
            raise EvalDataError(jp, f"invalid JSON: {e.msg}", e.lineno) from None
        regions, text = parse_funsd_annotation(annotation, jp)
        if jp.stem not in images:
            raise EvalDataError(jp, f"no image named {jp.stem}.* under {data_dir}")
        samples.append(Sample(jp.stem, images[jp.stem], tuple(regions), text))
    return samples


LOADERS: dict[str, Callable[..., list[Sample]]] = {
    "icdar2015": load_icdar2015,
    "icdar2013": load_icdar2013,
    "cord": load_cord,
    "funsd": load_funsd,
}


def load_dataset(name: str, data_dir: str | Path, max_images: int | None = None) -> list[Sample]:
    try:
        loader = LOADERS[name.lower()]
    except KeyError:
        raise EvalDataError(name, f"unknown data set (choose from {', '.join(DATASET_NAMES)})") from None
    return loader(data_dir, max_images)


def open_sample_image(sample: Sample):
    """The sample's image as an RGB PIL image (I/O at the edge, used only when running the model)."""
    from PIL import Image

    src = io.BytesIO(sample.image_bytes) if sample.image_bytes is not None else sample.image_path
    if src is None:
        raise EvalDataError(sample.key, "sample has no image")
    try:
        with Image.open(src) as im:
            # No EXIF rotation: ground-truth coordinates refer to the pixels as stored.
            return im.convert("RGB")
    except OSError as e:
        raise EvalDataError(sample.image_path or sample.key, f"cannot read image: {e}") from None
