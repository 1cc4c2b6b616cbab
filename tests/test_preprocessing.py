import io

import numpy as np
import pytest
from PIL import Image

from varco_ocr.errors import InputError
from varco_ocr.preprocessing import check_pixel_limit, grey_pixels, load_image, prepare_for_model, to_rgb, upscaled_size


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
        (empty, ": file is empty$"),
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
    with pytest.raises(InputError, match="over the limit") as info:
        load_image(path, max_pixels=1_000_000)
    assert str(info.value).startswith(f"{path}: 3000x3000 is 9,000,000 pixels")
    assert load_image(path, max_pixels=None).size == (3000, 3000)


# -- exact conversions and boundaries (mutation testing, benchmarks/RESULTS.md) ----------------------


def _grey_row(array, mode=None):
    image = Image.fromarray(np.array([array], dtype={None: np.uint16, "I": np.int32, "F": np.float32}[mode]))
    return [to_rgb(image).getpixel((x, 0)) for x in range(len(array))]


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I;16N"])
def test_every_16_bit_mode_is_scaled_to_8_bits_not_clipped(mode):
    # Pillow's own conversion clips (32768 -> 255); the full 16-bit range maps onto 0..255, truncated.
    order = {"I;16B": ">u2", "I;16N": "=u2"}.get(mode, "<u2")
    image = Image.frombytes(mode, (2, 1), np.array([0, 32768], dtype=order).tobytes())
    assert image.mode == mode and image.getpixel((1, 0)) == 32768
    assert [to_rgb(image).getpixel((x, 0)) for x in (0, 1)] == [(0, 0, 0), (127, 127, 127)]


def test_deep_grey_scaling_boundaries():
    # values up to 255 are already 8-bit and kept; from 256 on, the image is read as 16-bit
    assert _grey_row([0, 1]) == [(0, 0, 0), (1, 1, 1)]
    assert _grey_row([0, 255]) == [(0, 0, 0), (255, 255, 255)]
    assert _grey_row([0, 256]) == [(0, 0, 0), (0, 0, 0)]  # 256 * 255 / 65535 = 0.996
    # 32-bit integers: over 65535 the brightest pixel becomes 255 (scale 255 / 65536 here)
    assert _grey_row([1000, 65535, 65536], "I") == [(3, 3, 3), (254, 254, 254), (255, 255, 255)]
    # floats: 0..1 is stretched to 0..255 (1.0 included), negatives clipped to 0; over 1 kept as values
    assert _grey_row([-1.0, 0.5, 1.0], "F") == [(0, 0, 0), (127, 127, 127), (255, 255, 255)]
    assert _grey_row([0.5, 2.0], "F") == [(0, 0, 0), (2, 2, 2)]
    assert to_rgb(Image.fromarray(np.zeros((0, 0), dtype=np.uint16))).size == (0, 0)


@pytest.mark.parametrize("mode", ["P", "PA", "RGBa", "La"])
def test_transparent_pixels_of_every_alpha_mode_become_white(mode):
    """A transparent black pixel is white after conversion, a solid one keeps its colour: palette
    images with a transparent index, palette + alpha, and Pillow's premultiplied modes."""
    if mode == "P":
        image = Image.new("P", (2, 1))
        image.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
        image.putpixel((1, 0), 1)
        image.info["transparency"] = 0
        solid = (200, 10, 10)
    elif mode == "PA":
        image = Image.new("PA", (2, 1))
        image.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
        image.putpixel((1, 0), (1, 255))
        solid = (200, 10, 10)
    else:
        base = "RGBA" if mode == "RGBa" else "LA"
        image = Image.new(base, (2, 1), (0, 0, 0, 0) if base == "RGBA" else (0, 0))
        image.putpixel((1, 0), (200, 10, 10, 255) if base == "RGBA" else (90, 255))
        image = image.convert(mode)
        solid = (200, 10, 10) if base == "RGBA" else (90, 90, 90)
    assert image.mode == mode
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (255, 255, 255) and rgb.getpixel((1, 0)) == solid


def test_pixel_limit_is_inclusive_and_its_message_exact():
    check_pixel_limit(1000, 1000, 1_000_000)  # exactly at the limit: accepted
    with pytest.raises(InputError) as info:
        check_pixel_limit(1001, 1000, 1_000_000, "page 3")
    assert str(info.value) == ("page 3: 1001x1000 is 1,001,000 pixels, over the limit of 1,000,000 "
                               "(raise it with --max-pixels)")
    with pytest.raises(InputError, match="^image: 2x2 is 4 pixels"):
        check_pixel_limit(2, 2, 3)


