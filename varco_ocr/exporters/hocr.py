"""hOCR 1.2 export (http://kba.github.io/hocr-spec/1.2/): one XHTML file per document.

Structure: ``ocr_page`` > ``ocr_carea`` (a block) > ``ocr_par`` (the same block: the model gives no
finer paragraph structure) > ``ocr_line`` > ``ocrx_word``. Every element has ``bbox`` in page pixels;
pages carry ``image``, ``ppageno`` (0-based physical page) and ``scan_res`` when the resolution is
known; words carry ``x_wconf`` (0-100) when a confidence exists. ``lang`` is set from the script of
the text, on the document and on paragraphs (and on a word whose script differs from its paragraph).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence
from xml.etree import ElementTree as ET

from varco_ocr.document import Document, Page, write_atomic
from varco_ocr.exporters.common import guess_language, make_tree_xml_safe, ocr_system

CAPABILITIES = "ocr_page ocr_carea ocr_par ocr_line ocrx_word ocrp_lang ocrp_wconf"
_HEADER = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"\n'
    '    "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
)


def _bbox(b: Sequence[float]) -> str:
    return "bbox {} {} {} {}".format(*(int(v) for v in b))


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "/").replace('"', "%22") + '"'


def hocr_string(document: Document, image_name: str | None = None) -> str:
    lang = guess_language(w.text for w in document.words) or "und"
    html = ET.Element("html", {"xmlns": "http://www.w3.org/1999/xhtml", "xml:lang": lang, "lang": lang})
    head = ET.SubElement(html, "head")
    ET.SubElement(head, "title").text = Path(document.source).name or "varco-ocr"
    ET.SubElement(head, "meta", {"http-equiv": "Content-Type", "content": "text/html;charset=utf-8"})
    ET.SubElement(head, "meta", {"name": "ocr-system", "content": ocr_system(document)})
    ET.SubElement(head, "meta", {"name": "ocr-capabilities", "content": CAPABILITIES})
    ET.SubElement(head, "meta", {"name": "ocr-number-of-pages", "content": str(len(document.pages))})
    body = ET.SubElement(html, "body")
    for n, page in enumerate(document.pages, start=1):
        body.append(_page_element(page, n, image_name or document.source, lang))
    make_tree_xml_safe(html)  # control characters in words or file names (xml_unsafe_count counts them)
    ET.indent(html, space=" ")
    return _HEADER + ET.tostring(html, encoding="unicode") + "\n"


def _page_element(page: Page, n: int, image: str, doc_lang: str) -> ET.Element:
    title = [f"image {_quoted(image)}", _bbox((0, 0, page.width, page.height)), f"ppageno {page.index}"]
    if page.dpi:
        title.append(f"scan_res {round(page.dpi)} {round(page.dpi)}")
    el = ET.Element("div", {"class": "ocr_page", "id": f"page_{n}", "title": "; ".join(title)})
    if page.error:
        el.set("data-error", page.error)  # hOCR allows extra attributes; keeps the reason with the page
    word_no = line_no = 0
    for b_no, block in enumerate(page.blocks, start=1):
        area = ET.SubElement(el, "div", {"class": "ocr_carea", "id": f"block_{n}_{b_no}", "title": _bbox(block.bbox)})
        par_lang = guess_language(w.text for w in block.words) or doc_lang
        par = ET.SubElement(
            area, "p", {"class": "ocr_par", "id": f"par_{n}_{b_no}", "lang": par_lang, "title": _bbox(block.bbox)}
        )
        for line in block.lines:
            line_no += 1
            line_el = ET.SubElement(
                par, "span", {"class": "ocr_line", "id": f"line_{n}_{line_no}", "title": _bbox(line.bbox)}
            )
            for word in line.words:
                word_no += 1
                props = [_bbox(word.bbox)]
                if word.confidence is not None:
                    props.append(f"x_wconf {round(max(0.0, min(1.0, word.confidence)) * 100)}")
                attrs = {"class": "ocrx_word", "id": f"word_{n}_{word_no}", "title": "; ".join(props)}
                word_lang = guess_language([word.text])
                if word_lang and word_lang != par_lang:
                    attrs["lang"] = word_lang
                ET.SubElement(line_el, "span", attrs).text = word.text
    return el


def export_hocr(document: Document, out_path: Path, image_name: str | None = None, **_: object) -> list[Path]:
    write_atomic(out_path, hocr_string(document, image_name))
    return [Path(out_path)]
