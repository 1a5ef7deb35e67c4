"""Inpainting through the core: masks read the CLI's way, candidates by seed, known pixels kept."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from genstudio.core.data import DatasetError, image_file_size, load_image
from genstudio.core.families import ImageSpec, create_family, family_class
from genstudio.core.runs.images import read_png_metadata
from genstudio.core.trained.inpainting import (
    InpaintError,
    InpaintSession,
    export_inpainting,
    fit_to_model,
    inpaint_candidates,
    load_mask,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(name, size=8, channels=3):
    family = create_family(name, ImageSpec(channels=channels, size=size), dict(family_class(name).TINY), "cpu", seed=0)
    family.eval_mode()
    return family


def test_a_mask_is_white_for_fill_and_cropped_like_its_image(tmp_path):
    mask = np.zeros((20, 40), np.uint8)  # wide: the centre square (columns 10–29) is kept
    mask[:, 20:] = 255                   # right half white
    mask[0, 0] = 127                     # just below the threshold: keep
    Image.fromarray(mask).save(tmp_path / "m.png")
    fill = load_mask(tmp_path / "m.png", 10, image_size=(40, 20))
    assert fill.shape == (10, 10) and fill.dtype == bool
    assert not fill[:, :5].any() and fill[:, 5:].all()  # the crop's left half keeps, right half fills
    picture = np.zeros((20, 40, 3), np.uint8)
    picture[:, 20:] = 255
    Image.fromarray(picture).save(tmp_path / "i.png")
    image = load_image(tmp_path / "i.png", 10, 1)[:, :, 0]
    assert np.array_equal(image > 128, fill)  # the same crop as the image's


def test_a_mask_that_does_not_fit_its_image_is_refused(tmp_path):
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(InpaintError, match="30×30 px but the image is 40×20"):
        load_mask(tmp_path / "m.png", 10, image_size=(40, 20))
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small.png")
    assert load_mask(tmp_path / "small.png", 10, image_size=(40, 20)).shape == (10, 10)  # the model's size
    (tmp_path / "bad.png").write_text("no")
    with pytest.raises(DatasetError, match="not a readable mask"):
        load_mask(tmp_path / "bad.png", 10)
    with pytest.raises(DatasetError, match="no such mask"):
        load_mask(tmp_path / "none.png", 10)


def test_transparent_and_palette_masks_read_by_their_grey_level(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, 4:] = (255, 255, 255, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert load_mask(tmp_path / "a.png", 8)[:, 4:].all() and not load_mask(tmp_path / "a.png", 8)[:, :4].any()
    Image.fromarray(rgba[:, :, :3]).convert("P").save(tmp_path / "p.png")
    assert np.array_equal(load_mask(tmp_path / "p.png", 8), load_mask(tmp_path / "a.png", 8))


def test_masks_are_read_at_their_bit_depth(tmp_path):
    levels = np.zeros((8, 8), np.uint16)
    levels[:, 4:] = 65535
    levels[0, 0] = 300  # dark in 16 bits: keep (clipping to 8 bits made it 255, fill)
    Image.fromarray(levels).save(tmp_path / "deep.png")
    deep = load_mask(tmp_path / "deep.png", 8)
    assert not deep[:, :4].any() and deep[:, 4:].all()
    floats = np.zeros((8, 8), np.float32)
    floats[:, 4:] = 1.0  # float levels in [0, 1]: 1.0 is white
    Image.fromarray(floats).save(tmp_path / "float.tif")
    assert np.array_equal(load_mask(tmp_path / "float.tif", 8), deep)


def test_a_mask_in_a_refused_format_never_reaches_its_parser(tmp_path, monkeypatch):
    """An EPS "mask" would be handed to Ghostscript, which runs the PostScript in it."""
    from PIL import EpsImagePlugin

    opened = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: opened.append(self))
    (tmp_path / "mask.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"
                                        b"(marker) print showpage\n")
    with pytest.raises(DatasetError, match=r"unsupported format \(EPS\)"):
        load_mask(tmp_path / "mask.png", 8)
    with pytest.raises(DatasetError, match=r"unsupported format \(EPS\)"):
        image_file_size(tmp_path / "mask.png")
    assert opened == []


def test_a_mask_bigger_than_the_pixel_cap_is_refused_before_decoding(tmp_path):
    Image.new("1", (13000, 13000)).save(tmp_path / "huge.png")  # 169 MP, a few kB on disk
    with pytest.raises(DatasetError, match="decompression bomb .* exceeds the 64 MP cap"):
        load_mask(tmp_path / "huge.png", 8)


def test_image_file_size_follows_exif_orientation(tmp_path):
    im = Image.fromarray(np.zeros((10, 30, 3), np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # rotated 90°: shown 10 wide, 30 tall
    im.save(tmp_path / "r.jpg", exif=exif)
    assert image_file_size(tmp_path / "r.jpg") == (10, 30)


@pytest.mark.parametrize("name", ["vae", "gan", "flow", "pixelcnn"])
def test_candidates_keep_the_known_pixels_exactly_and_differ_by_seed(name):
    family = tiny(name)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    fill = np.zeros((8, 8), bool)
    fill[2:6, 2:6] = True
    seen = []
    out = inpaint_candidates(family, image, fill, 3, seed=5, progress=lambda k, n, _: seen.append((k, n)))
    assert out.shape == (3, 8, 8, 3) and out.dtype == np.uint8
    assert [k for k, _ in seen] == sorted(k for k, _ in seen) and seen[-1][0] == seen[-1][1]
    assert (out[:, ~fill] == image[~fill]).all()               # known pixels, bit for bit
    assert all((out[k, fill] != image[fill]).any() for k in range(3))  # the hole is really filled
    again = inpaint_candidates(family, image, fill, 2, seed=5)
    assert np.array_equal(again, out[:2])                       # reproducible by seed
    if name != "gan":  # an untrained G has little variety; sampled fills must differ
        assert not np.array_equal(out[0], out[1])


def test_bad_requests_say_what_is_wrong():
    gan = tiny("gan")  # any family that inpaints
    image = np.zeros((8, 8, 3), np.uint8)
    fill = np.ones((8, 8), bool)
    with pytest.raises(InpaintError, match="nothing to fill"):
        inpaint_candidates(gan, image, np.zeros((8, 8), bool), 1, 0)
    with pytest.raises(InpaintError, match="shape"):
        inpaint_candidates(gan, np.zeros((9, 9, 3), np.uint8), fill, 1, 0)
    with pytest.raises(InpaintError, match="at least 1"):
        inpaint_candidates(gan, image, fill, 0, 0)



def test_candidate_progress_runs_on_one_scale_to_the_end():
    family = tiny("vae")
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    fill = np.zeros((8, 8), bool)
    fill[2:6, 2:6] = True
    seen = []
    candidates = inpaint_candidates(family, image, fill, 3, seed=1, progress=lambda s, t, _i: seen.append((s, t)))
    steps, totals = [s for s, _ in seen], {t for _, t in seen}
    assert len(totals) == 1 and steps == sorted(steps) and steps[-1] == totals.pop()
    assert steps[-1] == 3 * family.config.inpaint_steps
    assert np.array_equal(candidates, inpaint_candidates(family, image, fill, 3, seed=1))


def test_fit_to_model_resamples_the_image_and_keeps_the_mask_a_mask():
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, 4:] = (200, 100, 50)
    fill = np.zeros((8, 8), bool)
    fill[:4] = True
    grey, hole = fit_to_model(image, fill, 16, 1)
    assert grey.shape == (16, 16, 1) and hole.shape == (16, 16) and hole.dtype == bool
    assert hole[:8].all() and not hole[8:].any()
    assert grey[0, 0, 0] == 0 and abs(int(grey[0, 15, 0]) - 124) <= 2  # ITU-R 601 luma of the colour
    same, same_hole = fit_to_model(image, fill, 8, 3)
    assert np.array_equal(same, image) and np.array_equal(same_hole, fill)


def test_export_writes_result_mask_and_strip_with_provenance(tmp_path):
    image = np.full((8, 8, 1), 90, np.uint8)
    fill = np.zeros((8, 8), bool)
    fill[1:3, 2:7] = True
    result = image.copy()
    result[fill] = 250
    paths = export_inpainting(tmp_path / "out" / "fill.png", image, fill, result,
                              {"family": "vae", "run": "r", "seed": 4, "method": "MAP"}, scale=2)
    assert [p.name for p in paths] == ["fill.png", "fill-mask.png", "fill-before-after.png"]
    with Image.open(paths[0]) as im:
        assert im.size == (16, 16) and im.mode == "L"
        assert np.array_equal(np.asarray(im)[::2, ::2], result[:, :, 0])
    for path in paths:
        meta = read_png_metadata(path)
        assert (meta["family"], meta["run"], meta["seed"], meta["method"]) == ("vae", "r", "4", "MAP")
    # The exported mask is one `genstudio inpaint --mask` reads back as the same mask.
    assert np.array_equal(load_mask(paths[1], 8), fill)
    with Image.open(paths[2]) as im:
        strip = np.asarray(im.convert("RGB"))[::2, ::2]
    assert strip.shape == (8 + 4, 3 * 8 + 8, 3)  # three panels, padding 2
    hole_panel = strip[2:10, 12:20]
    assert np.array_equal(hole_panel[~fill], np.repeat(image, 3, 2)[~fill])
    assert (hole_panel[fill][:, 0] > hole_panel[fill][:, 1]).all()  # tinted red
    with pytest.raises(InpaintError, match=r"\.png"):
        export_inpainting(tmp_path / "x.jpg", image, fill, result, {})
    # Replacing the result (the save dialog asked) replaces its companions; a new name never
    # replaces a file that only looks like one.
    assert export_inpainting(paths[0], image, fill, image, {}) == paths
    (tmp_path / "out" / "other-mask.png").write_bytes(b"the user's")
    with pytest.raises(InpaintError, match="other-mask.png already there"):
        export_inpainting(tmp_path / "out" / "other.png", image, fill, result, {})
    assert (tmp_path / "out" / "other-mask.png").read_bytes() == b"the user's"
    assert not (tmp_path / "out" / "other.png").exists()


def test_the_smooth_fill_is_the_harmonic_interpolation_of_the_known_pixels():
    """Known columns 0 (value a) and W−1 (value b) with everything between unknown: the
    discrete Laplace equation with replicated top and bottom edges is solved by the straight
    ramp from a to b, independent of the row; known pixels stay as they were."""
    import torch

    from genstudio.core.families.base import smooth_fill

    width = 10
    x = torch.rand(2, 3, 6, width, generator=torch.Generator().manual_seed(0))
    x[0, :, :, 0], x[0, :, :, -1] = 0.2, 0.8
    x[1, :, :, 0], x[1, :, :, -1] = torch.tensor([[1.0], [0.0], [0.5]]), 0.0
    keep = torch.zeros_like(x, dtype=torch.bool)
    keep[..., 0] = keep[..., -1] = True
    filled = smooth_fill(x, keep)
    ramp = torch.linspace(0, 1, width)
    expected = x[..., :1] + (x[..., -1:] - x[..., :1]) * ramp
    assert torch.allclose(filled, expected, atol=1e-4)
    assert torch.equal(filled[keep], x[keep])


# -- a person's session (InpaintSession) --------------------------------------------------------


def _picture(size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


class _Fill:
    def __init__(self, candidates):
        self.candidates = candidates


def test_continue_back_and_revert_walk_the_images_and_keep_the_mask_history():
    session, first, candidate = InpaintSession(), _picture(seed=0), _picture(seed=1)
    session.start(first, "training image #3")
    session.history.fill_rect((4, 4), (12, 12))
    session.result = _Fill([candidate])
    session.continue_from(candidate, "candidate 1")
    assert session.image is candidate and session.source == "candidate 1"
    assert session.original is first and session.can_revert
    assert not session.history.mask.any() and session.history.can_undo  # cleared, undoably
    assert session.back() and session.image is first and not session.back()
    session.continue_from(candidate, "candidate 1")
    assert session.revert() and session.image is first and session.source == "training image #3"
    assert session.earlier == [] and not session.can_revert


def test_a_new_picture_starts_with_an_empty_mask_and_no_fill():
    session = InpaintSession()
    session.start(_picture(), "a")
    session.history.fill_rect((0, 0), (8, 8))
    session.result = _Fill([])
    session.start(_picture(seed=2), "b")
    assert not session.history.mask.any() and not session.history.can_undo and session.result is None


def test_a_trip_through_a_smaller_model_comes_back_to_the_same_picture():
    session, image = InpaintSession(), _picture()
    session.start(image, "a")
    session.history.fill_rect((4, 4), (8, 8))
    mask = session.history.mask.copy()
    assert session.refit(8, 3) and session.image.shape == (8, 8, 3)
    assert session.refit(16, 3)
    assert np.array_equal(session.image, image) and np.array_equal(session.history.mask, mask)
    assert not InpaintSession().refit(8, 3)  # nothing to refit