def test_in_memory_images_and_bytes_are_checked_and_named():
    png = io.BytesIO()
    Image.new("RGB", (30, 20), "white").save(png, "PNG")
    assert load_image(png.getvalue()).size == (30, 20)
    with pytest.raises(InputError, match="^image: 30x20 is 600 pixels"):
        load_image(png.getvalue(), max_pixels=599)
    page = Image.new("RGB", (30, 20), "white")
    with pytest.raises(InputError, match="^image: 30x20 is 600 pixels"):
        load_image(page, max_pixels=599)
    with pytest.raises(InputError, match="^page 3: 30x20 is 600 pixels"):
        load_image(page, max_pixels=599, name="page 3")


def test_a_one_byte_file_is_not_an_empty_file(tmp_path):
    path = tmp_path / "one.png"
    path.write_bytes(b"x")
    with pytest.raises(InputError, match=": not an image file Pillow can read$"):
        load_image(path)


def test_an_unreadable_file_is_a_one_line_permission_error(tmp_path, monkeypatch):
    # Tests run as root here, where chmod 000 does not stop a read: Pillow's open is made to refuse.
    path = tmp_path / "locked.png"
    Image.new("RGB", (4, 4)).save(path)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Image, "open", refuse)
    with pytest.raises(InputError) as info:
        load_image(path)
    assert str(info.value) == f"{path}: permission denied"


def test_prepare_for_model_uses_the_given_long_side():
    assert prepare_for_model(Image.new("RGB", (300, 200), "white"), 384).size == (384, 256)


def test_grey_pixels_keeps_grey_pages_as_one_channel_with_the_same_pixels():
    rgb = Image.fromarray(np.array([[[0, 0, 0], [90, 90, 90]], [[255, 255, 255], [7, 7, 7]]], dtype=np.uint8))
    grey = grey_pixels(rgb)
    assert grey is not None and grey.mode == "L" and grey.convert("RGB").tobytes() == rgb.tobytes()
    already = Image.new("L", (3, 3), 5)
    assert grey_pixels(already) is already
    assert grey_pixels(Image.new("RGBA", (3, 3))) is None


@pytest.mark.parametrize("row", [0, 50, 99])
@pytest.mark.parametrize("channel", [0, 1, 2])
def test_one_coloured_pixel_anywhere_makes_a_page_colour(row, channel):
    # row 50 lies in the band looked at first, rows 0 and 99 only in the full comparison
    image = Image.new("RGB", (40, 100), (128, 128, 128))
    colour = [128, 128, 128]
    colour[channel] = 129
    image.putpixel((39, row), tuple(colour))
    assert grey_pixels(image) is None


def test_an_image_without_pixels_is_refused_in_one_line_not_divided_by_zero():
    # upscaled_size(0, 0) divided by the long side (ZeroDivisionError); an in-memory 0x0 or 0xN image
    # reached it through prepare_for_model.
    from varco_ocr.errors import InputError
    from varco_ocr.preprocessing import prepare_for_model, upscaled_size

    assert upscaled_size(0, 0) == (0, 0)
    assert upscaled_size(0, 100) == (0, 2304)
    for size in [(0, 0), (0, 50), (50, 0)]:
        with pytest.raises(InputError, match=rf"^an image of {size[0]}x{size[1]} pixels has nothing to read$"):
            prepare_for_model(Image.new("RGB", size))


def test_only_an_image_that_is_exactly_its_files_pixels_names_that_file(tmp_path):
    """load_image marks the image it returns unchanged from a file with that file's name, size and
    mtime_ns (the server then sends the file's own bytes, if it has not changed since); a converted
    image, one decoded from bytes, and one a caller opened never carry the mark."""
    from varco_ocr.preprocessing import DECODED_FILE

    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (8, 4), (10, 20, 30)).save(rgb)
    stat = rgb.stat()
    assert load_image(rgb).info[DECODED_FILE] == (str(rgb), stat.st_size, stat.st_mtime_ns)
    grey = tmp_path / "grey.png"
    Image.new("L", (8, 4), 90).save(grey)
    assert DECODED_FILE not in load_image(grey).info  # converted to RGB: not the file's pixels
    assert DECODED_FILE not in load_image(rgb.read_bytes()).info
    with Image.open(rgb) as opened:
        assert DECODED_FILE not in load_image(opened).info
