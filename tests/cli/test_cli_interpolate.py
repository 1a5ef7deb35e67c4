"""`genstudio interpolate`: frames between two images or seeds, as a PNG strip or a GIF."""

import numpy as np
import pytest
from cli_helpers import genstudio
from PIL import Image

from genstudio.core.runs.images import read_gif_metadata, read_png_metadata

TINY = ["--size", "16", "--batch", "8", "--set", "base_channels=4", "--set", "latent_dim=3",
        "--log-every", "2", "--sample-every", "0", "--checkpoint-every", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("interpolate") / "run"
    genstudio("train", "--family", "vae", "--data", "builtin:tins", "--out", run, "--steps", "4", *TINY)
    return run


def test_a_strip_from_a_seed_to_an_image_file(vae_run, tmp_path):
    picture = tmp_path / "big.png"  # any size: prepared like a dataset image
    Image.fromarray(np.full((40, 40, 3), (120, 30, 200), np.uint8)).save(picture)
    out = tmp_path / "strip.png"
    result = genstudio("interpolate", vae_run, "--from", "seed:3", "--to", picture, "--steps", "6", "--out", out)
    assert "wrote 6 frames (spherical)" in result.stdout
    with Image.open(out) as strip:
        assert strip.size == (6 * 18 + 2, 18 + 2)  # frames at the model's 16 px, 2 px apart
    meta = read_png_metadata(out)
    assert meta["family"] == "vae" and meta["start"] == "seed:3" and meta["steps"] == "6" and "seed" not in meta
    again = tmp_path / "again.png"
    genstudio("interpolate", vae_run, "--from", "seed:3", "--to", picture, "--steps", "6", "--out", again)
    assert again.read_bytes() == out.read_bytes()  # reproducible to the byte


def test_a_gif_between_two_seeds_with_a_scale(vae_run, tmp_path):
    out = tmp_path / "walk.gif"
    genstudio("interpolate", vae_run, "--from", "seed:1", "--to", "seed:2", "--steps", "4", "--mode", "linear",
              "--scale", "3", "--out", out)
    with Image.open(out) as gif:
        assert gif.n_frames == 6 and gif.size == (48, 48)
    assert read_gif_metadata(out)["mode"] == "linear"


@pytest.mark.parametrize("args,message", [
    (["--from", "seed:1", "--to", "seed:2", "--out", "{tmp}/x.jpg"], ".png or .gif"),
    (["--from", "seed:x", "--to", "seed:2", "--out", "{tmp}/x.png"], "seed:N"),
    (["--from", "{tmp}/missing.png", "--to", "seed:2", "--out", "{tmp}/x.png"], "no such image file"),
    (["--from", "seed:1", "--to", "seed:2", "--steps", "1", "--out", "{tmp}/x.png"], "from 2 to 1000"),
])
def test_bad_input_exits_1_with_one_line(vae_run, tmp_path, args, message):
    result = genstudio("interpolate", vae_run, *[a.replace("{tmp}", str(tmp_path)) for a in args], check=False)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "x.png").exists()
