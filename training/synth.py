"""Synthetic Korean/English OCR pages with exact word boxes (`varco-train synth`).

Pages are laid out word by word on a pymupdf page (1 point = 1 pixel) and rendered; each word's box comes
from the font's own metrics (advance width, ascender, descender) at the position it was drawn, so boxes
are exact by construction. pymupdf's built-in CJK font ("korea", Droid Sans Fallback) draws Hangul and
Latin without any system font; system TrueType/OpenType fonts are added to the pool when present (those
with Hangul for Korean words). Augmentations (off with ``clean``): small rotations (the word quads rotate
with the page, the axis-aligned boxes are their bounds), Gaussian noise, blur, background tints.

Output folder::

    images/page_00000.png ...   train.jsonl   (OCR conversations, targets in varco_ocr reading order)
    cord/image/*.png  cord/json/*.json         (CORD v2 layout: valid_line[].words[].quad)
    icdar/img_N.png   icdar/gt_img_N.txt       (ICDAR2015 layout: x1,y1,...,x4,y4,transcription)

so ``varco-ocr eval`` can score a model on the same pages (``varco_ocr.eval.datasets.load_cord`` /
``load_icdar2015`` read them). Images are hard-linked into cord/ and icdar/ when the file system allows.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from varco_ocr.document import Word, write_atomic
from training.targets import ocr_record

KINDS = ("receipt", "document", "sign")
LANGUAGES = ("ko", "en")
BUILTIN_CJK = "korea"  # pymupdf's Droid Sans Fallback: Hangul, Latin, digits
BUILTIN_LATIN = ("helv", "tiro", "cour")
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "C:/Windows/Fonts", "~/.fonts")

WORDS = {
    ("ko", "receipt"): "영수증 합계 부가세 현금 카드 결제 주식회사 서울특별시 마포구 감사합니다 전화 아메리카노 카페라떼 김밥 라면 수량 단가 금액 할인 포인트 거스름돈 승인번호".split(),
    ("en", "receipt"): "RECEIPT TOTAL SUBTOTAL CASH CHANGE VAT Coffee Latte Sandwich Qty Price Amount Thank you Invoice Date Time Tel Card Tax Item".split(),
    ("ko", "document"): "계약 기간 보고서 요약 본 문서는 다음과 같이 작성되었습니다 회의 결과 일정 담당자 검토 승인 예산 항목 내용 비고 참고 제출 완료".split(),
    ("en", "document"): "The report summarizes results of the meeting schedule budget review approval contract period section notes page document project team plan".split(),
    ("ko", "sign"): "출구 입구 주차장 금연 화장실 비상구 안내 엘리베이터 계단 정문".split(),
    ("en", "sign"): "EXIT OPEN CLOSED PARKING STOP ENTRANCE WELCOME PUSH PULL INFO".split(),
}


class SynthError(ValueError):
    pass


@dataclass(frozen=True)
class SynthOptions:
    pages: int = 100
    languages: tuple[str, ...] = LANGUAGES
    seed: int = 0
    width: int | None = None  # pixels; None: varied by kind
    height: int | None = None
    max_words: int | None = None
    kinds: tuple[str, ...] = KINDS
    clean: bool = False  # no rotation, noise, blur or tint
    system_fonts: bool = True

    def validate(self) -> "SynthOptions":
        if self.pages < 1:
            raise SynthError("--pages must be at least 1")
        bad = [l for l in self.languages if l not in LANGUAGES]
        if bad or not self.languages:
            raise SynthError(f"--lang must be a comma-separated subset of {', '.join(LANGUAGES)} (got {', '.join(bad) or 'nothing'})")
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise SynthError(f"--kinds must be a comma-separated subset of {', '.join(KINDS)} (got {', '.join(bad) or 'nothing'})")
        for name in ("width", "height"):
            v = getattr(self, name)
            if v is not None and v < 32:
                raise SynthError(f"--{name} must be at least 32 pixels")
        return self


@dataclass(frozen=True)
class FontChoice:
    name: str  # pymupdf font name (built-in) or a registered alias
    fontfile: str | None = None
    hangul: bool = False


@dataclass(frozen=True)
class SynthWord:
    text: str
    quad: tuple[tuple[float, float], ...]  # 4 corners, clockwise from top-left, pixels of the final image

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        xs = [p[0] for p in self.quad]
        ys = [p[1] for p in self.quad]
        return (math.floor(min(xs)), math.floor(min(ys)), math.ceil(max(xs)), math.ceil(max(ys)))


@dataclass
class SynthPage:
    name: str
    image: object  # PIL.Image
    words: list[SynthWord] = field(default_factory=list)
    kind: str = "document"


def find_system_fonts(dirs=FONT_DIRS, limit: int = 40) -> list[FontChoice]:
    """TrueType/OpenType fonts on this machine, flagged by Hangul coverage."""
    import pymupdf

    found = []
    for d in dirs:
        root = Path(os.path.expanduser(d))
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() not in (".ttf", ".otf") or len(found) >= limit:
                continue
            try:
                font = pymupdf.Font(fontfile=str(path))
            except Exception:  # unreadable or unsupported font files are simply not used
                continue
            if not font.has_glyph(ord("A")):
                continue
            found.append(FontChoice(f"F{len(found)}", str(path), hangul=bool(font.has_glyph(ord("가")))))
    return found


def _font_pool(system_fonts: bool) -> list[FontChoice]:
    pool = [FontChoice(BUILTIN_CJK, None, hangul=True), *(FontChoice(n) for n in BUILTIN_LATIN)]
    if system_fonts:
        pool += find_system_fonts()
    return pool


def _price(rng: random.Random) -> str:
    return f"{rng.randint(1, 99) * 100:,}"


def _page_lines(kind: str, lang_of: callable, rng: random.Random, max_words: int | None) -> list[tuple[list[str], float, str]]:
    """Lines as (words, relative size, alignment) for a page kind."""
    def word(k=kind):
        return rng.choice(WORDS[(lang_of(), k)])

    lines: list[tuple[list[str], float, str]] = []
    if kind == "receipt":
        lines.append(([word(), word()], 1.4, "center"))
        for _ in range(rng.randint(3, 8)):
            lines.append(([word(), str(rng.randint(1, 5)), _price(rng)], 1.0, "justify"))
        lines.append(([rng.choice(["TOTAL", "합계"]), _price(rng)], 1.2, "justify"))
    elif kind == "document":
        lines.append(([word() for _ in range(rng.randint(2, 4))], 1.6, "left"))
        for _ in range(rng.randint(3, 10)):
            lines.append(([word() for _ in range(rng.randint(10, 40))], 1.0, "wrap"))
    else:
        for _ in range(rng.randint(1, 2)):
            lines.append(([word() for _ in range(rng.randint(1, 2))], 1.0, "center"))
    if max_words is not None:
        budget, kept = max_words, []
        for words, size, align in lines:
            if budget <= 0:
                break
            kept.append((words[:budget], size, align))
            budget -= len(words[:budget])
        lines = kept
    return lines


def _default_size(kind: str, rng: random.Random) -> tuple[int, int]:
    if kind == "receipt":
        return rng.randint(300, 420), rng.randint(480, 760)
    if kind == "document":
        return 595, 842  # A4 at 72 dpi
    return rng.randint(360, 640), rng.randint(160, 300)


def render_page(index: int, kind: str, options: SynthOptions, rng: random.Random, fonts: list[FontChoice]) -> SynthPage:
    """Lay out, draw and render one page; return the image and its words with exact quads."""
    import pymupdf
    from PIL import Image

    width, height = _default_size(kind, rng)
    width, height = options.width or width, options.height or height
    languages = list(options.languages)
    lang_of = lambda: rng.choice(languages)  # noqa: E731
    lines = _page_lines(kind, lang_of, rng, options.max_words)

    doc = pymupdf.open()
    page = doc.new_page(width=width, height=height)
    background = (1.0, 1.0, 1.0) if options.clean else tuple(rng.uniform(0.85, 1.0) for _ in range(3))
    if kind == "sign" and not options.clean:
        background = rng.choice([(0.1, 0.45, 0.2), (0.1, 0.2, 0.55), (0.95, 0.95, 0.9), (0.85, 0.1, 0.1)])
    page.draw_rect(page.rect, color=None, fill=background)
    ink = (1.0, 1.0, 1.0) if sum(background) < 1.8 else (0.0, 0.0, 0.0)

    margin = max(4.0, 0.05 * min(width, height))
    # Base font size: the lines must fit the height (each line takes ~1.5 sizes).
    total_rel = sum(size for _, size, _ in lines) or 1.0
    base = min((height - 2 * margin) / (1.5 * total_rel * (2.2 if kind == "document" else 1.0)), 0.12 * width if kind != "sign" else 0.25 * width)
    if kind == "document":
        base = min(base, width / rng.uniform(35, 50))  # body text, ~10-16 pt on an A4 page
    elif kind == "receipt":
        base = min(base, width / rng.uniform(14, 22))
    base = max(6.0, base * (1.0 if options.clean else rng.uniform(0.75, 1.0)))
    # Drawing and measuring go through the same Font object (a TextWriter): `insert_text(fontname="korea")`
    # would pick MuPDF's own CJK font, whose full-width digits do not match Font("korea")'s advances.
    writer = pymupdf.TextWriter(page.rect)
    loaded: dict[str, object] = {}
    words_out: list[SynthWord] = []
    y = margin
    for texts, rel, align in lines:
        size = base * rel
        needs_hangul = any(any("\uac00" <= ch <= "\ud7a3" for ch in t) for t in texts)
        candidates = [f for f in fonts if f.hangul or not needs_hangul]
        font_choice = rng.choice(candidates)
        if font_choice.name not in loaded:
            loaded[font_choice.name] = pymupdf.Font(fontfile=font_choice.fontfile) if font_choice.fontfile else pymupdf.Font(font_choice.name)
        font = loaded[font_choice.name]
        avail = width - 2 * margin
        unit = [font.text_length(t, 1.0) for t in texts]
        unit_space = font.text_length(" ", 1.0) or 0.3
        # Shrink the size until the line (a wrapped line: its widest word) fits the width.
        need_per_size = max(unit) if align == "wrap" else sum(unit) + unit_space * (len(unit) - 1)
        if need_per_size * size > avail:
            size = max(4.0, 0.98 * avail / need_per_size)
        ascent, descent = font.ascender * size, font.descender * size  # descender is negative
        space = unit_space * size
        widths = [u * size for u in unit]
        # Break into rows that fit the width ("wrap" lines flow; the others are cut to what fits).
        rows: list[list[int]] = [[]]
        used = 0.0
        for i, w in enumerate(widths):
            need = w if not rows[-1] else used + space + w
            if rows[-1] and need > width - 2 * margin:
                if align != "wrap":
                    break
                rows.append([])
                need = w
            if w > width - 2 * margin:
                break
            rows[-1].append(i)
            used = need
        for row in rows:
            if not row or y + (ascent - descent) > height - margin:
                continue
            baseline = y + ascent
            row_width = sum(widths[i] for i in row) + space * (len(row) - 1)
            if align == "center":
                x = (width - row_width) / 2
                gaps = [space] * len(row)
            elif align == "justify" and len(row) > 1:
                x = margin
                gap = (width - 2 * margin - sum(widths[i] for i in row)) / (len(row) - 1)
                gaps = [gap] * len(row)
            else:
                x = margin
                gaps = [space] * len(row)
            for k, i in enumerate(row):
                _, end = writer.append((x, baseline), texts[i], font=font, fontsize=size)
                x0, x1 = x, end.x
                y0, y1 = baseline - ascent, baseline - descent
                words_out.append(SynthWord(texts[i], ((x0, y0), (x1, y0), (x1, y1), (x0, y1))))
                x = x1 + gaps[k]
            y += (ascent - descent) * (1.25 if options.clean else rng.uniform(1.15, 1.6))
    writer.write_text(page, color=ink)
    pix = page.get_pixmap(alpha=False)
    image = Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
    doc.close()
    fill = tuple(int(round(c * 255)) for c in background)
    if not options.clean:
        image, words_out = _augment(image, words_out, kind, rng, fill)
    return SynthPage(f"page_{index:05d}", image, words_out, kind)


def rotate_point(x: float, y: float, angle_deg: float, old_size: tuple[int, int], new_size: tuple[int, int]) -> tuple[float, float]:
    """Where PIL's ``rotate(angle, expand=True)`` (counter-clockwise, about the centre) moves (x, y)."""
    a = math.radians(angle_deg)
    cx, cy = old_size[0] / 2, old_size[1] / 2
    dx, dy = x - cx, y - cy
    return (math.cos(a) * dx + math.sin(a) * dy + new_size[0] / 2, -math.sin(a) * dx + math.cos(a) * dy + new_size[1] / 2)


