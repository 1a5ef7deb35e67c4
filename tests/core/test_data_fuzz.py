"""Fuzzing the image loader: whatever the bytes, decoding gives a size×size uint8 RGB array or
a SkipImage with a reason, never another exception, a hang, or a warning escaping.

Inputs are valid small images of every allowed format with bytes flipped, cut or spliced, and
plain random bytes. Runs briefly in the suite (a fixed number of examples, no deadline because
the machine is shared); raise FUZZ_EXAMPLES for a longer hunt."""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from genstudio.core.data.decode import SkipImage, decode_image, pillow_warnings_as_skips

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
SIZE = 8


def _seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    rgba = rgb.convert("RGBA")
    out = []
    for fmt, image, options in [
        ("PNG", rgba, {}), ("PNG", rgb.convert("P"), {"transparency": 3}),
        ("JPEG", rgb, {"quality": 80}), ("JPEG", rgb.convert("CMYK"), {}),
        ("GIF", rgb.convert("P"), {"save_all": True, "append_images": [rgb.convert("P")]}),
        ("BMP", rgb, {}), ("WEBP", rgba, {"lossless": True}), ("TIFF", rgb, {}),
        ("TIFF", Image.fromarray(rng.random((6, 6), dtype=np.float32)), {}),
        ("PPM", rgb, {}),
    ]:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        out.append(buffer.getvalue())
    return out


SEEDS = _seeds()


@st.composite
def damaged_images(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["flip", "cut", "splice", "byte"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and data:
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]))
        elif kind == "cut":
            data = data[:at]
        else:
            data[at:at] = draw(st.binary(max_size=32))
    return bytes(data)


@pytest.mark.timeout(240)
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.one_of(damaged_images(), st.binary(max_size=300)))
def test_any_bytes_decode_or_are_skipped_with_a_reason(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "x.png"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping the loader fails too
        with pillow_warnings_as_skips():
            try:
                pixels = decode_image(str(path), SIZE)
            except SkipImage as exc:
                assert isinstance(exc.args[0], str) and exc.args[0]
                return
    assert pixels.shape == (SIZE, SIZE, 3) and pixels.dtype == np.uint8
    assert path.read_bytes() == data  # the file is never modified
