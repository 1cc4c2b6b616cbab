import io

import numpy as np
import pytest
from PIL import Image

from varco_ocr.errors import InputError
from varco_ocr.preprocessing import load_image, prepare_for_model, to_rgb, upscaled_size


def test_upscale_rule_matches_model_card():
    # factor 2304 / max(w, h), sizes truncated with int()
    assert upscaled_size(1000, 500) == (2304, 1152)
    assert upscaled_size(777, 333) == (2304, 987)  # 987.43
    assert upscaled_size(1000, 334) == (2304, 769)  # 769.54: truncated, not rounded to 770
    assert upscaled_size(100, 334, 384) == (114, 384)  # 114.97: int() keeps 114
    assert upscaled_size(100, 3000) == (100, 3000)  # never downscale, even when the other side is small
    assert upscaled_size(2304, 10) == (2304, 10)
    assert upscaled_size(1000, 500, 0) == (1000, 500)  # 0 disables


def test_prepare_for_model_uses_bicubic_size():
    img = Image.new("RGB", (300, 200), "white")
    assert prepare_for_model(img).size == (2304, 1536)
    big = Image.new("RGB", (3000, 200), "white")
    assert prepare_for_model(big) is big


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparency_is_composited_over_white(mode):
    img = Image.new(mode, (4, 4), (0, 0) if mode == "LA" else (0, 0, 0, 0))
    assert to_rgb(img).getpixel((0, 0)) == (255, 255, 255)


def test_palette_cmyk_grey_and_16_bit_become_rgb():
    p = Image.new("P", (2, 2))
    p.putpalette([255, 0, 0] * 256)
    assert to_rgb(p).getpixel((0, 0)) == (255, 0, 0)
    assert to_rgb(Image.new("CMYK", (2, 2), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("L", (2, 2), 7)).getpixel((0, 0)) == (7, 7, 7)
    i16 = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
    assert i16.mode.startswith("I;16")
    rgb = to_rgb(i16)
    assert rgb.getpixel((0, 0)) == (0, 0, 0) and rgb.getpixel((1, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), "white")
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif)
    assert load_image(path).size == (20, 40)


@pytest.mark.parametrize("orientation", [None, 1, 3, 6, 8])
def test_only_an_orientation_to_apply_costs_a_copy(orientation):
    """An RGB page without an EXIF rotation is used as it is (exif_transpose would copy the whole
    page); a rotated one is turned, as a person sees it, and the input is left as it was."""
    img = Image.new("RGB", (40, 20), "white")
    img.putpixel((0, 0), (255, 0, 0))
    if orientation is not None:
        img.getexif()[0x0112] = orientation
    before = img.tobytes()
    loaded = load_image(img)
    if orientation in (None, 1):
        assert loaded is img
    else:
        assert loaded is not img and loaded.size == ((40, 20) if orientation == 3 else (20, 40))
        red = {3: (39, 19), 6: (19, 0), 8: (0, 39)}[orientation]
        assert loaded.getpixel(red) == (255, 0, 0)
    assert img.tobytes() == before and img.size == (40, 20)


def test_bad_files_give_one_line_reasons(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    buf = io.BytesIO()
    Image.new("RGB", (200, 200), "red").save(buf, "PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buf.getvalue()[:120])
    for path, reason in [
        (tmp_path / "missing.png", "no such file"),
        (empty, "empty"),
        (text, "not an image"),
        (truncated, "corrupt or truncated"),
        (tmp_path, "folder"),
    ]:
        with pytest.raises(InputError, match=reason) as info:
            load_image(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_pixel_limit_refuses_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (3000, 3000)).save(path)
    with pytest.raises(InputError, match="over the limit"):
        load_image(path, max_pixels=1_000_000)
    assert load_image(path, max_pixels=None).size == (3000, 3000)