def _augment(image, words: list[SynthWord], kind: str, rng: random.Random, fill):
    import numpy as np
    from PIL import Image, ImageFilter

    limit = 8.0 if kind == "sign" else 3.0
    angle = rng.uniform(-limit, limit) if rng.random() < 0.6 else 0.0
    if angle:
        old = image.size
        image = image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=fill)
        words = [SynthWord(w.text, tuple(rotate_point(x, y, angle, old, image.size) for x, y in w.quad)) for w in words]
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    sigma = rng.uniform(0, 10)
    if sigma > 1:
        arr = np.asarray(image, dtype=np.float32)
        arr = arr + np.random.default_rng(rng.randint(0, 2**31)).normal(0, sigma, arr.shape)
        image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return image, words


# --- writers -------------------------------------------------------------------------------------


def cord_annotation(page: SynthPage) -> dict:
    """CORD v2's ground truth: one valid_line per text line (words sharing a row), quads per word."""
    from varco_ocr.layout import group_lines

    by_box = {}
    for w in page.words:
        by_box.setdefault((w.text, w.bbox), []).append(w)
    lines = group_lines([Word(w.text, w.bbox) for w in page.words])
    valid_line = []
    for li, line in enumerate(lines):
        entries = []
        for word in line.words:
            sw = by_box[(word.text, word.bbox)].pop(0)
            quad = {f"{axis}{k + 1}": round(float(pt[0 if axis == "x" else 1]), 1) for k, pt in enumerate(sw.quad) for axis in ("x", "y")}
            entries.append({"quad": quad, "is_key": 0, "row_id": li, "text": sw.text})
        valid_line.append({"words": entries, "category": f"synth.{page.kind}", "group_id": li})
    return {"valid_line": valid_line, "meta": {"version": "synth", "split": "synth", "image_id": page.name, "image_size": {"width": page.image.size[0], "height": page.image.size[1]}}}


