"""Comparing runs: curves, one table row per run, the baseline row, never mixed extractors."""

import csv
import io
import json

import pytest

from genstudio.core.runs.run import RunError, TrainSettings
from genstudio.core.runtime.training import Trainer
from genstudio.core.trained.compare import (
    BASELINE_FAMILY,
    compare_runs,
    list_runs,
    summarize_run,
    table_to_csv,
)

OFFLINE = "random-conv-v1 (offline, 512-d)"


def _run(root, name, steps=4):
    settings = TrainSettings(data="builtin:tins", size=16, steps=steps, batch=8, device="cpu", log_every=2,
                             sample_every=0, checkpoint_every=0, eval_images=20,
                             family_config={"base_channels": 4, "latent_dim": 2})
    for _ in Trainer(settings, str(root / name)).run():
        pass
    return root / name


def _add_eval(run, extractor, fid, **extra):
    record = {"step": 4, "eval_source": "builtin:tins", "reference_images": 50, "reference_split": "held-out",
              "eval_bpd": 3.2, "bpd_kind": "bound", "baseline_bpd": 5.1, "extractor": extractor, "fid": fid,
              "kid": 0.01, "precision": 0.5, "recall": 0.4, "baseline_fid": 300.0, **extra}
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return root, [_run(root, "a"), _run(root, "b"), _run(root, "c")]


def test_summary_has_curves_and_the_end_of_training_evaluation(runs):
    _, (a, *_rest) = runs
    summary = summarize_run(a)
    assert summary.family == "vae" and summary.data == "builtin:tins" and summary.step == 4
    assert summary.curves["bpd"][0] == [2, 4]
    assert "iwae_bpd" in summary.curves and "images_per_sec" not in summary.curves
    assert summary.final["reference_split"] == "held-out" and "elbo_bpd" in summary.final


def test_table_rows_baseline_and_extractor_rule(runs, tmp_path):
    root, (a, b, c) = runs
    for run in (a, b, c):  # work on copies so other tests see the runs unchanged
        (tmp_path / run.name).mkdir()
        for f in run.iterdir():
            if f.is_file():
                (tmp_path / run.name / f.name).write_bytes(f.read_bytes())
    a2, b2, c2 = (tmp_path / r.name for r in (a, b, c))
    _add_eval(a2, OFFLINE, 12.5)
    _add_eval(b2, OFFLINE, 20.0)
    _add_eval(c2, "inception-v3 (pool3, 2048-d)", 80.0)
    table = compare_runs([a2, b2, c2])
    assert table.extractor == OFFLINE  # the most common one
    rows = {r["run"]: r for r in table.rows}
    assert rows["a"]["fid"] == 12.5 and rows["b"]["fid"] == 20.0
    assert "fid" not in rows["c"] and rows["c"]["bpd"] == 3.2  # other extractor: left out, bpd kept
    assert any("c:" in note and "left out" in note for note in table.notes)
    baseline = [r for r in table.rows if r["family"] == BASELINE_FAMILY]
    assert len(baseline) == 1 and baseline[0]["bpd"] == 5.1 and baseline[0]["fid"] == 300.0
    parsed = list(csv.DictReader(io.StringIO(table_to_csv(table))))
    assert [r["run"] for r in parsed] == ["a", "b", "c", "—"]
    assert parsed[0]["fid"] == "12.5" and parsed[2]["fid"] == ""


def test_runs_without_feature_metrics_still_get_a_bpd_row(runs):
    _, (a, *_rest) = runs
    table = compare_runs([a])
    assert table.extractor is None
    assert table.rows[0]["bpd"] == pytest.approx(summarize_run(a).final["iwae_bpd"])


def test_listing_and_bad_folders(runs, tmp_path):
    root, made = runs
    assert set(list_runs(root)) == set(made)
    assert list_runs(tmp_path / "nothing") == []
    with pytest.raises(RunError, match="not a genstudio run"):
        summarize_run(tmp_path)


def test_an_older_record_of_a_quick_estimate_is_shown_as_an_estimate(runs, tmp_path):
    """Records written before evaluations named their kind 'bound estimate' (the shipped
    diffusion runs) still say 'bound' beside a vlb_est figure: the table says what it is."""
    _, (a, *_rest) = runs
    copy = tmp_path / "old"
    copy.mkdir()
    for f in a.iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    _add_eval(copy, OFFLINE, 80.0, eval_bpd=2.33, vlb_est_bpd=2.33)
    row = compare_runs([copy]).rows[0]
    assert row["bpd"] == 2.33 and row["bpd_kind"] == "bound estimate"


def test_an_estimates_standard_error_has_its_column_and_is_no_curve(runs, tmp_path):
    _, (a, *_rest) = runs
    copy = tmp_path / "estimate"
    copy.mkdir()
    for f in a.iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    _add_eval(copy, OFFLINE, 80.0, eval_bpd=1.46, bpd_kind="exact estimate", eval_bpd_se=0.0002,
              cnf_est_bpd=1.46, cnf_est_bpd_se=0.0002, cnf_est_probes=4)
    row = compare_runs([copy]).rows[0]
    assert (row["bpd"], row["bpd_se"], row["bpd_kind"]) == (1.46, 0.0002, "exact estimate")
    assert "bpd_se" not in compare_runs([a]).rows[0]  # an exact figure or a bound has none
    curves = summarize_run(copy).curves
    assert "cnf_est_bpd" in curves and not {"cnf_est_bpd_se", "cnf_est_probes", "eval_bpd_se"} & set(curves)


def test_each_figure_says_how_many_images_it_is_from_and_a_smaller_evaluation_is_pointed_out(runs, tmp_path):
    _, (a, *_rest) = runs
    (tmp_path / "a").mkdir()
    for f in a.iterdir():
        if f.is_file():
            (tmp_path / "a" / f.name).write_bytes(f.read_bytes())
    run = tmp_path / "a"
    _add_eval(run, OFFLINE, 12.5, samples=1000, reference_images=256)
    table = compare_runs([run])
    row = table.rows[0]
    assert (row["bpd_images"], row["samples"]) == (256, 1000)
    assert not any("earlier one" in note for note in table.notes)
    _add_eval(run, OFFLINE, 90.0, samples=4, reference_images=4, eval_bpd=9.9)  # a quick look after
    table = compare_runs([run])
    row = table.rows[0]
    assert (row["bpd"], row["bpd_images"], row["fid"], row["samples"]) == (9.9, 4, 90.0, 4)
    assert "a: its bits/dim are from the last evaluation, on 4 held-out images; an earlier one used 256." in table.notes
    assert any(note.startswith("a: its FID") and "an earlier one used 1,000" in note for note in table.notes)
    parsed = list(csv.DictReader(io.StringIO(table_to_csv(table))))
    assert (parsed[0]["bpd_images"], parsed[0]["samples"]) == ("4", "4")
