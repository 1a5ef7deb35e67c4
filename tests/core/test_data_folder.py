"""Folder loading: every decoding path, every kind of bad file, the cache, and the errors."""

from __future__ import annotations

import errno
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image, ImageFile

from genstudio.core.data import DatasetCancelled, DatasetError, load_source, scan_folder
from genstudio.core.data import decode as decode_module
from genstudio.core.data import folder as folder_module

SIZE = 16  # most test images are 16×16, so resizing is the identity and pixels can be exact
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    """Every test gets its own cache, also for calls that pass no cache_dir."""
    monkeypatch.setenv("GENSTUDIO_CACHE_DIR", str(tmp_path / "cache-root"))
    return tmp_path / "cache"


def solid(colour, size=(SIZE, SIZE), mode="RGB") -> Image.Image:
    return Image.new(mode, size, colour)


def encoded(im: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise_bytes(fmt: str) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return encoded(Image.fromarray(pixels), fmt)


def png_claiming_size(width: int, height: int) -> bytes:
    """A valid 1×1 PNG whose IHDR is rewritten (with a correct CRC) to claim width×height."""
    data = bytearray(encoded(solid(RED, (1, 1)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def good_files() -> dict[str, bytes]:
    half_alpha = solid((0, 0, 0, 0), mode="RGBA")
    half_alpha.paste((255, 0, 0, 128), (0, 0, SIZE // 2, SIZE))
    palette = Image.new("P", (SIZE, SIZE), 0)
    palette.putpalette([0, 0, 0, *BLUE] + [0] * 762)
    palette.paste(1, (SIZE // 2, 0, SIZE, SIZE))
    deep = np.full((SIZE, SIZE), 32896, np.uint16)
    deep[: SIZE // 2] = 65535
    wide = solid(BLUE, (2 * SIZE, SIZE))
    wide.paste(RED, (0, 0, SIZE, SIZE))  # left half red; orientation 6 turns it to the top
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = [solid(RED), solid((0, 255, 0))]
    return {
        "animals/red.png": encoded(solid(RED), "PNG"),
        "animals/photo.jpg": encoded(solid((40, 120, 200)), "JPEG", quality=95),
        "animals/anim.gif": encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "animals/pic.webp": encoded(solid(BLUE), "WEBP", lossless=True),
        "animals/rgba.png": encoded(half_alpha, "PNG"),
        "animals/palette.png": encoded(palette, "PNG", transparency=0),
        "animals/deep16.png": encoded(Image.fromarray(deep), "PNG"),
        "animals/cmyk.jpg": encoded(solid((0, 255, 255, 0), mode="CMYK"), "JPEG", quality=95),
        "animals/exif.jpg": encoded(wide, "JPEG", quality=95, exif=exif),
        "plants/green.png": encoded(solid((0, 200, 0)), "PNG"),
    }


BAD_FILES = {
    "plants/empty.png": (b"", "zero-byte file"),
    "plants/text.png": (b"hello, I am not a picture\n", "not an image"),
    "plants/trunc.png": (noise_bytes("PNG")[:3000], "truncated image"),
    "plants/trunc.jpg": (noise_bytes("JPEG")[:1500], "truncated image"),
    "plants/eps.png": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n", None),
    "plants/bomb.png": (png_claiming_size(9000, 9000), None),  # over our cap only
    "plants/huge.png": (png_claiming_size(20000, 20000), None),  # over Pillow's error limit
    "plants/large.png": (png_claiming_size(10000, 10000), None),  # over Pillow's warning limit
    "stray.png": (encoded(solid(RED), "PNG"), "not in a class folder"),
}
EXPECTED_REASONS = {
    **{path: reason for path, (_, reason) in BAD_FILES.items() if reason},
    "plants/eps.png": "unsupported format (EPS)",
    "plants/bomb.png": "decompression bomb (9000×9000 px exceeds the 64 MP cap)",
    "plants/huge.png": "decompression bomb (400 MP exceeds the 64 MP cap)",
    "plants/large.png": "decompression bomb (100 MP exceeds the 64 MP cap)",
    "animals/dup.png": "duplicate (same file as animals/red.png)",
    "animals/pipe.png": "not a regular file",
    "animals/self.png": "broken link (loop)",
}


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.fixture
def mixed(tmp_path) -> Path:
    """Two class folders of good and bad files plus links, a FIFO and files to ignore."""
    root = tmp_path / "data"
    write_files(root, good_files())
    write_files(root, {rel: data for rel, (data, _) in BAD_FILES.items()})
    write_files(root, {"README.md": b"# my images\n", "animals/notes.txt": b"x"})
    write_files(root, {"animals/.hidden.png": encoded(solid(RED), "PNG")})
    (root / "animals/dup.png").symlink_to("red.png")
    (root / "animals/loop").symlink_to("..")  # a folder loop back to the root
    (root / "animals/self.png").symlink_to("self.png")
    os.mkfifo(root / "animals/pipe.png")  # opening it would block forever
    return root


def file_states(root: Path) -> dict[str, tuple[bytes, int]]:
    regular = (p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in regular}


def pixel(ds, rel: str, y: int, x: int) -> tuple[int, ...]:
    return tuple(int(v) for v in ds.images[ds.files.index(rel), y, x])


@pytest.mark.timeout(20)
def test_mixed_folder_loads_good_files_and_reports_each_bad_one(mixed, cache_dir, monkeypatch):
    def no_eps(*_args, **_kwargs):
        raise AssertionError("EPS bytes reached Pillow's EPS parser")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", no_eps)
    before = {p: s for p, s in file_states(mixed).items() if "pipe" not in p}

    ds = load_source(mixed, SIZE, cache_dir=cache_dir)

    assert sorted(ds.files) == sorted(good_files())
    assert {s.path: s.reason for s in ds.skipped} == EXPECTED_REASONS
    assert ds.class_names == ["animals", "plants"]
    assert ds.labels.tolist() == [0 if f.startswith("animals/") else 1 for f in ds.files]
    assert ds.images.shape == (10, SIZE, SIZE, 3) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64 and ds.source == str(mixed)
    assert ds.skipped_summary() == (
        "12 skipped: 3 decompression bomb, 2 truncated image, 1 broken link, 1 duplicate, "
        "1 not a regular file, 1 not an image, 1 not in a class folder, 1 unsupported format, "
        "1 zero-byte file"
    )
    assert ds.describe() == (
        f"{mixed} — 10 images, 16×16 RGB, 2 classes (animals, plants); 12 skipped"
    )
    assert file_states(mixed) == before  # nothing was modified, not even its mtime
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_decoding_paths_give_the_expected_pixels(mixed, cache_dir):
    ds = load_source(mixed, SIZE, cache_dir=cache_dir)
    assert pixel(ds, "animals/red.png", 3, 3) == RED
    assert pixel(ds, "animals/anim.gif", 3, 3) == RED  # first frame, not the green one
    assert pixel(ds, "animals/pic.webp", 3, 3) == BLUE
    assert pixel(ds, "animals/rgba.png", 3, 3) == (255, 127, 127)  # half red over white
    assert pixel(ds, "animals/rgba.png", 3, SIZE - 3) == WHITE  # fully transparent black
    assert pixel(ds, "animals/palette.png", 3, 3) == WHITE  # transparent palette index
    assert pixel(ds, "animals/palette.png", 3, SIZE - 3) == BLUE
    assert pixel(ds, "animals/deep16.png", 2, 2) == (255, 255, 255)  # 65535 / 257
    assert pixel(ds, "animals/deep16.png", SIZE - 2, 2) == (128, 128, 128)  # 32896 / 257
    cmyk = np.array(pixel(ds, "animals/cmyk.jpg", 8, 8))
    assert np.abs(cmyk - RED).max() < 40
    # Orientation 6 rotates the wide image a quarter turn clockwise: its red left half ends up
    # on top, so the top-right corner is red and the bottom-left blue (unrotated: the reverse).
    top_right = np.array(pixel(ds, "animals/exif.jpg", 0, SIZE - 1))
    bottom_left = np.array(pixel(ds, "animals/exif.jpg", SIZE - 1, 0))
    assert np.abs(top_right - RED).max() < 40 and np.abs(bottom_left - BLUE).max() < 40


def test_broken_exif_keeps_the_image_unrotated(tmp_path, cache_dir, monkeypatch):
    def broken(_image):
        raise SyntaxError("corrupt EXIF")

    monkeypatch.setattr(decode_module.ImageOps, "exif_transpose", broken)
    write_files(tmp_path / "d", {"a.png": encoded(solid(RED), "PNG")})
    ds = load_source(tmp_path / "d", SIZE, cache_dir=cache_dir)
    assert ds.files == ["a.png"] and pixel(ds, "a.png", 0, 0) == RED


def test_unconditional_folder_and_resize_to_square(tmp_path, cache_dir):
    wide = solid(BLUE, (90, 30))
    wide.paste(RED, (30, 0, 60, 30))  # only the centre third is red: a centre crop keeps it
    write_files(
        tmp_path / "d", {"wide.png": encoded(wide, "PNG"), "b.bmp": encoded(solid(RED), "BMP")}
    )
    ds = load_source(tmp_path / "d", 8, cache_dir=cache_dir)
    assert ds.class_names == [] and ds.labels.tolist() == [0, 0]
    assert ds.files == ["b.bmp", "wide.png"] and ds.images.shape == (2, 8, 8, 3)
    # LANCZOS may take a little colour from just outside the crop at the very edge columns
    assert np.abs(ds.images[1, :, 1:-1].astype(int) - RED).max() <= 2


def test_auto_channels_grey_folder_gives_one_channel(tmp_path, cache_dir):
    deep = np.full((SIZE, SIZE), 65535, np.uint16)
    write_files(
        tmp_path / "g",
        {
            "a.png": encoded(solid(90, mode="L"), "PNG"),
            "b.png": encoded(Image.fromarray(deep), "PNG"),
            "c.pgm": encoded(solid(7, mode="L"), "PPM"),
        },
    )
    grey = load_source(tmp_path / "g", SIZE, cache_dir=cache_dir)
    assert grey.images.shape == (3, SIZE, SIZE, 1) and grey.channels == 1
    assert grey.images[:, 0, 0, 0].tolist() == [90, 255, 7]
    as_rgb = load_source(tmp_path / "g", SIZE, channels=3, cache_dir=cache_dir)
    assert as_rgb.images.shape == (3, SIZE, SIZE, 3)
    assert np.array_equal(as_rgb.images, np.repeat(grey.images, 3, axis=3))


def test_colour_folder_is_rgb_and_grey_conversion_matches_pillow(tmp_path, cache_dir):
    colour = (200, 30, 90)
    write_files(tmp_path / "c", {"a.png": encoded(solid(colour), "PNG")})
    assert load_source(tmp_path / "c", SIZE, cache_dir=cache_dir).channels == 3
    grey = load_source(tmp_path / "c", SIZE, channels=1, cache_dir=cache_dir)
    assert grey.images.shape == (1, SIZE, SIZE, 1)
    assert grey.images[0, 0, 0, 0] == solid(colour).convert("L").getpixel((0, 0))


def test_second_load_comes_from_the_cache(mixed, cache_dir, monkeypatch):
    first = load_source(mixed, SIZE, cache_dir=cache_dir)

    def must_not_decode(*_args, **_kwargs):
        raise AssertionError("decoded although the cache was valid")

    monkeypatch.setattr(folder_module, "decode_image", must_not_decode)
    second = load_source(mixed, SIZE, cache_dir=cache_dir)
    assert np.array_equal(first.images, second.images) and second.images.flags.writeable
    assert first.files == second.files and first.skipped == second.skipped
    assert np.array_equal(first.labels, second.labels)


def test_changed_added_or_resized_settings_invalidate_the_cache(tmp_path, cache_dir):
    root = tmp_path / "d"
    write_files(root, {"a.png": encoded(solid(RED), "PNG")})
    assert pixel(load_source(root, SIZE, cache_dir=cache_dir), "a.png", 0, 0) == RED
    (root / "a.png").write_bytes(encoded(solid(BLUE), "PNG"))
    os.utime(root / "a.png", ns=(1, 10**18))  # a different mtime even on a coarse clock
    assert pixel(load_source(root, SIZE, cache_dir=cache_dir), "a.png", 0, 0) == BLUE
    write_files(root, {"b.png": encoded(solid(RED), "PNG")})
    assert load_source(root, SIZE, cache_dir=cache_dir).files == ["a.png", "b.png"]
    assert load_source(root, 8, cache_dir=cache_dir).images.shape == (2, 8, 8, 3)


def test_corrupt_cache_is_ignored_and_rebuilt(tmp_path, cache_dir):
    write_files(tmp_path / "d", {"a.png": encoded(solid(RED), "PNG")})
    first = load_source(tmp_path / "d", SIZE, cache_dir=cache_dir)
    for npy in cache_dir.glob("*.npy"):
        npy.write_bytes(b"\x93NUMPY garbage")
    again = load_source(tmp_path / "d", SIZE, cache_dir=cache_dir)
    assert np.array_equal(first.images, again.images)


def test_default_cache_dir_comes_from_the_environment(tmp_path):
    write_files(tmp_path / "d", {"a.png": encoded(solid(RED), "PNG")})
    load_source(tmp_path / "d", SIZE)
    assert list((tmp_path / "cache-root" / "datasets").glob("*.json"))


def test_empty_class_is_dropped_and_labels_renumbered(tmp_path, cache_dir):
    write_files(tmp_path / "d", {"a/x.png": b"", "b/y.png": encoded(solid(RED), "PNG")})
    ds = load_source(tmp_path / "d", SIZE, cache_dir=cache_dir)
    assert ds.class_names == ["b"] and ds.labels.tolist() == [0]


def test_non_utf8_name_is_loaded_and_printable(tmp_path, cache_dir):
    root = tmp_path / "d"
    root.mkdir()
    with open(os.path.join(os.fsencode(root), b"caf\xe9.png"), "wb") as f:
        f.write(encoded(solid(RED), "PNG"))
    ds = load_source(root, SIZE, cache_dir=cache_dir)
    assert ds.files == ["caf\\xe9.png"]


def test_unreadable_file_is_skipped(tmp_path, cache_dir):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root reading the file")
    write_files(tmp_path / "d", {"a.png": encoded(solid(RED), "PNG"), "b.png": b"x"})
    (tmp_path / "d/b.png").chmod(0)
    ds = load_source(tmp_path / "d", SIZE, cache_dir=cache_dir)
    assert [(s.path, s.reason) for s in ds.skipped] == [("b.png", "unreadable: Permission denied")]


def test_open_error_is_reported_as_unreadable(tmp_path, cache_dir, monkeypatch):
    """The same path as above without needing a non-root user."""
    write_files(tmp_path / "d", {"a.png": encoded(solid(RED), "PNG"), "b.png": b"x"})
    real_open = open

    def denying_open(path, *args, **kwargs):
        if str(path).endswith("b.png"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(decode_module, "open", denying_open, raising=False)
    ds = load_source(tmp_path / "d", SIZE, cache_dir=cache_dir)
    assert [(s.path, s.reason) for s in ds.skipped] == [("b.png", "unreadable: Permission denied")]
    assert not list(cache_dir.glob("*.json"))  # not cached: it may be readable next time


def test_progress_and_cancel(tmp_path, cache_dir):
    write_files(tmp_path / "d", {f"{i:03}.png": encoded(solid(RED), "PNG") for i in range(250)})
    calls = []
    load_source(tmp_path / "d", 8, cache_dir=cache_dir, progress=lambda d, t: calls.append(d))
    assert calls[0] == 0 and calls[-1] == 250 and calls == sorted(calls)
    assert len(calls) <= 127  # about every 1%, not every file
    with pytest.raises(DatasetCancelled):
        load_source(tmp_path / "d", 12, cache_dir=cache_dir, should_stop=lambda: True)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "No images found in {root}."),
        ({"notes.txt": b"x"}, "No images found in {root} (1 other file ignored)."),
        (
            {"a.png": b"", "b.png": b"text", "c.jpg": b"also text"},
            "No usable images in {root}: 3 files skipped (2 not an image, 1 zero-byte file).",
        ),
    ],
)
def test_empty_or_all_bad_folder_is_an_error(tmp_path, cache_dir, files, message):
    root = tmp_path / "d"
    root.mkdir()
    write_files(root, files)
    with pytest.raises(DatasetError) as raised:
        load_source(root, SIZE, cache_dir=cache_dir)
    assert str(raised.value) == message.format(root=root)


def test_missing_path_file_path_and_bad_settings_are_errors(tmp_path, cache_dir):
    write_files(tmp_path, {"a.png": encoded(solid(RED), "PNG")})
    with pytest.raises(DatasetError, match="Folder not found"):
        load_source(tmp_path / "nope", cache_dir=cache_dir)
    with pytest.raises(DatasetError, match="is a file, not a folder"):
        load_source(tmp_path / "a.png", cache_dir=cache_dir)
    for size in (7, 257, 3.5):
        with pytest.raises(DatasetError, match="Image size"):
            load_source(tmp_path, size, cache_dir=cache_dir)
    with pytest.raises(DatasetError, match="Channels"):
        load_source(tmp_path, SIZE, channels=2, cache_dir=cache_dir)


def test_home_is_expanded(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_files(tmp_path / "pics", {"a.png": encoded(solid(RED), "PNG")})
    assert load_source("~/pics", SIZE, cache_dir=cache_dir).source == str(tmp_path / "pics")


@pytest.mark.timeout(10)
def test_scan_lists_candidates_without_opening_anything(mixed):
    scan = scan_folder(mixed)
    rels = {e.rel for e in scan.entries}
    assert "animals/pipe.png" not in rels and "animals/dup.png" not in rels
    assert "animals/red.png" in rels and not any(".hidden" in r for r in rels)
    assert scan.ignored == 2  # README.md and notes.txt


def test_grey_conversion_in_chunks_equals_the_whole_array_formula():
    """to_channels converts 4,096 images at a time (memory); the chunks must not show."""
    from genstudio.core.data.dataset import _LUMA_WEIGHTS, is_greyscale, to_channels

    rgb = np.random.default_rng(0).integers(0, 256, (4096 + 37, 3, 2, 3), dtype=np.uint8)
    whole = ((rgb.astype(np.uint32) @ _LUMA_WEIGHTS + 0x8000) >> 16).astype(np.uint8)[..., None]
    assert np.array_equal(to_channels(rgb, 1), whole)
    grey = np.repeat(whole, 3, axis=-1)
    assert is_greyscale(grey) and to_channels(grey, None).shape[-1] == 1
    grey[-1, 0, 0, 2] ^= 1  # one subpixel in the last chunk
    assert not is_greyscale(grey) and to_channels(grey, None).shape[-1] == 3
