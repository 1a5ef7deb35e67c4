"""The 2-D playground's yardstick against closed forms: the grid KL of two Gaussians, the exact
toy densities integrating to 1, the kernel estimate, the mode counter on constructed samples,
and the toys and points files."""

import math

import numpy as np
import pytest

from genstudio.core.playground.grid import (
    Grid,
    count_modes,
    kernel_density,
    kl_divergence,
    normalise,
)
from genstudio.core.playground.toys import (
    EIGHT_CENTRES,
    EIGHT_STD,
    TOYS,
    PointsError,
    load_points_csv,
    save_points_csv,
    toy,
)


def gaussian_log_density(points, mean, cov):
    diff = points - mean
    precision = np.linalg.inv(cov)
    return (-0.5 * np.einsum("ni,ij,nj->n", diff, precision, diff)
            - 0.5 * math.log(np.linalg.det(cov)) - math.log(2 * math.pi))


def test_the_grid_kl_of_two_gaussians_is_the_closed_form():
    grid = Grid(extent=8.0, resolution=400)
    mean_p, cov_p = np.array([0.5, -0.3]), np.array([[1.0, 0.4], [0.4, 0.8]])
    mean_q, cov_q = np.array([-0.2, 0.4]), np.array([[1.5, -0.2], [-0.2, 1.1]])
    p = normalise(grid, gaussian_log_density(grid.centres(), mean_p, cov_p), "exact")
    q = normalise(grid, gaussian_log_density(grid.centres(), mean_q, cov_q), "exact")
    inv_q, diff = np.linalg.inv(cov_q), mean_q - mean_p
    closed = 0.5 * (np.trace(inv_q @ cov_p) + diff @ inv_q @ diff - 2
                    + math.log(np.linalg.det(cov_q) / np.linalg.det(cov_p)))
    assert kl_divergence(p, q) == pytest.approx(closed, abs=1e-4)
    assert kl_divergence(p, p) == 0.0
    assert p.mass == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name", [name for name, t in TOYS.items() if t.log_density is not None])
def test_every_exact_toy_density_integrates_to_1_on_the_grid(name):
    grid = Grid()
    density = normalise(grid, toy(name).log_density(grid.centres()), "exact")
    assert density.mass == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("name", list(TOYS))
def test_every_toy_lies_inside_the_grid_and_is_reproducible_by_seed(name):
    first = toy(name).sample(5000, np.random.default_rng(3))
    assert first.shape == (5000, 2) and first.dtype == np.float64
    assert np.array_equal(first, toy(name).sample(5000, np.random.default_rng(3)))
    assert (np.abs(first) < Grid().extent).mean() > 0.999


def test_an_exact_toys_samples_follow_its_density():
    """The checkerboard's histogram of many samples against its density: their KL is near 0."""
    grid = Grid(resolution=32)
    exact = normalise(grid, toy("checkerboard").log_density(grid.centres()), "exact")
    samples = toy("checkerboard").sample(400_000, np.random.default_rng(0))
    histogram = grid.histogram(samples).ravel()
    with np.errstate(divide="ignore"):
        empirical = normalise(grid, np.log(histogram), "histogram")
    assert kl_divergence(empirical, exact) < 2e-3


def test_the_kernel_estimate_of_many_gaussian_samples_is_near_their_density():
    grid = Grid(extent=6.0, resolution=120)
    samples = np.random.default_rng(0).standard_normal((200_000, 2))
    estimate = kernel_density(grid, samples, bandwidth=0.1)
    exact = normalise(grid, gaussian_log_density(grid.centres(), np.zeros(2), np.eye(2)), "exact")
    assert kl_divergence(exact, estimate) < 0.01
    assert estimate.kind == "kernel estimate, 200,000 samples, bandwidth 0.1"


def test_the_kl_is_infinite_where_the_model_has_no_mass_and_the_data_has():
    grid = Grid(resolution=16)
    data = normalise(grid, toy("checkerboard").log_density(grid.centres()), "exact")
    assert kl_divergence(normalise(grid, np.zeros(256), "flat"), data) == math.inf
    assert math.isfinite(kl_divergence(data, normalise(grid, np.zeros(256), "flat")))


def test_the_mode_counter_counts_the_modes_that_hold_their_share():
    rng = np.random.default_rng(0)
    on_six = EIGHT_CENTRES[rng.integers(0, 6, 760)] + 0.5 * EIGHT_STD * rng.standard_normal((760, 2))
    stray = EIGHT_CENTRES[6] + np.zeros((10, 2))        # mode 7: 10 of 800, under a fifth of its 100
    between = np.zeros((30, 2))                          # the centre: near no mode
    coverage = count_modes(np.concatenate([on_six, stray, between]), EIGHT_CENTRES, EIGHT_STD)
    assert (coverage.covered, coverage.modes) == (6, 8)
    assert coverage.on_modes == pytest.approx(770 / 800)
    assert count_modes(toy("8gaussians").sample(4000, rng), EIGHT_CENTRES, EIGHT_STD).covered == 8


