"""ALTO v4.4 export (https://www.loc.gov/standards/alto/): one XML file per document.

``MeasurementUnit`` is ``pixel`` (page pixels, the document model's unit); a ``Processing`` step
names the software and the model. Layout: ``Page`` > ``PrintSpace`` > ``TextBlock`` > ``TextLine`` >
``String`` with ``SP`` between words; ``WC`` is the word confidence (0..1) when known. Validated in
the tests against the official schema.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence
from xml.etree import ElementTree as ET

from varco_ocr.document import Document, Page, write_atomic
from varco_ocr.exporters.common import SOFTWARE_NAME, guess_language, make_tree_xml_safe, software_version

ALTO_NS = "http://www.loc.gov/standards/alto/ns-v4#"
ALTO_XSD = "http://www.loc.gov/standards/alto/v4/alto-4-4.xsd"
PROCESSING_ID = "OCR_0"


def _box(b: Sequence[float]) -> dict[str, str]:
    return {"HPOS": str(int(b[0])), "VPOS": str(int(b[1])), "WIDTH": str(int(b[2] - b[0])), "HEIGHT": str(int(b[3] - b[1]))}


def alto_string(document: Document, processed_at: datetime | None = None) -> str:
    root = ET.Element(
        "alto",
        {
            "xmlns": ALTO_NS,
            "xmlns:xlink": "http://www.w3.org/1999/xlink",
            "xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
            "xsi:schemaLocation": f"{ALTO_NS} {ALTO_XSD}",
            "SCHEMAVERSION": "4.4",
        },
    )
    desc = ET.SubElement(root, "Description")
    ET.SubElement(desc, "MeasurementUnit").text = "pixel"
    ET.SubElement(ET.SubElement(desc, "sourceImageInformation"), "fileName").text = document.source
    proc = ET.SubElement(desc, "Processing", {"ID": PROCESSING_ID})
    ET.SubElement(proc, "processingCategory").text = "contentGeneration"
    when = processed_at or datetime.now(timezone.utc)
    ET.SubElement(proc, "processingDateTime").text = when.replace(microsecond=0).isoformat()
    ET.SubElement(proc, "processingStepDescription").text = "OCR: words and boxes read by a vision-language model"
    ET.SubElement(proc, "processingStepSettings").text = f"model: {document.model or 'unknown'}"
    sw = ET.SubElement(proc, "processingSoftware")
    ET.SubElement(sw, "softwareName").text = SOFTWARE_NAME
    ET.SubElement(sw, "softwareVersion").text = software_version()
    ET.SubElement(sw, "applicationDescription").text = f"{SOFTWARE_NAME} with {document.model or 'an unknown model'}"

    layout = ET.SubElement(root, "Layout")
    doc_lang = guess_language(w.text for w in document.words)
    for n, page in enumerate(document.pages, start=1):
        layout.append(_page_element(page, n, doc_lang))
    make_tree_xml_safe(root)  # control characters in words or file names (xml_unsafe_count counts them)
    ET.indent(root, space=" ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _page_element(page: Page, n: int, doc_lang: str | None) -> ET.Element:
    attrs = {
        "ID": f"page_{n}",
        "PHYSICAL_IMG_NR": str(page.index + 1),
        "WIDTH": str(page.width),
        "HEIGHT": str(page.height),
        "PROCESSING": PROCESSING_ID,
    }
    if doc_lang:
        attrs["LANG"] = doc_lang
    if page.error:
        attrs["QUALITY"] = "Missing"  # ALTO's QualityType for a page whose content could not be read
        attrs["QUALITY_DETAIL"] = page.error
    el = ET.Element("Page", attrs)
    space = ET.SubElement(el, "PrintSpace", {"ID": f"page_{n}_ps", **_box((0, 0, page.width, page.height))})
    line_no = word_no = 0
    for b_no, block in enumerate(page.blocks, start=1):
        block_attrs = {"ID": f"block_{n}_{b_no}", **_box(block.bbox)}
        lang = guess_language(w.text for w in block.words)
        if lang:
            block_attrs["LANG"] = lang
        block_el = ET.SubElement(space, "TextBlock", block_attrs)
        for line in block.lines:
            line_no += 1
            line_el = ET.SubElement(block_el, "TextLine", {"ID": f"line_{n}_{line_no}", **_box(line.bbox)})
            words = [w for w in line.words if w.text]
            for i, word in enumerate(words):
                word_no += 1
                s = {"ID": f"string_{n}_{word_no}", "CONTENT": word.text, **_box(word.bbox)}
                if word.confidence is not None:
                    s["WC"] = f"{max(0.0, min(1.0, word.confidence)):.3f}"
                ET.SubElement(line_el, "String", s)
                if i + 1 < len(words):
                    gap_start, gap_end = word.bbox[2], words[i + 1].bbox[0]
                    ET.SubElement(
                        line_el,
                        "SP",
                        {"HPOS": str(int(gap_start)), "VPOS": str(int(word.bbox[1])), "WIDTH": str(max(0, int(gap_end - gap_start)))},
                    )
            if not words:  # ALTO requires at least one String per TextLine
                block_el.remove(line_el)
    return el


def export_alto(document: Document, out_path: Path, **_: object) -> list[Path]:
    write_atomic(out_path, alto_string(document))
    return [Path(out_path)]
