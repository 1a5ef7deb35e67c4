"""Metric mathematics against slow, independently written references and known values.

References here are deliberately naive: eigenvalues of the non-symmetric product Σ1Σ2, nuclear
norms of factor products, and Python loops over pairs and points.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genstudio.core.metrics import kid as kid_module
from genstudio.core.metrics.distances import (
    knn_radii,
    nearest_neighbours,
    pairwise_distances,
)
from genstudio.core.metrics.fid import feature_statistics, fid_from_features, frechet_distance
from genstudio.core.metrics.kid import kid, mmd2_unbiased
from genstudio.core.metrics.memorisation import memorisation_report
from genstudio.core.metrics.prdc import density_coverage, precision_recall

# ---------------------------------------------------------------- references


def ref_frechet_eigvals(mu1, s1, mu2, s2):
    """tr sqrt(Σ1Σ2) from the eigenvalues of the non-symmetric product: fine when well conditioned."""
    root_trace = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    return ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * root_trace


def ref_trace_sqrt_from_factors(a, b):
    """tr sqrt(Σ1Σ2) for Σ1 = AᵀA, Σ2 = BᵀB: the sqrt-eigenvalues of Σ1Σ2 are the singular values
    of A Bᵀ, which an SVD gets to absolute accuracy eps·‖ABᵀ‖ even when Σ1, Σ2 are singular."""
    return np.linalg.svd(a @ b.T, compute_uv=False).sum()


def centred_factor(x):
    """A with AᵀA = the unbiased covariance of the rows of x."""
    return (x - x.mean(0)) / np.sqrt(len(x) - 1)


def ref_kernel(a, b):
    return (float(np.dot(a, b)) / len(a) + 1.0) ** 3


def ref_mmd2(x, y):
    m, n = len(x), len(y)
    xx = sum(ref_kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(ref_kernel(y[i], y[j]) for i in range(n) for j in range(n) if i != j)
    xy = sum(ref_kernel(x[i], y[j]) for i in range(m) for j in range(n))
    return xx / (m * (m - 1)) + yy / (n * (n - 1)) - 2 * xy / (m * n)


def ref_radii(x, k):
    return np.array(
        [
            sorted(np.linalg.norm(x[i] - x[j]) for j in range(len(x)) if j != i)[k - 1]
            for i in range(len(x))
        ]
    )


def ref_inside_fraction(points, centres, radii):
    """Fraction of points in at least one closed ball B(centre, radius)."""
    balls = list(zip(centres, radii, strict=True))
    return float(np.mean([any(np.linalg.norm(p - c) <= r for c, r in balls) for p in points]))


def ref_precision_recall(real, fake, k):
    precision = ref_inside_fraction(fake, real, ref_radii(real, k))
    recall = ref_inside_fraction(real, fake, ref_radii(fake, k))
    return precision, recall


def ref_density_coverage(real, fake, k):
    balls = list(zip(real, ref_radii(real, k), strict=True))  # open balls, as Naeem et al.
    hits = sum(np.linalg.norm(f - c) < r for f in fake for c, r in balls)
    coverage = np.mean([any(np.linalg.norm(f - c) < r for f in fake) for c, r in balls])
    return hits / (k * len(fake)), float(coverage)


def random_covariance(rng, dim, samples):
    return feature_statistics(rng.normal(size=(samples, dim)) @ rng.normal(size=(dim, dim)))


# ---------------------------------------------------------------- Fréchet distance


def test_frechet_matches_product_eigenvalue_reference_on_well_conditioned_data():
    rng = np.random.default_rng(0)
    for dim in (1, 3, 16):
        mu1, s1 = random_covariance(rng, dim, 500)
        mu2, s2 = random_covariance(rng, dim, 500)
        expected = ref_frechet_eigvals(mu1, s1, mu2, s2)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_frechet_known_values():
    rng = np.random.default_rng(1)
    mu, sigma = random_covariance(rng, 5, 100)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0, abs=1e-9 * np.trace(sigma))
    shift = np.array([1.0, -2.0, 0.5])
    assert frechet_distance(np.zeros(3), np.eye(3), shift, np.eye(3)) == pytest.approx(5.25)
    # 1-D: (μ1 − μ2)² + (σ1 − σ2)², given variances σ².
    assert frechet_distance([1.0], [[4.0]], [-2.0], [[0.25]]) == pytest.approx(9 + 1.5**2)


def test_feature_statistics_match_numpy_cov():
    x = np.random.default_rng(2).normal(size=(30, 4)).astype(np.float32)
    mu, sigma = feature_statistics(x)
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(0))
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False))
    assert feature_statistics(x[:, :1])[1].shape == (1, 1)
    with pytest.raises(ValueError):
        feature_statistics(x[:1])


def test_frechet_with_fewer_samples_than_dimensions_matches_precise_reference():
    rng = np.random.default_rng(3)
    x1, x2 = rng.normal(size=(40, 64)), rng.normal(1.0, 2.0, size=(40, 64))  # rank 39 each
    (mu1, s1), (mu2, s2) = feature_statistics(x1), feature_statistics(x2)
    root_trace = ref_trace_sqrt_from_factors(centred_factor(x1), centred_factor(x2))
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * root_trace
    for got in (frechet_distance(mu1, s1, mu2, s2), fid_from_features(x1, x2)):
        assert np.isfinite(got) and got >= 0
        assert got == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-6 * np.trace(s1))
    assert fid_from_features(x1, x1) == pytest.approx(0, abs=1e-9 * np.trace(s1))


@pytest.mark.parametrize("samples", [(20, 30), (30, 20), (200, 150)])
def test_fid_from_features_sample_space_path_agrees_with_covariance_path(samples):
    rng = np.random.default_rng(samples[0])
    x1, x2 = rng.normal(size=(samples[0], 25)), rng.normal(0.3, 0.8, size=(samples[1], 25))
    expected = frechet_distance(*feature_statistics(x1), *feature_statistics(x2))
    assert fid_from_features(x1, x2) == pytest.approx(expected, rel=1e-9)


def test_frechet_with_eigenvalues_down_to_1e_12_and_exact_rank_deficiency():
    rng = np.random.default_rng(4)
    dim = 64
    q1, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    q2, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    a = np.sqrt(np.logspace(0, -12, dim))[:, None] * q1.T  # Σ1 = AᵀA, eigenvalues 1 … 1e-12
    b = np.sqrt(np.logspace(1, -12, dim))[:, None] * q2.T
    low_rank = rng.normal(size=(10, dim))  # Σ = CᵀC of rank exactly 10
    for f1, f2 in ((a, b), (a, low_rank), (low_rank, b), (low_rank, rng.normal(size=(7, dim)))):
        s1, s2 = f1.T @ f1, f2.T @ f2
        expected = np.trace(s1) + np.trace(s2) - 2 * ref_trace_sqrt_from_factors(f1, f2)
        got = frechet_distance(np.zeros(dim), s1, np.zeros(dim), s2)
        assert np.isfinite(got) and got >= 0
        assert got == pytest.approx(expected, abs=1e-7 * (np.trace(s1) + np.trace(s2)))
        assert frechet_distance(np.zeros(dim), s1, np.zeros(dim), s1) < 1e-6 * np.trace(s1)


def test_frechet_rejects_bad_input():
    for first, second in ((np.eye(2), -np.eye(2)), (np.diag([1.0, -1.0]), np.eye(2))):
        with pytest.raises(ValueError, match="positive semi-definite"):
            frechet_distance(np.zeros(2), first, np.zeros(2), second)
    with pytest.raises(ValueError, match="not symmetric"):
        frechet_distance(np.zeros(2), [[1.0, 0.5], [0.0, 1.0]], np.zeros(2), np.eye(2))
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), samples=st.integers(2, 30), dim=st.integers(1, 24))
def test_frechet_is_symmetric_nonnegative_and_zero_on_itself(seed, samples, dim):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, dim)) * rng.uniform(0.01, 10, size=dim)
    y = rng.normal(size=(samples + 3, dim)) + rng.normal()
    forward, backward = fid_from_features(x, y), fid_from_features(y, x)
    assert forward >= 0 and backward >= 0
    scale = np.trace(feature_statistics(x)[1]) + np.trace(feature_statistics(y)[1])
    assert forward == pytest.approx(backward, rel=1e-6, abs=1e-9 * scale)
    assert fid_from_features(x, x) <= 1e-6 * np.trace(feature_statistics(x)[1]) + 1e-300


# ---------------------------------------------------------------- KID


def test_mmd2_matches_loop_reference_on_unequal_sets():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(20, 8)), rng.normal(0.3, 1.2, size=(25, 8))
    assert mmd2_unbiased(x, y) == pytest.approx(ref_mmd2(x, y), rel=1e-12)


def test_kid_with_one_whole_set_subset_equals_reference():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(20, 8)), rng.normal(0.5, 1.0, size=(20, 8)).astype(np.float32)
    mean, std = kid(x, y, subset_size=20, subsets=1)
    assert mean == pytest.approx(ref_mmd2(x, y.astype(np.float64)), rel=1e-12)
    assert std == 0.0
    # Every subset of the whole sets is a permutation of them: same value, no spread.
    mean3, std3 = kid(x, y, subset_size=20, subsets=3)
    assert mean3 == pytest.approx(mean, rel=1e-12) and std3 == pytest.approx(0, abs=1e-12)


def test_kid_near_zero_for_same_distribution_and_positive_for_shifted():
    rng = np.random.default_rng(7)
    real, same = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    mean, std = kid(real, same, subset_size=100, subsets=50)
    assert abs(mean) < std
    shifted_mean, shifted_std = kid(real, same + 0.5, subset_size=100, subsets=50)
    assert shifted_mean > 5 * shifted_std and shifted_mean > 10 * abs(mean)


def test_kid_subset_size_adapts_seed_is_deterministic_and_errors_are_clear():
    rng = np.random.default_rng(8)
    real, fake = rng.normal(size=(300, 6)), rng.normal(size=(200, 6))
    assert kid(real, fake, subsets=5) == kid(real, fake, subset_size=200, subsets=5)
    assert kid(real, fake, subsets=5, seed=1) != kid(real, fake, subsets=5, seed=2)
    with pytest.raises(ValueError, match="subset_size"):
        kid(real, fake, subset_size=201)
    with pytest.raises(ValueError, match="at least 2 fake"):
        kid(real, fake[:1])


def test_kid_direct_path_equals_cached_kernel_path(monkeypatch):
    rng = np.random.default_rng(9)
    real, fake = rng.normal(size=(60, 5)), rng.normal(0.2, 1, size=(50, 5))
    cached = kid(real, fake, subset_size=30, subsets=4, seed=3)
    monkeypatch.setattr(kid_module, "_KERNEL_CACHE_ELEMENTS", 0)
    direct = kid(real, fake, subset_size=30, subsets=4, seed=3)
    np.testing.assert_allclose(direct, cached, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- distances and k-NN radii


def test_knn_radii_equal_brute_force_and_chunking_changes_nothing():
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(37, 6)), rng.normal(size=(23, 6))
    brute = np.linalg.norm(x[:, None] - y[None], axis=-1)
    np.testing.assert_allclose(pairwise_distances(x, y), brute, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        pairwise_distances(x, y, max_block_bytes=100), pairwise_distances(x, y), rtol=1e-13
    )
    for k in (1, 3, 36):
        np.testing.assert_allclose(knn_radii(x, k), ref_radii(x, k), rtol=1e-10)
        np.testing.assert_allclose(
            knn_radii(x, k, max_block_bytes=300), knn_radii(x, k), rtol=1e-13
        )
    duplicated = np.concatenate([x[:5], x[:5]])
    np.testing.assert_array_equal(knn_radii(duplicated, 1), 0.0)
    with pytest.raises(ValueError):
        knn_radii(x, 37)


# ---------------------------------------------------------------- precision/recall, density/coverage


@pytest.mark.parametrize("k", [1, 3, 5])
def test_prdc_equal_loop_references(k):
    rng = np.random.default_rng(11 + k)
    real, fake = rng.normal(size=(30, 5)), rng.normal(0.4, 1.3, size=(25, 5))
    assert precision_recall(real, fake, k) == ref_precision_recall(real, fake, k)
    assert density_coverage(real, fake, k) == pytest.approx(
        ref_density_coverage(real, fake, k), abs=1e-15
    )
    assert precision_recall(real, fake, k, max_block_bytes=64) == precision_recall(real, fake, k)
    assert density_coverage(real, fake, k, max_block_bytes=64) == density_coverage(real, fake, k)


def test_prdc_known_cases():
    rng = np.random.default_rng(12)
    real = rng.normal(size=(60, 4))
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    density, coverage = density_coverage(real, real.copy())
    assert coverage == 1.0 and density == pytest.approx(1.0)  # each ball: centre + k − 1 others
    far = real + 1000.0
    assert precision_recall(real, far) == (0.0, 0.0)
    assert density_coverage(real, far) == (0.0, 0.0)


def test_prdc_fake_covering_one_of_two_clusters():
    rng = np.random.default_rng(13)
    cluster_a, cluster_b = rng.normal(size=(100, 3)), rng.normal(50.0, 1.0, size=(100, 3))
    real = np.concatenate([cluster_a, cluster_b])
    fake = rng.normal(size=(100, 3))  # a fresh sample of cluster A only
    precision, recall = precision_recall(real, fake)
    density, coverage = density_coverage(real, fake)
    assert precision > 0.9 and 0.4 < recall <= 0.5
    assert 0.35 < coverage <= 0.5 and density > 0.7


# ---------------------------------------------------------------- nearest neighbours, memorisation


def test_nearest_neighbours_match_brute_force_with_small_chunks():
    rng = np.random.default_rng(14)
    queries, references = rng.normal(size=(19, 7)), rng.normal(size=(31, 7))
    brute = np.linalg.norm(queries[:, None] - references[None], axis=-1)
    index, distance = nearest_neighbours(queries, references, chunk=4)
    np.testing.assert_array_equal(index, brute.argmin(1))
    np.testing.assert_allclose(distance, brute.min(1), rtol=1e-12)
    assert nearest_neighbours(queries, references)[0].tolist() == index.tolist()


def test_memorisation_finds_planted_copies_first():
    rng = np.random.default_rng(15)
    train = rng.integers(0, 256, size=(50, 8, 8, 3), dtype=np.uint8)
    samples = rng.integers(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)
    samples[11], samples[3] = train[5], train[17]
    report = memorisation_report(samples, train, closest=4)
    assert report.nearest_index[3] == 17 and report.nearest_index[11] == 5
    assert report.rms_distance[3] == 0.0 and report.rms_distance[11] == 0.0
    assert report.closest[:2] == ((3, 17, 0.0), (11, 5, 0.0))
    assert len(report.closest) == 4 and report.closest[2][2] > 0.1
    assert [c[2] for c in report.closest] == sorted(c[2] for c in report.closest)
    assert report.min_distance == 0.0 and report.fraction_below_threshold == pytest.approx(2 / 20)
    assert report.median_distance == pytest.approx(np.median(report.rms_distance))


def test_memorisation_distance_is_rms_on_unit_scale():
    black = np.zeros((1, 2, 2, 1), dtype=np.uint8)
    one_white_pixel = black.copy()
    one_white_pixel[0, 0, 0, 0] = 255
    # L2 on [0, 1] is 1 over D = 4 values: RMS = sqrt(1 / 4) = 0.5.
    assert memorisation_report(one_white_pixel, black).rms_distance[0] == pytest.approx(0.5)
    grey = np.full((1, 4, 4, 3), 51, dtype=np.uint8)  # 0.2 everywhere, any size
    assert memorisation_report(grey, np.zeros_like(grey)).rms_distance[0] == pytest.approx(0.2)
    with pytest.raises(ValueError):
        memorisation_report(grey.astype(np.float32), grey)