def test_a_points_file_round_trips_and_bad_rows_are_named(tmp_path):
    points = np.random.default_rng(0).standard_normal((50, 2))
    save_points_csv(tmp_path / "p.csv", points)
    np.testing.assert_allclose(load_points_csv(tmp_path / "p.csv"), points, rtol=1e-8)
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n3,banana\n")
    with pytest.raises(PointsError, match="line 3"):
        load_points_csv(tmp_path / "bad.csv")
    (tmp_path / "inf.csv").write_text("1,2\n3,inf\n")
    with pytest.raises(PointsError, match="line 2 needs two finite"):
        load_points_csv(tmp_path / "inf.csv")
    (tmp_path / "one.csv").write_text("1,2\n")
    with pytest.raises(PointsError, match="at least two"):
        load_points_csv(tmp_path / "one.csv")
    with pytest.raises(ValueError, match="no toy called"):
        toy("doughnut")


def test_a_scenario_file_round_trips_exactly_and_bad_ones_say_why(tmp_path):
    from genstudio.core.playground.scenario import Scenario, ScenarioError

    drawn = Scenario(toy=None, points=np.random.default_rng(1).standard_normal((40, 2)), seed=7,
                     families={"flow": {"coupling": "affine", "layers": 4}, "gan": {"loss": "hinge"}})
    drawn.save(tmp_path / "drawn.json")
    again = Scenario.load(tmp_path / "drawn.json")
    assert np.array_equal(again.data(), drawn.data()) and again.families == drawn.families and again.seed == 7
    toy_scenario = Scenario(toy="moons", seed=3)
    toy_scenario.save(tmp_path / "moons.json")
    assert np.array_equal(Scenario.load(tmp_path / "moons.json").data(), toy_scenario.data())
    with pytest.raises(ScenarioError, match="no 2-D family called 'pixelcnn'"):
        Scenario(families={"pixelcnn": {}})
    with pytest.raises(ScenarioError, match="gan: loss must be one of"):
        Scenario(families={"gan": {"loss": "magic"}})
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ScenarioError, match="not JSON"):
        Scenario.load(tmp_path / "broken.json")
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(ScenarioError, match="not a genstudio playground scenario"):
        Scenario.load(tmp_path / "other.json")


def test_a_densitys_brightness_is_its_square_root_scaled_to_the_peak():
    grid = Grid(extent=3.0, resolution=30)
    density = normalise(grid, gaussian_log_density(grid.centres(), np.zeros(2), np.eye(2)), "exact")
    assert density.brightness.max() == 1.0 and density.brightness.min() > 0
    np.testing.assert_allclose(density.brightness ** 2, density.image / density.image.max())


def test_a_long_recording_thins_itself_and_still_spans_the_whole_training():
    from genstudio.core.playground.figure import MAX_MOMENTS, Panel, Recording

    grid = Grid(resolution=8)
    density = normalise(grid, np.zeros(64), "exact")
    panel = Panel("uniform", density, np.zeros((3, 2)), ("a caption",))
    recording = Recording(interval=1.0)
    for second in range(0, 1000):
        recording.add(second * 0.5, [panel])   # offered twice a second, kept once a second at most
    seconds = [moment.seconds for moment in recording.moments]
    assert len(seconds) <= MAX_MOMENTS and seconds[0] == 0.0 and seconds[-1] > 450
    assert np.all(np.diff(seconds) >= 1.0) and recording.interval > 1.0
    frames = recording.snapshot().frames(scale=1)
    assert frames.shape[0] == len(seconds) and frames.dtype == np.uint8


def test_precision_and_recall_on_constructed_samples():
    from genstudio.core.playground.grid import precision_recall

    rng = np.random.default_rng(0)
    real = toy("8gaussians").sample(800, rng)
    same = toy("8gaussians").sample(800, rng)
    assert min(precision_recall(real, same)) > 0.9
    # Samples on two of the eight modes only: all look like data, a quarter of the data is reached.
    half = real[np.linalg.norm(real - EIGHT_CENTRES[0], axis=1) < 1]
    precision, recall = precision_recall(real, np.concatenate([half, half + (EIGHT_CENTRES[1] - EIGHT_CENTRES[0])]))
    assert precision > 0.9 and 0.15 < recall < 0.35
    precision, recall = precision_recall(real, rng.normal(size=(800, 2)) * 0.1)   # a blob at the centre
    assert precision < 0.05 and recall < 0.05
