"""Image loading and the model card's pre-processing.

- EXIF orientation is applied, so boxes refer to the page as a person sees it.
- Any mode becomes RGB; transparency is composited over white (a transparent PNG of black text would
  otherwise become black on black).
- The longer side is brought up to ``min_long_side`` (2304 by default) by the factor
  ``min_long_side / max(w, h)``, sizes truncated with ``int()``, bicubic; never downscaled. The
  processor then tiles the image (AnyRes, up to 6x6 tiles of 384 px).
- Images over a pixel limit are refused before their pixels are decoded.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import ExifTags, Image, ImageChops, ImageOps, UnidentifiedImageError

from varco_ocr.errors import InputError

DEFAULT_MIN_LONG_SIDE = 2304
DEFAULT_MAX_PIXELS = 178_000_000  # about 2x Pillow's own bomb warning; a 600 dpi A0 scan still fits

# Pillow's own decompression-bomb guard (a warning at 89 MP, an error at 178 MP, process-wide) is
# replaced by the explicit, configurable limit of check_pixel_limit, applied before decoding.
Image.MAX_IMAGE_PIXELS = None

ImageSource = Union[str, os.PathLike, bytes, BinaryIO, Image.Image]


def check_pixel_limit(width: int, height: int, max_pixels: int | None, name: str = "image") -> None:
    if max_pixels and width * height > max_pixels:
        raise InputError(
            f"{name}: {width}x{height} is {width * height:,} pixels, over the limit of {max_pixels:,} "
            "(raise it with --max-pixels)"
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB, compositing transparency over white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16/32-bit greyscale (scanners, microscopy): Pillow's convert("L") clips instead of scaling.
        arr = np.asarray(image, dtype=np.float64)
        top = arr.max() if arr.size else 0.0
        if mode == "F" and top <= 1.0:
            arr = arr * 255.0
        elif top > 255:
            arr = arr * (255.0 / (65535.0 if top <= 65535 else top))
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode == "La":  # premultiplied grey + alpha: Pillow converts it to LA only, not to RGBA
        image = image.convert("LA")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


_TRANSPOSING_ORIENTATIONS = frozenset(range(2, 9))


def upright(image: Image.Image) -> Image.Image:
    """``image`` with its EXIF orientation applied; the image itself, not a copy, when there is none
    to apply (``ImageOps.exif_transpose`` copies the whole page then: 10-15 ms on an A4 scan)."""
    if image.getexif().get(ExifTags.Base.Orientation, 1) in _TRANSPOSING_ORIENTATIONS:
        return ImageOps.exif_transpose(image)
    return image


# ``image.info`` key ``load_image`` sets when the image it returns is exactly the pixels it decoded from
# a file: (filename, size, mtime_ns) of that file. An image opened or edited elsewhere never has it.
DECODED_FILE = "varco_ocr.decoded_file"


def load_image(source: ImageSource, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str | None = None) -> Image.Image:
    """Open an image file (first frame), apply EXIF orientation, convert to RGB.

    Raises InputError with a one-line reason for missing, empty, truncated or non-image files.
    """
    if isinstance(source, Image.Image):
        check_pixel_limit(*source.size, max_pixels, name or "image")
        return to_rgb(upright(source))
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "image")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise InputError(f"{label}: no such file")
        if path.is_dir():
            raise InputError(f"{label}: is a folder, not an image")
        stat = path.stat()  # before opening: a file replaced after this no longer matches it (server.stored_data_url)
        if stat.st_size == 0:
            raise InputError(f"{label}: file is empty")
    elif isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with Image.open(source) as im:
            check_pixel_limit(*im.size, max_pixels, label)
            im.load()
            image = to_rgb(upright(im))
            if image is im and isinstance(source, (str, os.PathLike)):
                # The pixels are the file's own, as decoded here: which file, and which version of it.
                image.info[DECODED_FILE] = (im.filename, stat.st_size, stat.st_mtime_ns)
            return image
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{label}: not an image file Pillow can read") from None
    except PermissionError:
        raise InputError(f"{label}: permission denied") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{label}: corrupt or truncated image ({e})") from None


def upscaled_size(width: int, height: int, min_long_side: int = DEFAULT_MIN_LONG_SIDE) -> tuple[int, int]:
    """The size the model card resizes to: up to ``min_long_side`` on the longer side, never down."""
    long_side = max(width, height)
    if min_long_side <= 0 or long_side >= min_long_side or long_side == 0:  # nothing to scale (0x0: no division)
        return width, height
    scale = min_long_side / long_side
    return int(width * scale), int(height * scale)


def prepare_for_model(image: Image.Image, min_long_side: int = DEFAULT_MIN_LONG_SIDE) -> Image.Image:
    """RGB image -> the image the model sees (upscaled by the model card's rule, bicubic)."""
    if not (image.width and image.height):  # an in-memory image can have no pixels; a file of one is refused earlier
        raise InputError(f"an image of {image.width}x{image.height} pixels has nothing to read")
    image = to_rgb(image)
    size = upscaled_size(*image.size, min_long_side)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.BICUBIC)


def _all_grey(image: Image.Image) -> bool:
    red, green, blue = image.split()
    return ImageChops.difference(red, green).getbbox() is None and ImageChops.difference(green, blue).getbbox() is None


def grey_pixels(image: Image.Image) -> Image.Image | None:
    """``image`` as a single-channel image when every pixel is grey (R = G = B: most scans, any page
    of black text), else None. Converting it back to RGB (what a server's image loading does:
    ``convert("RGB")`` copies the grey value into each channel) gives exactly ``image``'s pixels."""
    if image.mode == "L":
        return image
    if image.mode != "RGB":
        return None
    width, height = image.size
    # A colour page usually shows colour in any band of rows: a cheap first look spares it the
    # full comparison (~20 ms on an A4 page at 2304 px).
    middle = image.crop((0, height // 2, width, min(height, height // 2 + 32)))
    if not _all_grey(middle) or not _all_grey(image):
        return None
    return image.getchannel("G")
