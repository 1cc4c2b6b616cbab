"""A glyphless font for invisible PDF text layers: any Unicode text survives, nothing is drawn.

The idea is Tesseract's and OCRmyPDF's (ideas, not code): a Type0 font with Identity-H encoding over
a CIDFontType2 descendant whose embedded TrueType has one empty glyph; every CID shows that glyph,
and a ToUnicode CMap says which text each CID stands for. No glyph lookup can fail, so no character
is lost, and the font costs a few hundred bytes instead of a CJK subset.

Unlike those two (which use the UTF-16 code unit as the CID, so an astral character becomes two
CIDs whose surrogate halves extractors must pair up again), each CID here stands for one code point,
mapped in the ToUnicode CMap to its exact UTF-16 (astral code points as a surrogate pair); CIDs are
allocated per document in order of first use (:class:`ClusterCodes`). Every CID is half an em wide
except combining marks, which have zero width and sit over their base, as in a real font: pymupdf
and poppler then keep a base letter and its marks in one word. (A CID standing for a whole grapheme
cluster, several code points in one ToUnicode entry, reads back the same in poppler, but MuPDF
treats such glyphs like diacritics and merges their line into the line above.) A right-to-left word
is drawn in display order, clusters reversed (:func:`visual_order`).

Pure functions and a small allocator; the PDF objects are written by ``varco_ocr.exporters.pdf``.
"""

from __future__ import annotations

import struct
import unicodedata
from typing import Iterable

import regex

UNITS_PER_EM = 1000
ADVANCE = 500  # every CID is half an em wide; the text layer stretches words with Tz anyway
ASCENT = 800
DESCENT = -200
MAX_CID = 0xFFFF  # Identity-H codes are two bytes


_CLUSTER = regex.compile(r"\X")  # compiled once: a per-call findall(pattern) paid a cache lookup per word


def grapheme_clusters(text: str) -> list[str]:
    """``text`` split into extended grapheme clusters (Unicode UAX #29), joined back it is ``text``."""
    return _CLUSTER.findall(text)


class ClusterCodes:
    """Allocates one CID per distinct string (the text layer uses single code points), from 1 up (CID 0 is .notdef), in first-use
    order, and remembers the mapping for the ToUnicode CMap."""

    def __init__(self) -> None:
        self._codes: dict[str, int] = {}

    def code(self, cluster: str) -> int:
        cid = self._codes.get(cluster)
        if cid is None:
            cid = len(self._codes) + 1
            if cid > MAX_CID:
                raise ValueError("more than 65,535 distinct characters in one document's text layer")
            self._codes[cluster] = cid
        return cid

    def hex(self, clusters: Iterable[str]) -> str:
        """The Identity-H string for ``clusters``, as PDF hex digits (two bytes per CID)."""
        return "".join(f"{self.code(c):04x}" for c in clusters)

    @property
    def mapping(self) -> dict[int, str]:
        return {cid: text for text, cid in self._codes.items()}

    @property
    def max_cid(self) -> int:
        return len(self._codes)


def _utf16_hex(text: str) -> str:
    return text.encode("utf-16-be").hex().upper()


def to_unicode_cmap(mapping: dict[int, str]) -> bytes:
    """A ToUnicode CMap (PDF 32000 9.10.3) mapping each CID to its text's UTF-16BE, bfchar entries
    in groups of at most 100 as the CMap syntax requires. A destination may hold several code
    points (a grapheme cluster) and surrogate pairs (astral characters)."""
    out = [
        "/CIDInit /ProcSet findresource begin",
        "12 dict begin",
        "begincmap",
        "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def",
        "/CMapName /Adobe-Identity-UCS def",
        "/CMapType 2 def",
        "1 begincodespacerange",
        "<0000> <FFFF>",
        "endcodespacerange",
    ]
    items = sorted(mapping.items())
    for start in range(0, len(items), 100):
        chunk = items[start : start + 100]
        out.append(f"{len(chunk)} beginbfchar")
        out.extend(f"<{cid:04X}> <{_utf16_hex(text)}>" for cid, text in chunk)
        out.append("endbfchar")
    out += ["endcmap", "CMapName currentdict /CMap defineresource pop", "end", "end"]
    return ("\n".join(out) + "\n").encode("ascii")


