"""The PDF text layer's shortcuts (issue 17 item 2) draw exactly what the general path draws."""

from __future__ import annotations

import zlib

import pymupdf
from hypothesis import given, settings
from hypothesis import strategies as st

from varco_ocr.exporters.glyphless import visual_order
from varco_ocr.exporters.pdf import _append_text_layer, _drawn_code_points, layer_clusters


def _general(text: str) -> list[str]:
    return [ch for c in visual_order(layer_clusters(text)) for ch in c]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0x7F)) | st.text(alphabet="ab \t\r\n\u0301\u05d0\u0661\x00"))
def test_printable_ascii_shortcut_draws_the_same_code_points(text):
    assert _drawn_code_points(text) == _general(text)


def test_the_content_stream_deflated_here_decodes_to_the_operators():
    doc = pymupdf.open()
    page = doc.new_page()
    font = doc.get_new_xref()
    doc.update_object(font, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    operators = "q BT 3 Tr /VarcoOCRText 12 Tf 1 0 0 1 10 10 Tm <0001> Tj ET Q"
    _append_text_layer(doc, page, operators, font)
    xref = page.get_contents()[-1]
    assert zlib.decompress(doc.xref_stream_raw(xref)) == operators.encode("ascii")
    assert doc.xref_stream(xref) == operators.encode("ascii")  # MuPDF decodes it: /FlateDecode is declared
