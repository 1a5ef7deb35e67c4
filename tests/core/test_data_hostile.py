"""Hostile and unusual input files, one built per case, beyond the mixed folder of
test_data_folder.py: bombs in every container, huge legal images, refused formats, deep and
float modes, broken EXIF, multi-frame files, extreme shapes, device files, links, odd names."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image, PngImagePlugin

from genstudio.core.data import DatasetError, load_source, scan_folder
from genstudio.core.data import decode as decode_module
from genstudio.core.data.decode import SkipImage, decode_image, pillow_warnings_as_skips

SIZE = 16
RED, BLUE = (255, 0, 0), (0, 0, 255)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENSTUDIO_CACHE_DIR", str(tmp_path / "cache"))


def encoded(im: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **options)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def decode(path: Path, size: int = SIZE) -> np.ndarray:
    with pillow_warnings_as_skips():
        return decode_image(str(path), size)


def skip_reason(path: Path) -> str:
    with pytest.raises(SkipImage) as raised:
        decode(path)
    return raised.value.args[0]


# -- decompression bombs: refused from the header, in every container -----------------------


def _png_bomb(width: int, height: int) -> bytes:
    data = bytearray(encoded(Image.new("L", (1, 1)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _gif_bomb() -> bytes:
    data = bytearray(encoded(Image.new("P", (1, 1)), "GIF"))
    data[6:10] = struct.pack("<HH", 60000, 60000)  # logical screen
    frame = data.index(b",")  # image descriptor: its size is what Pillow decodes
    data[frame + 5:frame + 9] = struct.pack("<HH", 60000, 60000)
    return bytes(data)


def _bmp_bomb() -> bytes:
    data = bytearray(encoded(Image.new("RGB", (1, 1)), "BMP"))
    data[18:26] = struct.pack("<ii", 50000, 50000)
    return bytes(data)


def _jpeg_bomb() -> bytes:
    data = bytearray(encoded(Image.new("RGB", (8, 8)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
    return bytes(data)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("name", "data"), [
    ("bomb.png", _png_bomb(30000, 30000)), ("bomb.gif", _gif_bomb()),
    ("bomb.bmp", _bmp_bomb()), ("bomb.jpg", _jpeg_bomb()),
])
def test_a_bomb_is_refused_before_any_pixel_is_decoded(tmp_path, monkeypatch, name, data):
    def no_decoding(*_args, **_kwargs):
        raise AssertionError("pixels of a bomb were decoded")

    monkeypatch.setattr(decode_module, "_load_oriented", no_decoding)
    monkeypatch.setattr(Image.Image, "load", no_decoding)
    path = write(tmp_path / name, data)
    assert len(data) < 2000  # a tiny file that would need gigabytes once decoded
    assert skip_reason(path).startswith("decompression bomb (")


# -- huge but legal images: decoded reduced, not at full size -------------------------------


def test_a_big_jpeg_is_decoded_at_a_reduced_scale(tmp_path, monkeypatch):
    photo = Image.new("RGB", (4000, 3000), BLUE)
    photo.paste(RED, (1000, 0, 3000, 3000))  # the centre square is red
    path = write(tmp_path / "photo.jpg", encoded(photo, "JPEG", quality=90))
    sizes = []
    real = decode_module._to_rgb
    monkeypatch.setattr(decode_module, "_to_rgb", lambda im: sizes.append(im.size) or real(im))
    pixels = decode(path)
    assert sizes == [(500, 375)]  # libjpeg decoded at 1/8 scale: 0.19 MP instead of 12 MP
    assert pixels.shape == (SIZE, SIZE, 3)
    assert np.abs(pixels[4:-4, 4:-4].astype(int) - RED).max() < 30


def test_a_big_png_is_box_reduced_before_resampling(tmp_path, monkeypatch):
    path = write(tmp_path / "big.png", encoded(Image.new("RGB", (3000, 2000), RED), "PNG"))
    factors = []
    real = Image.Image.reduce
    monkeypatch.setattr(Image.Image, "reduce",
                        lambda self, factor, box=None: factors.append(factor) or real(self, factor))
    assert decode(path)[5, 5].tolist() == list(RED)
    assert factors == [2000 // (2 * SIZE)]


# -- formats outside the allow-list never reach their parsers ------------------------------


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("eps.png", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n", "(EPS)"),
    ("eps.jpg", b"\xc5\xd0\xd3\xc6" + bytes(28), "(EPS)"),
    ("doc.png", b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n", "(PDF)"),
    ("layers.png", b"8BPS\x00\x01" + bytes(40), "(PSD)"),
    ("vector.png", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "(SVG)"),
    ("icon.png", encoded(Image.new("RGB", (16, 16)), "ICO"), "(ICO)"),
])
def test_refused_formats_never_reach_pillow_plugins(tmp_path, monkeypatch, name, data, reason):
    def forbidden(*_args, **_kwargs):
        raise AssertionError("bytes of a refused format reached Ghostscript or its parser")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", forbidden)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", forbidden)
    path = write(tmp_path / name, data)
    assert skip_reason(path) == f"unsupported format {reason}"


def test_files_with_refused_extensions_are_ignored_unopened(tmp_path):
    write(tmp_path / "a.png", encoded(Image.new("RGB", (8, 8), RED), "PNG"))
    write(tmp_path / "b.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n")
    write(tmp_path / "c.psd", b"8BPS")
    scan = scan_folder(tmp_path)
    assert [e.rel for e in scan.entries] == ["a.png"] and scan.ignored == 2


# -- deep, float and odd modes are scaled, not clipped ----------------------------------------


@pytest.mark.parametrize(("mode", "values", "expected"), [
    ("F", [0.0, 0.5, 1.0], [0, 128, 255]),               # float in [0, 1]: × 255
    ("F", [0.0, 500.0, 1000.0], [0, 128, 255]),          # any other range: min–max
    ("F", [-1.0, 0.0, 1.0], [0, 128, 255]),
    ("I;16", [0, 32896, 65535], [0, 128, 255]),          # 16-bit: / 257
    ("I", [0, 32896, 65535], [0, 128, 255]),             # 32-bit holding 16-bit data
    ("I", [0, 100_000, 200_000], [0, 128, 255]),         # beyond 16 bits: min–max
])
def test_deep_and_float_tiffs_are_scaled_not_clipped(tmp_path, mode, values, expected):
    dtype = {"F": np.float32, "I;16": np.uint16, "I": np.int32}[mode]
    array = np.repeat(np.array(values, dtype), SIZE * SIZE // len(values) + 1)[: SIZE * SIZE]
    array = np.sort(array).reshape(SIZE, SIZE)
    image = Image.fromarray(array)
    assert image.mode == mode
    pixels = decode(write(tmp_path / "deep.tif", encoded(image, "TIFF")))
    assert sorted(set(pixels[..., 0].ravel().tolist())) == expected


def test_nan_in_a_float_image_does_not_poison_it(tmp_path):
    array = np.linspace(0, 1, SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE)
    array[0, 0] = np.nan
    pixels = decode(write(tmp_path / "nan.tif", encoded(Image.fromarray(array), "TIFF")))
    assert pixels.dtype == np.uint8 and pixels[-1, -1, 0] == 255


def test_grey_alpha_is_composited_on_white(tmp_path):
    image = Image.new("LA", (SIZE, SIZE), (0, 0))  # black, fully transparent
    assert decode(write(tmp_path / "la.png", encoded(image, "PNG")))[3, 3].tolist() == [255] * 3


# -- EXIF that lies or is broken ----------------------------------------------------------------


def _with_app1(jpeg: bytes, payload: bytes) -> bytes:
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


@pytest.mark.parametrize("exif", [
    b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\xff\xff" + bytes(20),   # 65535 entries, 20 bytes
    b"Exif\x00\x00II\x2a\x00\xff\xff\xff\x7f",                        # IFD offset past the end
    b"Exif\x00\x00" + os.urandom(64),                                 # noise
    b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x63"
    b"\x00\x00\x00\x00\x00\x00",                                      # orientation 99
])
def test_broken_exif_keeps_the_image_unrotated(tmp_path, exif):
    wide = Image.new("RGB", (2 * SIZE, SIZE), BLUE)
    wide.paste(RED, (0, 0, SIZE, SIZE))
    path = write(tmp_path / "exif.jpg", _with_app1(encoded(wide, "JPEG", quality=95), exif))
    pixels = decode(path).astype(int)
    # Unrotated: the centre crop of the wide image, red left and blue right.
    assert np.abs(pixels[SIZE // 2, 0] - RED).max() < 40
    assert np.abs(pixels[SIZE // 2, -1] - BLUE).max() < 40


# -- several frames: the first one --------------------------------------------------------------


def test_apng_and_multipage_tiff_give_their_first_frame(tmp_path):
    frames = [Image.new("RGB", (SIZE, SIZE), c) for c in (RED, BLUE, (0, 255, 0))]
    apng = encoded(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)
    assert isinstance(Image.open(io.BytesIO(apng)), PngImagePlugin.PngImageFile)
    assert getattr(Image.open(io.BytesIO(apng)), "n_frames", 1) == 3
    tiff = encoded(frames[1], "TIFF", save_all=True, append_images=[frames[0], frames[2]])
    assert decode(write(tmp_path / "anim.png", apng))[3, 3].tolist() == list(RED)
    assert decode(write(tmp_path / "pages.tif", tiff))[3, 3].tolist() == list(BLUE)


# -- tiny and extremely thin images -------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (1, 6000), (6000, 1), (2, 3), (SIZE * 40, 3)])
def test_tiny_and_extremely_thin_images_decode_to_the_requested_square(tmp_path, size):
    pixels = decode(write(tmp_path / "odd.png", encoded(Image.new("RGB", size, RED), "PNG")))
    assert pixels.shape == (SIZE, SIZE, 3) and np.all(pixels == RED)


# -- files that are not files -------------------------------------------------------------------


@pytest.mark.timeout(15)
def test_device_files_are_skipped_without_being_opened(tmp_path):
    devices = [d for d in ("/dev/zero", "/dev/null", "/dev/urandom") if os.path.exists(d)]
    if not devices:
        pytest.skip("no device files on this system")
    root = tmp_path / "d"
    write(root / "good.png", encoded(Image.new("RGB", (8, 8), RED), "PNG"))
    for device in devices:
        (root / f"{Path(device).name}.png").symlink_to(device)  # reading /dev/zero never ends
    ds = load_source(root, SIZE)
    assert ds.files == ["good.png"]
    assert {s.path: s.reason for s in ds.skipped} == {
        f"{Path(d).name}.png": "not a regular file" for d in devices}


def test_hard_links_and_a_folder_linked_twice_give_each_file_once(tmp_path):
    root = tmp_path / "d"
    write(root / "cats/a.png", encoded(Image.new("RGB", (8, 8), RED), "PNG"))
    os.link(root / "cats/a.png", root / "cats/a-again.png")
    (root / "cats/same").symlink_to(".")                 # a loop inside the class
    (root / "dogs").symlink_to("cats", target_is_directory=True)  # the class reached twice
    ds = load_source(root, SIZE)
    # The hard link is the same file under two names: kept once, the other name reported.
    # The folder link and the loop lead to a folder already walked, so they add nothing (and
    # the class "dogs", left empty, is dropped).
    assert ds.files == ["cats/a-again.png"] and ds.class_names == ["cats"]
    assert [(s.path, s.reason) for s in ds.skipped] == [
        ("cats/a.png", "duplicate (same file as cats/a-again.png)")]


def test_a_bad_file_with_a_non_utf8_name_is_reported_readably(tmp_path):
    root = tmp_path / "d"
    write(root / "ok.png", encoded(Image.new("RGB", (8, 8), RED), "PNG"))
    with open(os.path.join(os.fsencode(root), b"r\xe9sum\xe9\xff.png"), "wb") as f:
        f.write(b"not an image")
    ds = load_source(root, SIZE)
    [skipped] = ds.skipped
    assert skipped.path == "r\\xe9sum\\xe9\\xff.png" and skipped.reason == "not an image"
    skipped.path.encode("utf-8")  # printable anywhere: no lone surrogates


def test_a_folder_of_only_unusable_files_is_one_clear_error(tmp_path):
    root = tmp_path / "d"
    write(root / "a.png", b"")
    write(root / "b.png", _png_bomb(30000, 30000))
    os.mkfifo(root / "c.png")
    with pytest.raises(DatasetError) as raised:
        load_source(root, SIZE)
    assert str(raised.value) == (
        f"No usable images in {root}: 3 files skipped "
        "(1 decompression bomb, 1 not a regular file, 1 zero-byte file).")


def test_a_signalling_nan_in_a_float_tiff_raises_no_warning(tmp_path):
    """Found by test_data_fuzz.py: widening a signalling NaN to float64 warned."""
    array = np.full((4, 4), 0.5, np.float32)
    array.view(np.uint32)[0, 0] = 0x7FA00000  # a signalling NaN
    path = write(tmp_path / "snan.tif", encoded(Image.fromarray(array), "TIFF"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels = decode(path)
    assert pixels.shape == (SIZE, SIZE, 3) and pixels[SIZE - 1, SIZE - 1, 0] == 128