_RTL = frozenset({"R", "AL"})
_NUMBER = frozenset({"EN", "AN"})


def visual_order(clusters: list[str]) -> list[str]:
    """``clusters`` of one word (logical order) in the order they appear on the page, left to right:
    the Unicode bidi algorithm (UAX #9) reduced to a single word without explicit embeddings. PDF
    extractors take a run of glyphs as drawn left to right and reorder right-to-left runs themselves
    (MuPDF does), so an Arabic or Hebrew word must be drawn reversed to read back in logical order.

    Levels: the word's direction is its first strong character's (rule P2); R/AL clusters get an odd
    level, L and numbers even ones above that (I1/I2);
    neutrals take their strong neighbours' direction when both agree, else the word's (N1/N2); then
    every run at or above each level is reversed, highest first (L2). Returns the clusters in display
    order, each right-to-left one with its code points reversed as well."""
    kinds = []
    for c in clusters:
        kind = unicodedata.bidirectional(c[0]) if c else "ON"
        kinds.append("R" if kind in _RTL else "L" if kind == "L" else "N" if kind in _NUMBER else "ON")
    strong = [k for k in kinds if k in ("L", "R")]
    if "R" not in strong:
        return list(clusters)
    base = 1 if strong[0] == "R" else 0
    # Direction each cluster resolves to, numbers counting as right-to-left for neutrals (N1).
    dirs: list[str | None] = [{"L": "L", "R": "R", "N": "R"}.get(k) for k in kinds]
    for i, d in enumerate(dirs):
        if d is None:
            before = next((x for x in reversed(dirs[:i]) if x is not None), "R" if base else "L")
            after = next((x for x in dirs[i + 1 :] if x is not None), "R" if base else "L")
            dirs[i] = before if before == after else ("R" if base else "L")
    levels = []
    for k, d in zip(kinds, dirs):
        if k == "N":
            levels.append(2)  # numbers: level 2 at either base level (I1/I2)
        elif d == "R":
            levels.append(1)
        else:
            levels.append(2 if base else 0)
    order = list(range(len(clusters)))
    for level in range(max(levels), 0, -1):
        i = 0
        while i < len(order):
            if levels[order[i]] >= level:
                j = i
                while j < len(order) and levels[order[j]] >= level:
                    j += 1
                order[i:j] = order[i:j][::-1]
                i = j
            else:
                i += 1
    # A right-to-left cluster's code points are reversed too (a mark drawn before its base):
    # extractors reverse the whole run, marks included, to get back to logical order.
    return [clusters[i][::-1] if levels[i] % 2 else clusters[i] for i in order]


def is_mark(text: str) -> bool:
    """A combining mark (Unicode category M*): drawn with zero advance, over its base character."""
    return bool(text) and unicodedata.category(text[0]).startswith("M")


def widths_array(mapping: dict[int, str]) -> str:
    """The CIDFont /W array: 0 for every CID standing for a combining mark (the rest use /DW)."""
    marks = [cid for cid, text in sorted(mapping.items()) if is_mark(text)]
    return "[" + " ".join(f"{cid} [0]" for cid in marks) + "]"


def cid_to_gid_map(max_cid: int) -> bytes:
    """CIDToGIDMap stream: CID 0 -> glyph 0 (.notdef), CIDs 1..max_cid -> glyph 1 (the empty glyph);
    CIDs beyond the stream map to glyph 0, which is empty too."""
    return b"\x00\x00" + b"\x00\x01" * max_cid


