"""Regenerate the sample inputs in this folder (all made by this project, no outside material).

    python samples/make_samples.py

Text is drawn with pymupdf's built-in CJK font, so no system font is needed. Each sample also gets a
``*.words.json`` file with the exact word boxes it was drawn with (original-image pixels), which tests
use as ground truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import pymupdf as fitz

HERE = Path(__file__).resolve().parent

RECEIPT = [
    ["카페", "마포점"],
    ["서울특별시", "마포구", "백범로", "35"],
    ["Tel", "02-123-4567"],
    ["아메리카노", "2", "9,000"],
    ["Cafe", "Latte", "1", "5,500"],
    ["치즈케이크", "1", "6,800"],
    ["합계", "TOTAL", "21,300"],
    ["카드", "CARD", "21,300"],
    ["감사합니다", "Thank", "you"],
]

DENSE = [
    "VARCO-VISION-2.0 reads text and says where it is. 이 문서는 한국어와 영어가 섞인 예시입니다.",
    "Each word comes with a box in pixels of the original page, in reading order from top to bottom.",
    "스캔한 계약서, 영수증, 책을 디지털로 옮기는 사람들을 위한 도구입니다. Archivists need hOCR and ALTO.",
    "The quick brown fox jumps over the lazy dog. 다람쥐 헌 쳇바퀴에 타고파. 0123456789",
]


def _draw_lines(page: "fitz.Page", lines: list[list[str]], x0: float, y0: float, size: float, leading: float,
                right_align_last: bool = False, width: float = 0.0) -> list[dict]:
    font = fitz.Font("korea")
    # TextWriter measures with the very font it embeds, so the recorded boxes are where glyphs land.
    writer = fitz.TextWriter(page.rect)
    words = []
    y = y0
    space = font.text_length(" ", fontsize=size) * 1.5
    for line in lines:
        x = x0
        for i, word in enumerate(line):
            w = font.text_length(word, fontsize=size)
            if right_align_last and i == len(line) - 1 and width:
                x = x0 + width - w
            writer.append((x, y), word, font=font, fontsize=size)
            asc, desc = font.ascender * size, font.descender * size
            words.append({"text": word, "rect": [x, y - asc, x + w, y - desc]})
            x += w + space
        y += leading
    writer.write_text(page)
    return words


def _render(doc: "fitz.Document", words: list[dict], name: str, dpi: int) -> None:
    page = doc[0]
    pix = page.get_pixmap(dpi=dpi)
    pix.save(HERE / f"{name}.png")
    scale = dpi / 72
    boxes = [
        {"text": w["text"], "bbox": [round(w["rect"][0] * scale), round(w["rect"][1] * scale),
                                     round(w["rect"][2] * scale), round(w["rect"][3] * scale)]}
        for w in words
    ]
    meta = {"image": f"{name}.png", "width": pix.width, "height": pix.height, "words": boxes}
    (HERE / f"{name}.words.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def make_receipt() -> None:
    doc = fitz.open()
    page = doc.new_page(width=220, height=260)
    words = _draw_lines(page, RECEIPT, 14, 28, 11, 24, right_align_last=True, width=192)
    _render(doc, words, "receipt", dpi=144)


def make_dense_page() -> None:
    doc = fitz.open()
    page = doc.new_page(width=595, height=120)
    lines = []
    font = fitz.Font("korea")
    for sentence in DENSE:  # wrap to the page width
        current: list[str] = []
        for word in sentence.split():
            if font.text_length(" ".join(current + [word]), fontsize=10) > 540 and current:
                lines.append(current)
                current = []
            current.append(word)
        lines.append(current)
    words = _draw_lines(page, lines, 28, 36, 10, 16)
    _render(doc, words, "dense-page", dpi=110)


def make_pdf() -> None:
    """A 3-page PDF with real text (the tests and README use it for PDF inputs and export)."""
    doc = fitz.open()
    for n in range(3):
        page = doc.new_page(width=300, height=200)
        _draw_lines(page, [[f"Page", f"{n + 1}"], ["문서", "인식", "테스트"], ["Total", f"{(n + 1) * 1000:,}"]], 20, 40, 14, 30)
    doc.subset_fonts()  # embed only the glyphs used: a few KB instead of the whole CJK font
    doc.save(HERE / "three-pages.pdf", garbage=4, deflate=True)


if __name__ == "__main__":
    make_receipt()
    make_dense_page()
    make_pdf()
    for p in sorted(HERE.iterdir()):
        print(f"{p.name}\t{p.stat().st_size} bytes")
