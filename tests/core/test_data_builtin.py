"""Built-in procedural datasets: determinism, shapes, and factors that really drive the pixels."""

from __future__ import annotations

import numpy as np
import pytest

from genstudio.core.data import BUILTIN_DATASETS, DatasetError, load_source
from genstudio.core.data import builtin as builtin_module


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENSTUDIO_CACHE_DIR", str(tmp_path / "cache-root"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("builtin-cache")


@pytest.fixture(scope="module")
def tins(cache_dir):
    return load_source("builtin:tins", 32, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def shapes(cache_dir):
    return load_source("builtin:shapes", 32, cache_dir=cache_dir)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def test_registry_names_both_datasets():
    assert {"tins", "shapes"} <= set(BUILTIN_DATASETS)
    assert all(isinstance(text, str) and text for text in BUILTIN_DATASETS.values())


@pytest.mark.parametrize("name", ["tins", "shapes"])
def test_arrays_have_the_documented_shapes(name, tins, shapes):
    ds = {"tins": tins, "shapes": shapes}[name]
    n = len(ds)
    assert ds.images.shape == (n, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (n,) and ds.labels.dtype == np.int64
    assert ds.factors.shape == (n, len(ds.factor_names)) and ds.factors.dtype == np.float32
    assert ds.factors.min() >= 0.0 and ds.factors.max() <= 1.0
    assert ds.source == f"builtin:{name}" and ds.skipped == [] and ds.skipped_summary() == ""


def test_tins_metadata(tins):
    assert len(tins) == 4000 and tins.factor_names == ["height", "width"]
    assert tins.class_names == [] and not tins.labels.any()
    assert tins.describe() == "builtin:tins — 4000 images, 32×32 RGB, no classes"


def test_shapes_metadata_and_balance(shapes):
    assert len(shapes) == 6000 and shapes.class_names == ["circle", "square", "triangle"]
    assert shapes.factor_names == ["size", "x", "y", "rotation", "hue"]
    assert np.bincount(shapes.labels).tolist() == [2000, 2000, 2000]
    assert shapes.describe() == (
        "builtin:shapes — 6000 images, 32×32 RGB, 3 classes (circle, square, triangle)"
    )


def test_rendering_is_deterministic(tmp_path, shapes):
    fresh = load_source("builtin:shapes", 32, cache_dir=tmp_path / "other")  # not from cache
    assert np.array_equal(fresh.images, shapes.images)
    assert np.array_equal(fresh.labels, shapes.labels)
    assert np.array_equal(fresh.factors, shapes.factors)


def test_second_load_comes_from_the_cache(cache_dir, tins, monkeypatch):
    def must_not_render(*_args, **_kwargs):
        raise AssertionError("rendered although the cache was valid")

    monkeypatch.setattr(builtin_module, "_render_all", must_not_render)
    again = load_source("builtin:tins", 32, cache_dir=cache_dir)
    assert np.array_equal(again.images, tins.images) and again.images.flags.writeable


def test_tin_height_and_width_factors_control_the_tin(tins):
    """Measure the tin in pixels: rows that differ from the background (column 0, which no
    tin reaches) down the centre, and columns that differ along a row every tin covers."""
    images = tins.images.astype(int)
    centre = np.abs(images[:, :, 16] - images[:, :, 0]).sum(-1) > 30  # (N, H)
    across = np.abs(images[:, 27] - images[:, 27, :1]).sum(-1) > 30  # (N, W), row 0.85·size
    assert correlation(centre.sum(1), tins.factors[:, 0]) > 0.9
    assert correlation(across.sum(1), tins.factors[:, 1]) > 0.9


def test_shape_position_and_size_factors_control_the_shape(shapes):
    mask = shapes.images.max(-1) > 60  # background is at most 26 in every channel
    ys, xs = np.mgrid[0:32, 0:32]
    area = mask.sum((1, 2))
    assert area.min() > 0
    centroid_x = (mask * xs).sum((1, 2)) / area
    centroid_y = (mask * ys).sum((1, 2)) / area
    assert correlation(centroid_x, shapes.factors[:, 1]) > 0.9
    assert correlation(centroid_y, shapes.factors[:, 2]) > 0.9
    for cls in range(3):
        rows = shapes.labels == cls
        assert correlation(area[rows], shapes.factors[rows, 0]) > 0.9


def test_shape_edges_are_anti_aliased(shapes):
    values = np.unique(shapes.images[:50, :, :, 1])
    assert len(values) > 50  # intermediate edge values, not just background and fill


@pytest.mark.parametrize("size", [8, 64])
def test_other_sizes_and_grey(tmp_path, size):
    ds = load_source("builtin:tins", size, channels=1, cache_dir=tmp_path)
    assert ds.images.shape == (4000, size, size, 1)


def test_unknown_builtin_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="Unknown built-in dataset 'nope'; available: "):
        load_source("builtin:nope", cache_dir=tmp_path)
