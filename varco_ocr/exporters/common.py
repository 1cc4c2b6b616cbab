"""Helpers shared by the exporters: language tags, confidence scales, the software name, sources."""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Iterable
from xml.etree import ElementTree as ET

from varco_ocr.document import Document

SOFTWARE_NAME = "varco-ocr"

# What XML 1.0 forbids in text and attributes: C0 controls other than tab, newline and carriage
# return, surrogate code points (never UTF-8) and U+FFFE / U+FFFF. A model can emit the controls
# (\x0b, \x1b ...), file names can hold them, a server's JSON can carry lone surrogates.
_XML_FORBIDDEN = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"  # stands where a character was: the reader sees that something was there


def xml_safe(text: str) -> tuple[str, int]:
    """``text`` with every character XML 1.0 forbids replaced by U+FFFD, and how many were."""
    return _XML_FORBIDDEN.subn(REPLACEMENT, text)


def make_tree_xml_safe(root: ET.Element) -> int:
    """Make every text, tail and attribute value under ``root`` XML-safe (in place, see
    ``xml_safe``); returns the number of characters replaced. Run on the finished tree, so no value
    written by an exporter can escape it."""
    replaced = 0
    for el in root.iter():
        if el.text:
            el.text, n = xml_safe(el.text)
            replaced += n
        if el.tail:
            el.tail, n = xml_safe(el.tail)
            replaced += n
        for key, value in el.attrib.items():
            el.attrib[key], n = xml_safe(value)
            replaced += n
    return replaced


def xml_unsafe_count(document: Document) -> int:
    """How many characters of ``document`` the hOCR and ALTO exports replace by U+FFFD: those XML
    1.0 forbids in the source name, the model name, page errors and word texts (each character
    counted once, however often a format repeats it). For the run's notes."""
    texts = [document.source, document.model or ""]
    for page in document.pages:
        texts.append(page.error or "")
        texts.extend(w.text for w in page.words)
    return sum(len(_XML_FORBIDDEN.findall(t)) for t in texts)


def utf8_safe(text: str) -> str:
    """``text`` with surrogate code points (which UTF-8 cannot encode) replaced by U+FFFD."""
    return _SURROGATE.sub(REPLACEMENT, text)


@functools.cache  # the installed version does not change under a running process; asking costs ~2 ms
def software_version() -> str:
    try:
        from importlib.metadata import version

        return version("varco-ocr")
    except Exception:  # noqa: BLE001 - not installed (running from a checkout)
        return "0+unknown"


def ocr_system(document: Document) -> str:
    """``varco-ocr 0.1.0 (model NCSOFT/...)``: the software and the model that produced the text."""
    model = f" (model {document.model})" if document.model else ""
    return f"{SOFTWARE_NAME} {software_version()}{model}"


@functools.lru_cache(maxsize=8192)  # a page asks about the same few characters thousands of times
def _script_language(ch: str) -> str | None:
    """BCP 47 language tag suggested by a character's script, for the scripts VARCO reads. Latin
    text is tagged English: the model card's OCR model reads Korean and English."""
    code = ord(ch)
    if 0xAC00 <= code <= 0xD7A3 or 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F:
        return "ko"
    if 0x3040 <= code <= 0x30FF:
        return "ja"
    if 0x4E00 <= code <= 0x9FFF:
        return "zh"
    if ch.isalpha() and unicodedata.name(ch, "").startswith("LATIN"):
        return "en"
    return None


def guess_language(texts: Iterable[str]) -> str | None:
    """The language whose script has the most letters in ``texts``; Japanese or Korean win over
    Chinese when kana or Hangul appear (Han characters are shared); None without letters."""
    counts: Counter[str] = Counter()
    for text in texts:
        for ch in text:
            lang = _script_language(ch)
            if lang:
                counts[lang] += 1
    if not counts:
        return None
    if "zh" in counts and ("ko" in counts or "ja" in counts):
        counts[("ko" if counts["ko"] >= counts["ja"] else "ja")] += counts.pop("zh")
    # On a tie, prefer the non-Latin script: a Korean page with as many English letters is Korean.
    return max(counts, key=lambda lang: (counts[lang], lang != "en"))


def resolve_source(document: Document, source: str | os.PathLike | None = None, base: Path | None = None) -> Path:
    """The file the document was read from: ``source`` if given, else ``document.source`` as written,
    relative to ``base`` (the folder of a saved JSON), or the absolute ``metadata["source_path"]`` the
    batch runner records. Raises FileNotFoundError with a clear reason."""
    candidates = [Path(source)] if source else [Path(document.source)]
    if not source and base is not None and not Path(document.source).is_absolute():
        candidates.append(base / document.source)
    if not source and document.metadata.get("source_path"):
        candidates.append(Path(str(document.metadata["source_path"])))
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"source {candidates[0]} of the document not found (needed for page images)")


