"""`genstudio playground` as a user runs it: 2-D families trained side by side, a table and a
figure; bad input is one clear line."""

import json

import numpy as np
from cli_helpers import genstudio
from PIL import Image


def test_playground_trains_the_families_and_writes_the_table_and_figure(tmp_path):
    out = tmp_path / "panels.png"
    result = genstudio("playground", "--data", "8gaussians", "--families", "flow,flow-matching", "--seconds", "1",
                       "--points", "2000", "--set", "flow-matching.steps=8", "--out", out, "--json")
    table = json.loads(result.stdout)
    assert table["data_density"] == "exact"
    assert [row["family"] for row in table["families"]] == ["flow", "flow-matching"]
    for row in table["families"]:
        assert row["steps"] > 0 and row["train_seconds"] >= 1.0 and row["kl_nats"] > 0
        assert row["modes"] == 8 and 0 <= row["modes_covered"] <= 8
        assert row["history"][0]["step"] == 0 and row["history"][-1]["step"] == row["steps"]
        assert 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1 and row["samples"] == 2000
        assert row["sample_ms"] > 0 and row["latent"].startswith("2-D noise")
    assert table["families"][0]["density"] == "exact"
    assert table["families"][1]["density"] == "ODE change of variables"
    with Image.open(out) as figure:
        width, height = figure.size
    assert width > 3 * height / 2  # three panels in a row: the data and two families


def test_playground_reads_points_from_a_csv_and_says_what_is_wrong_with_a_bad_one(tmp_path):
    points = tmp_path / "points.csv"
    rows = np.random.default_rng(0).standard_normal((300, 2))
    points.write_text("x,y\n" + "\n".join(f"{x},{y}" for x, y in rows) + "\n")
    text = genstudio("playground", "--data", points, "--families", "flow", "--seconds", "0.5").stdout
    assert "kernel estimate, 300 samples" in text and "KL" in text and "recall" in text
    points.write_text("x,y\n1,2\nfoo,bar\n")
    bad = genstudio("playground", "--data", points, "--families", "flow", "--seconds", "0.5", check=False)
    assert bad.returncode == 1 and "line 3" in bad.stderr and "Traceback" not in bad.stderr
    unknown = genstudio("playground", "--families", "flow,pixelcnn", "--seconds", "0.5", check=False)
    assert unknown.returncode == 1 and "no 2-D family called 'pixelcnn'" in unknown.stderr
    knob = genstudio("playground", "--families", "gan", "--set", "gan.loss=magic", "--seconds", "0.5", check=False)
    assert knob.returncode == 1 and "gan: loss must be one of" in knob.stderr


def test_playground_runs_a_scenario_saved_by_the_tab(tmp_path):
    from genstudio.core.playground.scenario import Scenario

    Scenario(toy="rings", seed=4, toy_points=3000, families={"autoregressive": {"conditional": "nade"}}).save(
        tmp_path / "s.json")
    table = json.loads(genstudio("playground", "--scenario", tmp_path / "s.json", "--seconds", "0.5", "--json").stdout)
    assert [row["family"] for row in table["families"]] == ["autoregressive"]
    assert table["data_density"].startswith("kernel estimate, 1,000,000 samples")
