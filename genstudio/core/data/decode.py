"""Opening the image files a person gives (data, masks, endpoints, inpainting input) and
decoding them into a size×size RGB array or a grey mask, or a short reason why not.

Safety: files are opened read-only; Pillow may only pick among the formats in PIL_FORMATS, so
bytes in another format (EPS, which Pillow hands to Ghostscript; PSD; ...) never reach its
parser whatever the file is named; the pixel count is checked from the header before any
decoding; truncated files raise (ImageFile.LOAD_TRUNCATED_IMAGES is left False).
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 64_000_000  # header-declared width×height above this is refused as a bomb

# Plugin ids Pillow may use; PPM also reads .pgm and .pbm.
PIL_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM")

# Leading bytes of formats we refuse, to tell "unsupported format" from "not an image".
_MAGIC = (
    (b"%!PS", "EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"%PDF", "PDF"),
    (b"8BPS", "PSD"),
    (b"<svg", "SVG"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"icns", "ICNS"),
    (b"qoif", "QOI"),
    (b"\xffO\xffQ", "JPEG 2000"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
)
_ISO_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"avif": "AVIF"}

_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


class SkipImage(Exception):
    """This file cannot be used; args[0] is the SkippedFile reason."""


@contextlib.contextmanager
def pillow_warnings_as_skips() -> Iterator[None]:
    """Turn Pillow's bomb warning into an exception (so it becomes a skip) and silence its
    UserWarnings about odd but decodable files (bad EXIF, ...), which would otherwise be noise.
    The warnings filter is process-wide, so wrap a whole loading loop, not each file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


@contextlib.contextmanager
def open_image(path: str, *, max_pixels: int = MAX_PIXELS) -> Iterator[Image.Image]:
    """The image file at `path`, opened by Pillow among PIL_FORMATS only and refused when its
    header declares more than `max_pixels`; nothing is decoded yet. Every image the program
    reads from a person (data, masks, endpoints, inpainting input) goes through here.
    Raises SkipImage with the reason."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below; open errors differ
    except OSError as exc:
        raise SkipImage(f"unreadable: {exc.strerror or exc}") from None
    with f, _open_image(f, max_pixels) as im:
        yield im


def decode_image(path: str, size: int, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The first frame of `path` as uint8 (size, size, 3) RGB; raises SkipImage."""
    with open_image(path, max_pixels=max_pixels) as im:  # convert inside: close() frees the pixels
        frame = _load_oriented(im, size)
        try:
            rgb = _to_rgb(frame)
        except (ValueError, OSError):  # e.g. LAB or HSV TIFFs, which Pillow cannot make RGB
            raise SkipImage(f"unsupported colour mode ({frame.mode})") from None
    factor = min(rgb.size) // (2 * size)
    if factor >= 2:  # a cheap box reduction first keeps LANCZOS fast on big photos
        rgb = rgb.reduce(factor)
    fitted = ImageOps.fit(rgb, (size, size), Image.Resampling.LANCZOS)
    return np.asarray(fitted, dtype=np.uint8)