def icdar_ground_truth(page: SynthPage) -> str:
    rows = []
    for w in page.words:
        coords = ",".join(str(int(round(v))) for pt in w.quad for v in pt)
        rows.append(f"{coords},{w.text}")
    return "\n".join(rows) + "\n"


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


@dataclass(frozen=True)
class SynthSummary:
    pages: int
    words: int


def generate(out_dir: str | Path, options: SynthOptions) -> SynthSummary:
    options.validate()
    out = Path(out_dir)
    rng = random.Random(options.seed)
    fonts = _font_pool(options.system_fonts)
    records = []
    n_words = 0
    for i in range(options.pages):
        kind = options.kinds[i % len(options.kinds)]
        page = render_page(i, kind, options, rng, fonts)
        if not page.words:
            raise SynthError(f"page {i} ({kind}, {page.image.size[0]}x{page.image.size[1]}) has room for no word: make it larger")
        image_path = out / "images" / f"{page.name}.png"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = image_path.with_name(f".{image_path.name}.tmp")
        page.image.save(tmp, format="PNG")
        os.replace(tmp, image_path)
        _link_or_copy(image_path, out / "cord" / "image" / f"{page.name}.png")
        write_atomic(out / "cord" / "json" / f"{page.name}.json", json.dumps(cord_annotation(page), ensure_ascii=False, indent=1))
        _link_or_copy(image_path, out / "icdar" / f"img_{i + 1}.png")
        write_atomic(out / "icdar" / f"gt_img_{i + 1}.txt", icdar_ground_truth(page))
        width, height = page.image.size
        words = [Word(w.text, w.bbox) for w in page.words]
        records.append(json.dumps(ocr_record(f"images/{page.name}.png", words, width, height, sample_id=page.name), ensure_ascii=False))
        n_words += len(words)
    write_atomic(out / "train.jsonl", "\n".join(records) + "\n")
    return SynthSummary(options.pages, n_words)
