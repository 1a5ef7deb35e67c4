"""`genstudio inpaint`: a mask file (white = fill), candidates by seed, known pixels kept."""

import numpy as np
import pytest
from cli_helpers import genstudio
from PIL import Image

from genstudio.core.data import load_image
from genstudio.core.runs.images import read_png_metadata

TINY = ["--size", "16", "--batch", "8", "--set", "base_channels=4", "--set", "latent_dim=3",
        "--log-every", "2", "--sample-every", "0", "--checkpoint-every", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("inpaint") / "run"
    genstudio("train", "--family", "gan", "--data", "builtin:shapes", "--out", run, "--steps", "4", *TINY,
              "--set", "inversion_steps=20", "--set", "inversion_restarts=1")
    return run


@pytest.fixture
def picture_and_mask(tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "picture.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return tmp_path / "picture.png", tmp_path / "mask.png"


def test_one_fill_keeps_the_known_pixels(gan_run, picture_and_mask, tmp_path):
    picture, mask = picture_and_mask
    out = tmp_path / "filled.png"
    result = genstudio("inpaint", gan_run, "--image", picture, "--mask", mask, "--out", out, "--seed", "3")
    assert "filled 64 of 256 pixels" in result.stdout
    with Image.open(out) as im:
        filled = np.asarray(im.convert("RGB"))
    original = load_image(picture, 16, 3)
    hole = np.zeros((16, 16), bool)
    hole[4:12, 4:12] = True
    assert filled.shape == (16, 16, 3)
    assert np.array_equal(filled[~hole], original[~hole]) and not np.array_equal(filled[hole], original[hole])
    meta = read_png_metadata(out)
    assert meta["seed"] == "3" and meta["mask"] == "mask.png" and meta["method"].startswith("Latent optimisation")


def test_candidates_side_by_side_and_reproducible(gan_run, picture_and_mask, tmp_path):
    picture, mask = picture_and_mask
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for out in (a, b):
        genstudio("inpaint", gan_run, "--image", picture, "--mask", mask, "--out", out, "--n", "3", "--seed", "7")
    assert a.read_bytes() == b.read_bytes()
    with Image.open(a) as strip:
        assert strip.size == (3 * 18 + 2, 18 + 2)


def test_a_mask_of_another_size_is_refused_in_one_line(gan_run, picture_and_mask, tmp_path):
    picture, _ = picture_and_mask
    Image.fromarray(np.full((20, 30), 255, np.uint8)).save(tmp_path / "odd.png")
    result = genstudio("inpaint", gan_run, "--image", picture, "--mask", tmp_path / "odd.png",
                       "--out", tmp_path / "x.png", check=False)
    assert result.returncode == 1 and "the mask is 30×20 px but the image is 32×32" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.png").exists()