def decode_grey_levels(path: str, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The first frame of `path`, upright, as 8-bit grey ("L") at its own size, for masks:
    16-bit and 32-bit levels are scaled by their depth and float levels in [0, 1] by 255 (a
    16-bit 300/65535 stays dark; a float 1.0 is white); colour goes to luma, alpha is ignored.
    Raises SkipImage."""
    with open_image(path, max_pixels=max_pixels) as im:
        frame = _load_oriented(im, size=0)
        if frame.mode in _HIGH_DEPTH_MODES:
            return Image.fromarray(_scale_to_8bit(np.asarray(frame), frame.mode))
        try:
            if frame.mode in ("P", "PA", "LA", "RGBA"):
                return frame.convert("RGBA").convert("L")
            return frame.convert("L")
        except (ValueError, OSError):
            raise SkipImage(f"unsupported colour mode ({frame.mode})") from None


def image_size_upright(path: str, *, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of an image file as shown upright (EXIF orientation applied), read from
    its header; raises SkipImage."""
    with open_image(path, max_pixels=max_pixels) as im:
        width, height = im.size
        try:
            orientation = im.getexif().get(0x0112, 1)
        except Exception:  # noqa: BLE001 - a broken EXIF block: shown as stored
            orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _open_image(f, max_pixels: int) -> Image.Image:
    head = f.read(16)
    if not head:
        raise SkipImage("zero-byte file")
    f.seek(0)
    try:
        im = Image.open(f, formats=PIL_FORMATS)
    except UnidentifiedImageError:
        raise SkipImage(_unsupported_reason(head)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SkipImage(_bomb_reason(exc, max_pixels)) from None
    except Exception as exc:  # noqa: BLE001 - any parser failure on a bad header is a skip
        raise SkipImage(f"corrupt image: {exc}") from None
    width, height = im.size
    if width * height > max_pixels:
        im.close()
        raise SkipImage(
            f"decompression bomb ({width}×{height} px exceeds the {_megapixels(max_pixels)} MP cap)"
        )
    return im


def _load_oriented(im: Image.Image, size: int) -> Image.Image:
    """Decode the current (first) frame, reduced at decode time for big JPEGs to no less than
    twice `size` (0: full size), upright."""
    if size and im.format == "JPEG" and min(im.size) > 2 * size:
        im.draft("RGB", (2 * size, 2 * size))  # libjpeg decodes at 1/2, 1/4 or 1/8 scale
    try:
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SkipImage(_bomb_reason(exc, MAX_PIXELS)) from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on damaged data
        if isinstance(exc, EOFError) or "truncated" in str(exc).lower():
            raise SkipImage("truncated image") from None
        raise SkipImage(f"corrupt image: {exc}") from None
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not cost the image
        return im


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in _HIGH_DEPTH_MODES:
        return Image.fromarray(_scale_to_8bit(np.asarray(im), im.mode)).convert("RGB")
    if im.mode == "1":
        im = im.convert("L")
    if _has_alpha(im):
        return _over_white(im.convert("RGBA"))
    return im.convert("RGB")


def _has_alpha(im: Image.Image) -> bool:
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        return True
    return im.mode == "P" and im.palette is not None and im.palette.mode == "RGBA"


def _over_white(rgba: Image.Image) -> Image.Image:
    """Composite on white: transparent pixels show the page colour, not whatever RGB they hold."""
    pixels = np.asarray(rgba).astype(np.uint32)
    alpha = pixels[..., 3:]
    rgb = (pixels[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255
    return Image.fromarray(rgb.astype(np.uint8))


def _scale_to_8bit(values: np.ndarray, mode: str) -> np.ndarray:
    """16-bit and 32-bit grey to uint8 by scaling, never by clipping."""
    # Widening a signalling NaN (the fuzz test found one in a float TIFF) raises numpy's
    # "invalid value" warning; NaN and inf are replaced just below, so it is noise.
    with np.errstate(invalid="ignore"):
        values = values.astype(np.float64)
    if mode == "F":
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            return np.rint(values * 255.0).astype(np.uint8)
        return _min_max(values)
    if values.size and (values.min() < 0 or values.max() > 65535):
        return _min_max(values)
    return np.rint(values / 257.0).astype(np.uint8)  # 65535 -> 255 exactly


def _min_max(values: np.ndarray) -> np.ndarray:
    low, high = (values.min(), values.max()) if values.size else (0.0, 0.0)
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _unsupported_reason(head: bytes) -> str:
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return f"unsupported format ({name})"
    if head[4:8] == b"ftyp" and head[8:12] in _ISO_BRANDS:
        return f"unsupported format ({_ISO_BRANDS[head[8:12]]})"
    return "not an image"


def _bomb_reason(exc: Exception, max_pixels: int) -> str:
    match = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{_megapixels(int(match.group(1)))} MP" if match else "its size"
    return f"decompression bomb ({size} exceeds the {_megapixels(max_pixels)} MP cap)"


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:g}"
