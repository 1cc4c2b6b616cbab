"""Inputs: --pages ranges, folder listing, PDF/TIFF/image pages, PDF point geometry, bad documents."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pymupdf
import pytest
from PIL import Image

from varco_ocr.errors import InputError
from varco_ocr.inputs import collect_inputs, count_pages, open_document, parse_page_ranges


# -- --pages ---------------------------------------------------------------------------------------


def test_page_ranges_select_existing_pages_in_order():
    assert parse_page_ranges("1-5,9").indices(10) == [0, 1, 2, 3, 4, 8]
    assert parse_page_ranges("9, 2-3, 2").indices(10) == [1, 2, 8]
    assert parse_page_ranges("3-").indices(5) == [2, 3, 4]
    assert parse_page_ranges("4-8").indices(5) == [3, 4]  # clipped to the document
    assert parse_page_ranges("7").indices(5) == []
    assert str(parse_page_ranges("1-5,9,3-")) == "1-5,9,3-"


@pytest.mark.parametrize("spec", ["0", "5-3", "a", "1-2-3", "", "1,,2", "-4"])
def test_bad_page_ranges_raise_one_line(spec):
    with pytest.raises(ValueError) as e:
        parse_page_ranges(spec)
    assert "\n" not in str(e.value) and "--pages" in str(e.value)


# -- folders ---------------------------------------------------------------------------------------


def _png(path: Path, size=(40, 30), color=(255, 255, 255)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def test_folders_are_walked_recursively_in_stable_order_with_notes(tmp_path):
    root = tmp_path / "scans"
    _png(root / "b.png")
    _png(root / "a" / "z.png")
    _png(root / "a" / "b.png")
    _png(root / "c" / "b.png")
    (root / "notes.txt").write_text("not a page")
    _png(root / ".hidden" / "x.png")
    listing = collect_inputs([root])
    rel = [f.path.relative_to(root).as_posix() for f in listing.files]
    assert rel == ["a/b.png", "a/z.png", "b.png", "c/b.png"]
    # outputs mirror the folder structure, so the three b.png do not collide
    assert [f.output_stem.as_posix() for f in listing.files] == ["a/b", "a/z", "b", "c/b"]
    assert [(s.path.name, s.reason) for s in listing.skipped] == [("notes.txt", "unsupported file type .txt")]


def test_glob_filters_folder_contents(tmp_path):
    root = tmp_path / "in"
    _png(root / "keep.png")
    _png(root / "sub" / "keep2.png")
    Image.new("RGB", (10, 10)).save(root / "drop.bmp")
    assert [f.path.name for f in collect_inputs([root], glob="*.png").files] == ["keep.png", "keep2.png"]
    assert [f.path.name for f in collect_inputs([root], glob="sub/*").files] == ["keep2.png"]


def test_equal_stems_given_as_files_are_disambiguated_and_missing_listed(tmp_path):
    a = _png(tmp_path / "x" / "page.png")
    b = _png(tmp_path / "y" / "page.png")
    c = tmp_path / "page.pdf"
    c.write_bytes(b"%PDF-1.4\n")
    listing = collect_inputs([a, b, c, tmp_path / "gone.png"])
    stems = [f.output_stem.as_posix() for f in listing.files]
    assert len(set(stems)) == 3 and stems[0] == "page_png"
    assert listing.missing == (tmp_path / "gone.png",)


# -- PDF pages and geometry ------------------------------------------------------------------------


def _marker_pdf(path: Path, rotation: int, cropbox=None, mediabox=(0, 0, 600, 800)) -> Path:
    """One page with a black rectangle at x 100..150, y 600..620 in PDF user space (y up)."""
    doc = pymupdf.open()
    page = doc.new_page(width=600, height=800)
    page.set_mediabox(pymupdf.Rect(*mediabox))
    xref = doc.get_new_xref()
    doc.update_object(xref, "<<>>")
    doc.update_stream(xref, b"0 g 100 600 50 20 re f")
    doc.xref_set_key(page.xref, "Contents", f"{xref} 0 R")
    if cropbox:
        page.set_cropbox(pymupdf.Rect(*cropbox))
    page.set_rotation(rotation)
    doc.save(path)
    return path


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
@pytest.mark.parametrize("cropbox,mediabox", [(None, (0, 0, 600, 800)), ((50, 30, 500, 700), (0, 0, 600, 800)), ((50, 60, 500, 700), (-20, -40, 580, 760))])
def test_pdf_pixels_map_to_unrotated_points(tmp_path, rotation, cropbox, mediabox):
    pdf = _marker_pdf(tmp_path / "m.pdf", rotation, cropbox, mediabox)
    with open_document(pdf, dpi=144) as doc:
        (page,) = list(doc.iter_pages())
    assert page.dpi == 144 and page.geometry is not None and page.geometry.rotation == rotation
    dark = np.asarray(page.image.convert("L")) < 128
    ys, xs = np.nonzero(dark)
    pixel_box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    # The rectangle is x 100..150 and y 600..620 in user space; pymupdf's unrotated coordinates
    # keep x and measure y down from the MediaBox top.
    top = mediabox[3]
    expected = (100, top - 620, 150, top - 600)
    got = page.bbox_pt(pixel_box)
    assert got == pytest.approx(expected, abs=0.6)
    # and back to user space, where a content stream would draw it
    a, b, c, d, e, f = page.geometry.pt_to_user_space()
    assert (got[0] * a + got[3] * c + e, got[0] * b + got[3] * d + f) == pytest.approx((100, 600), abs=0.6)


def test_pdf_pages_follow_dpi_and_page_selection(tmp_path):
    doc = pymupdf.open()
    for i in range(5):
        doc.new_page(width=72 * (i + 1), height=144)
    doc.save(tmp_path / "five.pdf")
    with open_document(tmp_path / "five.pdf", parse_page_ranges("2-3,5"), dpi=100) as d:
        assert d.page_count == 5 and d.page_indices == [1, 2, 4]
        sizes = [(p.index, p.image.size) for p in d.iter_pages()]
    assert sizes == [(1, (200, 200)), (2, (300, 200)), (4, (500, 200))]
    assert count_pages(tmp_path / "five.pdf", parse_page_ranges("4-")) == 2
    with pytest.raises(InputError, match="selects no page"):
        open_document(tmp_path / "five.pdf", parse_page_ranges("9"))


def test_pdf_pages_are_produced_lazily_and_not_retained(tmp_path):
    doc = pymupdf.open()
    for _ in range(20):
        doc.new_page(width=200, height=200)
    doc.save(tmp_path / "long.pdf")
    refs = []
    with open_document(tmp_path / "long.pdf", dpi=72) as d:
        pages = d.iter_pages()
        first = next(pages)
        refs.append(weakref.ref(first.image))
        del first
        for page in pages:
            refs.append(weakref.ref(page.image))
            del page
            gc.collect()
            # only the page just produced may still be alive; earlier ones were released
            assert sum(r() is not None for r in refs[:-1]) == 0


def test_encrypted_pdf_needs_the_password(tmp_path):
    doc = pymupdf.open()
    doc.new_page(width=100, height=100)
    path = tmp_path / "secret.pdf"
    doc.save(path, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="s3cret", owner_pw="owner")
    with pytest.raises(InputError, match="encrypted; give its password with --password"):
        open_document(path)
    with pytest.raises(InputError, match="wrong --password"):
        open_document(path, password="nope")
    with open_document(path, password="s3cret", dpi=72) as d:
        assert [p.image.size for p in d.iter_pages()] == [(100, 100)]


def test_empty_and_corrupt_pdfs_are_clear_errors(tmp_path):
    zero = tmp_path / "zero.pdf"
    zero.write_bytes(
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
        b"trailer<</Root 1 0 R>>\n%%EOF\n"
    )
    junk = tmp_path / "junk.pdf"
    junk.write_bytes(b"this is not a pdf at all" * 10)
    with pytest.raises(InputError, match="no pages"):
        open_document(zero)
    with pytest.raises(InputError) as e:
        open_document(junk)
    assert str(e.value).startswith(str(junk)) and "\n" not in str(e.value)


def test_an_unrenderable_page_is_reported_and_the_rest_produced(tmp_path):
    doc = pymupdf.open()
    doc.new_page(width=100, height=100)
    doc.new_page(width=14400, height=14400)  # 200 x 200 inches: 3.6 gigapixels at 300 dpi
    doc.new_page(width=100, height=100)
    doc.save(tmp_path / "mixed.pdf")
    with open_document(tmp_path / "mixed.pdf", dpi=300) as d:
        pages = list(d.iter_pages())
    assert [p.image is not None for p in pages] == [True, False, True]
    assert "page 2" in pages[1].error and "over the limit" in pages[1].error


# -- TIFF and images ------------------------------------------------------------------------------


def test_multipage_tiff_gives_every_frame_converted_to_rgb(tmp_path):
    frames = [Image.new("L", (30, 20), 200), Image.new("RGB", (40, 25), (10, 20, 30)), Image.new("1", (50, 30), 1)]
    path = tmp_path / "scan.tiff"
    frames[0].save(path, save_all=True, append_images=frames[1:], dpi=(300, 300))
    with open_document(path) as d:
        pages = list(d.iter_pages())
    assert [(p.index, p.image.size, p.image.mode) for p in pages] == [(0, (30, 20), "RGB"), (1, (40, 25), "RGB"), (2, (50, 30), "RGB")]
    assert pages[0].dpi == 300
    assert pages[1].image.getpixel((0, 0)) == (10, 20, 30)
    with open_document(path, parse_page_ranges("2-3")) as d:
        assert [p.index for p in d.iter_pages()] == [1, 2]


def test_image_formats_and_first_gif_frame(tmp_path):
    for suffix in ("png", "jpg", "bmp", "webp"):
        Image.new("RGB", (33, 22), (0, 128, 255)).save(tmp_path / f"i.{suffix}")
        with open_document(tmp_path / f"i.{suffix}") as d:
            (p,) = list(d.iter_pages())
        assert p.image.size == (33, 22) and p.image.mode == "RGB"
    gif = tmp_path / "anim.gif"
    Image.new("RGB", (20, 10), (255, 0, 0)).save(gif, save_all=True, append_images=[Image.new("RGB", (20, 10), (0, 0, 255))])
    with open_document(gif) as d:
        (p,) = list(d.iter_pages())
    r, g, b = p.image.getpixel((5, 5))
    assert r > 200 and b < 50  # the first frame (red), not the second (blue)


def test_unsupported_and_broken_files_raise_or_report(tmp_path):
    (tmp_path / "a.docx").write_bytes(b"PK\x03\x04")
    with pytest.raises(InputError, match="unsupported file type .docx"):
        open_document(tmp_path / "a.docx")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    with open_document(tmp_path / "bad.png") as d:
        (p,) = list(d.iter_pages())
    assert p.image is None and "bad.png" in p.error


def test_pages_beyond_the_document_are_named_merged():
    assert str(parse_page_ranges("1-5,9").beyond(4)) == "5,9"
    assert str(parse_page_ranges("3-7,6-10,11,13").beyond(4)) == "5-11,13"
    assert str(parse_page_ranges("1-3,6-").beyond(4)) == "6-"  # an open range past the end
    assert str(parse_page_ranges("9,6-").beyond(4)) == "6-"
    assert parse_page_ranges("2-").beyond(4) is None  # "to the last" asks for nothing missing
    assert parse_page_ranges("1-4,2").beyond(4) is None
    assert str(parse_page_ranges("1,3").beyond(1)) == "3"  # an image has one page
