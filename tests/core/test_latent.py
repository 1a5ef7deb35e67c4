"""Latent-space operations: interpolation paths, principal directions, the 2-D map, encoding a
dataset and probing its known factors. Mathematics first, then the plumbing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from genstudio.core.data import DatasetError, load_image, load_source
from genstudio.core.families import ImageSpec, create_family
from genstudio.core.runs.images import read_gif_metadata, save_gif
from genstudio.core.trained.latent import (
    EncodedSet,
    EncodingCancelled,
    LatentError,
    LatentPosition,
    decode_latents,
    encode_dataset,
    encode_images,
    encode_seconds_per_image,
    interpolate,
    latent_map,
    lerp,
    load_encoded,
    principal_directions,
    prior_latents,
    probe_factors,
    save_encoded,
    slerp,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# -- interpolation ------------------------------------------------------------------------------


def test_slerp_keeps_its_endpoints_and_moves_the_norm_linearly_along_a_great_circle():
    a, b = prior_latents(16, 2, seed=3)
    b = 2.5 * b
    t = torch.linspace(0, 1, 9, dtype=torch.float64)
    path = slerp(a, b, t)
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)
    norms = path.norm(dim=1).double()
    torch.testing.assert_close(norms, (1 - t) * a.norm().double() + t * b.norm().double(), rtol=1e-5, atol=1e-5)
    # Every point lies in the plane of a and b, at an angle from a that grows linearly in t.
    basis, _ = torch.linalg.qr(torch.stack([a, b], 1).double())
    in_plane = path.double() @ basis @ basis.T
    torch.testing.assert_close(in_plane, path.double(), rtol=1e-5, atol=1e-5)
    unit = path.double() / norms[:, None]
    angles = torch.arccos((unit @ (a.double() / a.double().norm())).clamp(-1, 1))
    total = angles[-1]
    torch.testing.assert_close(angles, t * total, rtol=1e-4, atol=1e-4)


def test_slerp_of_equal_norm_latents_stays_on_their_sphere_where_lerp_dips():
    a, b = prior_latents(256, 2, seed=0)
    b = b / b.norm() * a.norm()
    t = torch.linspace(0, 1, 11)
    assert torch.allclose(slerp(a, b, t).norm(dim=1), a.norm().expand(11), rtol=1e-5)
    middle = lerp(a, b, torch.tensor([0.5]))[0]
    assert middle.norm() < 0.8 * a.norm()  # nearly orthogonal: the straight path's middle is ≈ 1/√2


def test_slerp_falls_back_to_the_straight_path_for_parallel_latents():
    a = torch.tensor([1.0, 2.0, 3.0])
    t = torch.linspace(0, 1, 5)
    torch.testing.assert_close(slerp(a, 3 * a, t), lerp(a, 3 * a, t))
    torch.testing.assert_close(slerp(a, -a, t), lerp(a, -a, t))
    torch.testing.assert_close(slerp(torch.zeros(3), a, t), lerp(torch.zeros(3), a, t))


def test_interpolate_checks_its_arguments():
    a, b = torch.zeros(4), torch.ones(4)
    assert interpolate(a, b, 5, "linear").shape == (5, 4)
    torch.testing.assert_close(interpolate(a, b, 3, "linear")[1], torch.full((4,), 0.5))
    with pytest.raises(LatentError, match="at least 2"):
        interpolate(a, b, 1)
    with pytest.raises(LatentError, match="spherical or linear"):
        interpolate(a, b, 3, "cubic")
    with pytest.raises(LatentError, match="differ in size"):
        interpolate(a, torch.ones(5), 3)


def test_prior_latents_are_seeded():
    assert torch.equal(prior_latents(8, 3, 1), prior_latents(8, 3, 1))
    assert not torch.equal(prior_latents(8, 3, 1), prior_latents(8, 3, 2))


# -- principal directions and the map -----------------------------------------------------------


def anisotropic_gaussian(n=4000, seed=0):
    """Latents with standard deviations 5, 2, 1, 0.1 along a random rotation of the axes."""
    generator = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, generator=generator))
    stds = torch.tensor([5.0, 2.0, 1.0, 0.1])
    z = torch.randn(n, 4, generator=generator) * stds
    return z @ rotation.T + torch.tensor([1.0, -2.0, 0.5, 3.0]), rotation, stds


def test_principal_directions_are_orthonormal_and_recover_the_known_axes():
    latents, rotation, stds = anisotropic_gaussian()
    basis = principal_directions(latents, 3)
    assert basis.count == 3
    torch.testing.assert_close(basis.directions @ basis.directions.T, torch.eye(3), atol=1e-5, rtol=0)
    for k in range(3):  # each direction is ± the true axis
        assert abs(float(basis.directions[k] @ rotation[:, k])) > 0.99
    torch.testing.assert_close(basis.std, stds[:3], rtol=0.05, atol=0)
    expected = stds.pow(2) / stds.pow(2).sum()
    torch.testing.assert_close(basis.explained, expected[:3], rtol=0.05, atol=0.005)
    # Deterministic signs: the same data gives the same sliders, shuffled or not.
    shuffled = principal_directions(latents[torch.randperm(len(latents))], 3)
    torch.testing.assert_close(shuffled.directions, basis.directions, atol=1e-4, rtol=0)


def test_a_slider_moves_one_coordinate_and_keeps_the_rest():
    latents, _, _ = anisotropic_gaussian(500)
    basis = principal_directions(latents, 2)
    z = latents[7]
    before = basis.coordinates(z)[0]
    moved = basis.with_coordinate(z, 1, 2.5)
    after = basis.coordinates(moved)[0]
    assert math.isclose(float(after[1]), 2.5, abs_tol=1e-4)
    assert math.isclose(float(after[0]), float(before[0]), abs_tol=1e-4)
    # The part of z outside the top two directions is untouched.
    residual = lambda v: v - basis.mean - (v - basis.mean) @ basis.directions.T @ basis.directions  # noqa: E731
    torch.testing.assert_close(residual(moved), residual(z), atol=1e-4, rtol=0)


def test_principal_directions_need_two_points_and_never_exceed_the_rank():
    with pytest.raises(LatentError, match="at least 2"):
        principal_directions(torch.zeros(1, 5), 3)
    assert principal_directions(torch.randn(3, 10), 8).count == 2  # N − 1


def test_the_map_of_a_2d_latent_is_the_latent_itself():
    latents = torch.randn(50, 2)
    mapped = latent_map(latents)
    assert mapped.basis is None and np.array_equal(mapped.points, latents.numpy())
    torch.testing.assert_close(mapped.to_latent(0.3, -1.0), torch.tensor([0.3, -1.0]))


def test_a_map_point_decodes_to_the_latent_it_was_projected_from_when_it_lies_in_the_plane():
    latents, _, _ = anisotropic_gaussian(300)
    mapped = latent_map(latents)
    assert mapped.points.shape == (300, 2) and "PC1" in mapped.axis_names[0]
    in_plane = mapped.to_latent(4.0, -1.5)
    again = (in_plane - mapped.basis.mean) @ mapped.basis.directions[:2].T
    torch.testing.assert_close(again, torch.tensor([4.0, -1.5]), atol=1e-4, rtol=0)
    assert np.allclose(mapped.project(in_plane), [[4.0, -1.5]], atol=1e-4)
    assert np.array_equal(mapped.project(latents), mapped.points)
    # A data point maps back onto its projection: the nearest in-plane latent.
    x, y = mapped.points[0]
    projection = mapped.to_latent(float(x), float(y))
    assert (latents[0] - projection).norm() <= (latents[0] - mapped.basis.mean).norm() + 1e-5


# -- factor probes ------------------------------------------------------------------------------


def synthetic_encoded(latents, factors, names, circular=(), labels=None, classes=()):
    n = len(latents)
    return EncodedSet(latents=latents, indices=np.arange(n), labels=labels if labels is not None else np.zeros(n, np.int64),
                      class_names=list(classes), factors=factors, factor_names=list(names),
                      circular_factors=list(circular), requested=n)


def test_a_probe_finds_a_factor_the_latent_encodes_and_not_one_it_does_not():
    rng = np.random.default_rng(0)
    n = 600
    factors = rng.random((n, 3)).astype(np.float32)  # a, b (encoded), c (not)
    mixing = rng.normal(size=(2, 8))
    latents = torch.from_numpy(factors[:, :2] @ mixing + 0.01 * rng.normal(size=(n, 8))).float()
    probes = {p.name: p for p in probe_factors(synthetic_encoded(latents, factors, "abc"))}
    assert probes["a"].score > 0.99 and probes["b"].score > 0.99
    assert probes["c"].score < 0.1
    assert probes["a"].measure == "R²" and "R² 0.99" in probes["a"].describe() or "R² 1.00" in probes["a"].describe()


def test_a_circular_factor_is_probed_through_its_angle():
    rng = np.random.default_rng(1)
    n = 800
    hue = rng.random(n).astype(np.float32)
    # The latent holds the hue as a point on a circle: linear in (cos, sin), not in the hue itself.
    latents = torch.from_numpy(np.stack([np.cos(2 * np.pi * hue), np.sin(2 * np.pi * hue),
                                         rng.normal(size=n)], 1)).float()
    as_circle = probe_factors(synthetic_encoded(latents, hue[:, None], ["hue"], circular=["hue"]))[0]
    as_line = probe_factors(synthetic_encoded(latents, hue[:, None], ["hue"]))[0]
    assert as_circle.score > 0.99 and as_line.score < 0.9


def test_class_accuracy_is_scored_against_the_majority_rate():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 600)
    centres = np.array([[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0]])
    latents = torch.from_numpy(centres[labels] + rng.normal(size=(600, 3))).float()
    encoded = synthetic_encoded(latents, None, [], labels=labels, classes=["a", "b", "c"])
    (probe,) = probe_factors(encoded)
    assert probe.measure == "accuracy" and probe.score > 0.95 and 0.3 < probe.chance < 0.45
    with pytest.raises(LatentError, match="at least 10"):
        probe_factors(synthetic_encoded(latents[:5], None, [], labels=labels[:5], classes=["a", "b", "c"]))


# -- encoding and decoding through a family -----------------------------------------------------


@pytest.fixture(scope="module")
def shapes16():
    return load_source("builtin:shapes", 16)


def tiny(name, spec, **config):
    from genstudio.core.families import family_class

    family = create_family(name, spec, {**family_class(name).TINY, **config}, "cpu", seed=0)
    family.eval_mode()
    return family


def test_encoding_a_dataset_keeps_images_labels_and_factors_row_for_row(shapes16):
    vae = tiny("vae", ImageSpec(channels=3, size=16))
    seen = []
    encoded = encode_dataset(vae, shapes16, 50, seed=4, batch=20, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(20, 50), (40, 50), (50, 50)]
    assert encoded.latents.shape == (50, vae.latent_dim) and len(set(encoded.indices)) == 50
    np.testing.assert_array_equal(encoded.labels, shapes16.labels[encoded.indices])
    np.testing.assert_array_equal(encoded.factors, shapes16.factors[encoded.indices])
    assert encoded.circular_factors == ["rotation", "hue"]
    x = torch.from_numpy(shapes16.images[encoded.indices[:3]]).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(encoded.latents[:3], vae.encode(x))
    again = encode_dataset(vae, shapes16, 50, seed=4, batch=50)
    assert np.array_equal(again.indices, encoded.indices)


def test_stopping_an_encoding_keeps_what_was_done(shapes16):
    vae = tiny("vae", ImageSpec(channels=3, size=16))
    batches = []
    encoded = encode_dataset(vae, shapes16, 100, batch=30, progress=lambda d, t: batches.append(d),
                             should_stop=lambda: len(batches) >= 2)
    assert len(encoded) == 60 and encoded.requested == 100
    with pytest.raises(EncodingCancelled):
        encode_dataset(vae, shapes16, 100, should_stop=lambda: True)


def test_the_encoder_is_timed_so_that_an_inversion_can_be_asked_for_first(shapes16):
    # An encoder network takes one pass; GAN inversion takes inversion_steps × restarts passes
    # with gradients, and the timing must show it.
    spec = ImageSpec(channels=3, size=16)
    network = encode_seconds_per_image(tiny("vae", spec), shapes16, probe=2)
    inversion = encode_seconds_per_image(tiny("gan", spec, inversion_steps=50, inversion_restarts=2), shapes16, probe=2)
    assert 0 < network < inversion / 5


def test_an_encoding_is_kept_as_arrays_and_read_back_only_when_it_matches(shapes16, tmp_path):
    vae = tiny("vae", ImageSpec(channels=3, size=16))
    encoded = encode_dataset(vae, shapes16, 30)
    path = tmp_path / "kept" / "e.npz"
    save_encoded(path, encoded)
    assert [p.name for p in path.parent.iterdir()] == ["e.npz"]  # no temp file left behind
    again = load_encoded(path, shapes16, vae.latent_dim, 30)
    assert torch.equal(again.latents, encoded.latents) and np.array_equal(again.labels, encoded.labels)
    assert load_encoded(path, shapes16, vae.latent_dim, 31) is None     # another count
    assert load_encoded(path, shapes16, vae.latent_dim + 1, 30) is None  # another model
    assert load_encoded(tmp_path / "missing.npz", shapes16, vae.latent_dim, 30) is None
    path.write_bytes(path.read_bytes()[:100])                             # damaged
    assert load_encoded(path, shapes16, vae.latent_dim, 30) is None
    # An object array would need unpickling: refused, never loaded.
    with open(path, "wb") as f:
        np.savez(f, latents=np.array([object()], dtype=object), indices=np.arange(1))
    assert load_encoded(path, shapes16, vae.latent_dim, 30) is None


def test_encoding_refuses_what_cannot_work(shapes16):
    with pytest.raises(LatentError, match="cannot encode"):
        encode_dataset(tiny("pixelcnn", ImageSpec(channels=3, size=16)), shapes16, 10)
    with pytest.raises(LatentError, match="16 px × 3 channels, the model's 8 px"):
        encode_dataset(tiny("vae", ImageSpec(channels=3, size=8)), shapes16, 10)
    with pytest.raises(LatentError, match="cannot decode"):
        decode_latents(tiny("ebm", ImageSpec(channels=3, size=16)), torch.zeros(1, 4))


def test_the_flow_decodes_its_encoding_to_the_same_pixels(shapes16):
    flow = tiny("flow", ImageSpec(channels=3, size=16))
    images = [shapes16.images[i] for i in range(4)]
    latents = encode_images(flow, images)
    assert latents.shape == (4, 16 * 16 * 3)
    assert np.array_equal(decode_latents(flow, latents), np.stack(images))


def test_one_latent_decodes_to_the_image_of_a_batch_with_its_time(shapes16):
    from genstudio.core.trained.latent import decode_one

    vae = tiny("vae", ImageSpec(channels=3, size=16))
    a, b = prior_latents(vae.latent_dim, 2, 0)
    decoded = decode_one(vae, b)
    assert decoded.latent is b and decoded.decode_ms > 0
    assert np.array_equal(decoded.image, decode_latents(vae, torch.stack([a, b]))[1])


def test_decoding_a_path_gives_its_endpoints_images(shapes16):
    vae = tiny("vae", ImageSpec(channels=3, size=16))
    a, b = prior_latents(vae.latent_dim, 2, 0)
    frames = decode_latents(vae, interpolate(a, b, 6), batch=4)
    assert frames.shape == (6, 16, 16, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames[0], decode_latents(vae, a[None])[0])
    assert np.array_equal(frames[-1], decode_latents(vae, b[None])[0])
    with pytest.raises(LatentError, match="latents of 5 dimensions"):
        decode_latents(vae, torch.zeros(1, 5))


# -- files --------------------------------------------------------------------------------------


def test_load_image_prepares_a_file_like_a_dataset_image(tmp_path):
    path = tmp_path / "wide.png"
    Image.fromarray(np.full((20, 40, 3), (200, 10, 10), np.uint8)).save(path)
    rgb = load_image(path, 16, 3)
    assert rgb.shape == (16, 16, 3) and (rgb == (200, 10, 10)).all()
    grey = load_image(path, 16, 1)
    assert grey.shape == (16, 16, 1)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(DatasetError, match="text.png"):
        load_image(tmp_path / "text.png", 16, 3)
    with pytest.raises(DatasetError, match="no such image file"):
        load_image(tmp_path / "missing.png", 16, 3)


def test_a_gif_holds_the_frames_forward_and_back_with_its_metadata(tmp_path):
    frames = np.stack([np.full((8, 8, 1), v, np.uint8) for v in (0, 100, 200, 255)])
    save_gif(tmp_path / "a.gif", frames, {"family": "vae", "steps": 4}, scale=2)
    with Image.open(tmp_path / "a.gif") as im:
        assert im.n_frames == 6 and im.size == (16, 16) and im.info.get("loop") == 0
        shown = []
        for i in range(im.n_frames):
            im.seek(i)
            shown.append(int(np.asarray(im.convert("L"))[0, 0]))
    assert shown == [0, 100, 200, 255, 200, 100]
    assert read_gif_metadata(tmp_path / "a.gif") == {"family": "vae", "steps": "4"}
    colour = np.stack([np.full((8, 8, 3), (10 * i, 255 - 10 * i, 7), np.uint8) for i in range(5)])
    save_gif(tmp_path / "c.gif", colour, bounce=False)
    with Image.open(tmp_path / "c.gif") as im:
        assert im.n_frames == 5
        im.seek(3)
        assert tuple(np.asarray(im.convert("RGB"))[0, 0]) == (30, 225, 7)


# -- where the Explore tab stands (LatentPosition) ----------------------------------------------


def test_raw_sliders_read_and_move_one_dimension_from_the_offset():
    position = LatentPosition(10)
    position.set(torch.arange(10.0), origin=True)
    position.offset = 6
    assert position.slider_values(6) == [6.0, 7.0, 8.0, 9.0, 0.0, 0.0]  # past the last: 0
    position.move(1, -2.5)
    assert position.z[7] == -2.5 and torch.equal(position.z[:7], torch.arange(7.0))
    assert position.reset() and torch.equal(position.z, torch.arange(10.0))


def test_principal_sliders_move_along_one_direction_and_keep_the_rest():
    latents = torch.randn(200, 5, generator=torch.Generator().manual_seed(0)) * torch.tensor([3.0, 2, 1, 0.5, 0.1])
    basis = principal_directions(latents, 3)
    position = LatentPosition(5)
    position.set_axes(raw=False, basis=basis)
    assert position.principal
    position.set(latents[0])
    before = basis.coordinates(position.z)[0]
    outside = position.z - before @ (basis.std[:, None] * basis.directions)  # the part off the top 3
    position.move(1, 2.0)
    after = basis.coordinates(position.z)[0]
    assert after[1] == pytest.approx(2.0, abs=1e-5)
    torch.testing.assert_close(after[[0, 2]], before[[0, 2]])
    torch.testing.assert_close(position.z - after @ (basis.std[:, None] * basis.directions), outside)
    assert position.slider_values(4)[:3] == pytest.approx(after.tolist()) and position.slider_values(4)[3] == 0.0


def test_without_encoded_images_the_sliders_stay_raw_and_reset_needs_an_origin():
    position = LatentPosition(3)
    position.set_axes(raw=False, basis=None)
    assert position.raw and not position.principal
    assert not position.reset()
    assert position.slider_values(2) == [0.0, 0.0]