# --------------------------------------------------------------------------------------------
# The TrueType font: two empty glyphs, the tables a TrueType rasteriser requires
# --------------------------------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    data += b"\0" * (-len(data) % 4)
    return sum(struct.unpack(f">{len(data) // 4}L", data)) & 0xFFFFFFFF


def _sfnt(tables: dict[bytes, bytes]) -> bytes:
    tags = sorted(tables)
    n = len(tags)
    entry_selector = n.bit_length() - 1
    search_range = 16 << entry_selector
    header = struct.pack(">LHHHH", 0x00010000, n, search_range, entry_selector, n * 16 - search_range)
    offset = 12 + 16 * n
    directory, body = b"", b""
    for tag in tags:
        data = tables[tag]
        directory += struct.pack(">4sLLL", tag, _checksum(data), offset + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    font = header + directory + body
    # head.checkSumAdjustment (offset 8 in head) makes the whole font sum to 0xB1B0AFBA.
    head_at = offset + sum(len(tables[t]) + (-len(tables[t]) % 4) for t in tags[: tags.index(b"head")])
    adjust = (0xB1B0AFBA - _checksum(font)) & 0xFFFFFFFF
    return font[: head_at + 8] + struct.pack(">L", adjust) + font[head_at + 12 :]


def glyphless_truetype() -> bytes:
    """A TrueType font of two glyphs (.notdef and one more), both without outlines, each half an em
    wide, ascent 0.8 em and descent 0.2 em (the PDF font descriptor says the same)."""
    num_glyphs = 2
    head = struct.pack(
        ">LLLLHHqqhhhhHHhhh",
        0x00010000, 0x00010000, 0, 0x5F0F3CF5,  # version, revision, checksum adjustment, magic
        0x000B, UNITS_PER_EM,  # flags: baseline at y=0, integer scaling, lsb at x=0
        0, 0,  # created, modified
        0, DESCENT, ADVANCE, ASCENT,  # font bounding box
        0, 8, 2, 0, 0,  # mac style, lowest readable size, direction hint, short loca, glyph format
    )
    hhea = struct.pack(
        ">LhhhHhhhhhhhhhhhH",
        0x00010000, ASCENT, DESCENT, 0, ADVANCE,
        0, 0, 0, 1, 0, 0,  # min lsb, min rsb, max extent, caret rise/run/offset
        0, 0, 0, 0, 0, num_glyphs,  # reserved, metric format, number of hMetrics
    )
    maxp = struct.pack(">LHHHHHHHHHHHHHH", 0x00010000, num_glyphs, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0)
    hmtx = struct.pack(">HhHh", ADVANCE, 0, ADVANCE, 0)
    loca = struct.pack(">HHH", 0, 0, 0)  # both glyphs empty: zero-length outlines
    # post format 3: no glyph names.
    post = struct.pack(">LLhhLLLLL", 0x00030000, 0, -100, 50, 1, 0, 0, 0, 0)
    # cmap: one (3, 1) format-4 subtable with only the closing segment (no character maps to a
    # glyph by code; the PDF maps CIDs to glyphs itself).
    fmt4 = struct.pack(">HHHHHHHHHHHH", 4, 24, 0, 2, 2, 0, 0, 0xFFFF, 0, 0xFFFF, 1, 0)
    cmap = struct.pack(">HHHHL", 0, 1, 3, 1, 12) + fmt4
    name_str = "VarcoOCRGlyphless".encode("utf-16-be")
    records = [(1, name_str), (4, name_str), (6, name_str)]
    name = struct.pack(">HHH", 0, len(records), 6 + 12 * len(records))
    name += b"".join(struct.pack(">HHHHHH", 3, 1, 0x409, nid, len(s), 0) for nid, s in records)
    name += name_str  # all three records point at the same string
    return _sfnt({b"head": head, b"hhea": hhea, b"maxp": maxp, b"hmtx": hmtx, b"loca": loca,
                  b"glyf": b"", b"post": post, b"cmap": cmap, b"name": name})
