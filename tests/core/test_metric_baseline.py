"""The per-pixel categorical baseline against analytic values."""

import math

import numpy as np
import pytest
import torch

from genstudio.core.families import ImageSpec, bits_per_dim
from genstudio.core.metrics.baseline import PixelCategorical, uniform_bits_per_dim


def test_log_prob_matches_a_hand_computation():
    # Four 1×2 grey images; sub-pixel 0 sees {0, 0, 0, 255}, sub-pixel 1 always 7.
    images = np.array([[[[0], [7]]], [[[0], [7]]], [[[0], [7]]], [[[255], [7]]]], dtype=np.uint8)
    model = PixelCategorical.fit(images, alpha=0.5)
    denom = 4 + 0.5 * 256
    p0_zero, p0_255, p1_seven = 3.5 / denom, 1.5 / denom, 4.5 / denom
    expected = [math.log(p0_zero) + math.log(p1_seven)] * 3 + [math.log(p0_255) + math.log(p1_seven)]
    assert model.log_prob(images) == pytest.approx(expected)
    assert np.exp(model.log_probs).sum(axis=1) == pytest.approx([1.0, 1.0])


def test_fitted_bits_per_dim_is_the_average_entropy_of_the_marginals():
    """Sub-pixels that are fair coins over {0, 255} cost 1 bit; constant ones cost ~0."""
    rng = np.random.default_rng(0)
    n = 20_000
    coins = rng.integers(0, 2, size=(n, 4, 4, 1)).astype(np.uint8) * 255
    constant = np.full((n, 4, 4, 1), 9, dtype=np.uint8)
    images = np.concatenate([coins, constant], axis=2)       # (n, 4, 8, 1): half coins, half constant
    model = PixelCategorical.fit(images, alpha=1e-3)
    zero_freq = (images.reshape(n, -1) == 0).mean(axis=0)           # per sub-pixel, 32 of them

    def entropy_bits(p):
        return -sum(q * math.log2(q) for q in (p, 1 - p) if q > 0)

    analytic = np.mean([entropy_bits(p) for p in zero_freq])
    assert model.bits_per_dim(images) == pytest.approx(analytic, abs=1e-3)
    assert model.bits_per_dim(images) == pytest.approx(0.5, abs=0.01)


def test_uniform_model_gives_eight_bits_per_dim():
    assert uniform_bits_per_dim() == 8.0
    dims = ImageSpec(3, 32).dims
    assert bits_per_dim(dims * math.log(1 / 256), dims) == pytest.approx(8.0)
    # A categorical fitted to no data but the smoothing prior is the uniform model.
    images = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    flat = PixelCategorical(np.full((12, 256), -math.log(256)), (2, 2, 3))
    assert flat.bits_per_dim(images) == pytest.approx(8.0)


def test_samples_follow_the_marginals_and_are_reproducible():
    rng = np.random.default_rng(1)
    images = (rng.random((5000, 2, 2, 1)) < np.array([0.1, 0.5, 0.9, 0.3]).reshape(1, 2, 2, 1)).astype(np.uint8) * 200
    model = PixelCategorical.fit(images, alpha=1e-12)  # unseen values practically impossible
    samples = model.sample(4000, seed=3)
    assert samples.shape == (4000, 2, 2, 1) and samples.dtype == np.uint8
    assert set(np.unique(samples)) <= {0, 200}
    assert (samples == 200).mean(axis=0).ravel() == pytest.approx([0.1, 0.5, 0.9, 0.3], abs=0.03)
    assert np.array_equal(samples, model.sample(4000, seed=3))


def test_shape_mismatch_is_a_clear_error():
    model = PixelCategorical.fit(np.zeros((2, 4, 4, 1), dtype=np.uint8))
    with pytest.raises(ValueError, match="expected uint8 images of shape"):
        model.log_prob(np.zeros((2, 4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError):
        PixelCategorical.fit(torch.zeros(2, 4, 4, 1).numpy())


def test_fitting_in_chunks_counts_exactly_what_one_pass_counts():
    from genstudio.core.metrics.baseline import PixelCategorical

    images = np.random.default_rng(1).integers(0, 256, (50, 3, 2, 1), dtype=np.uint8)
    whole = PixelCategorical.fit(images, chunk=len(images))
    assert np.array_equal(PixelCategorical.fit(images, chunk=7).log_probs, whole.log_probs)
