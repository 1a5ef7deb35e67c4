"""`genstudio eval` as a user runs it."""

import json

import pytest
from cli_helpers import genstudio


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("eval") / "run"
    genstudio("train", "--family", "vae", "--data", "builtin:tins", "--out", run, "--steps", "20",
              "--size", "16", "--batch", "16", "--set", "base_channels=4", "--set", "latent_dim=3",
              "--sample-every", "0", "--checkpoint-every", "0", "--device", "cpu", "--quiet")
    return run


def test_eval_prints_json_figures_and_records_them(run):
    out = genstudio("eval", run, "--data", "builtin:tins", "--metrics", "fid,kid,precision,recall,bpd,memorisation",
                    "--samples", "120", "--reference", "150", "--extractor", "offline", "--json").stdout
    figures = json.loads(out)
    assert figures["step"] == 20 and figures["reference_split"] == "held-out"
    assert figures["reference_images"] == 150 and figures["samples"] == 120
    assert figures["extractor"].startswith("random-conv-v1 (offline")
    assert figures["fid"] > 0 and 0 <= figures["precision"] <= 1 and 0 <= figures["recall"] <= 1
    assert figures["eval_bpd"] == min(figures["elbo_bpd"], figures["iwae_bpd"]) and figures["bpd_kind"] == "bound"
    assert 0 < figures["baseline_bpd"] < 8
    # The floor row: per-pixel independent samples, scored the same way; they cover nothing.
    assert {"baseline_fid", "baseline_kid", "baseline_precision", "baseline_recall"} <= set(figures)
    assert figures["memorisation_min"] > 0  # a 20-step model copies nothing
    recorded = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert recorded == figures


def test_eval_is_reproducible_by_seed(run):
    args = ["eval", run, "--data", "builtin:tins", "--metrics", "fid,kid", "--samples", "60",
            "--reference", "60", "--extractor", "offline", "--json", "--no-record"]
    a, b = json.loads(genstudio(*args).stdout), json.loads(genstudio(*args).stdout)
    assert a == b


def test_eval_writes_the_closest_pairs_as_a_png(run, tmp_path):
    from PIL import Image

    from genstudio.core.runs.images import read_png_metadata

    out = tmp_path / "pairs.png"
    genstudio("eval", run, "--data", "builtin:tins", "--metrics", "memorisation", "--samples", "30",
              "--reference", "30", "--pairs", out, "--no-record")
    with Image.open(out) as image:  # 8 pairs of 16 px tiles, two rows, 2 px padding
        assert image.size == (2 + 8 * 18, 2 + 2 * 18)
    distances = [float(d) for d in read_png_metadata(out)["rms_distances"].split()]
    assert len(distances) == 8 and distances == sorted(distances) and distances[0] > 0


@pytest.mark.parametrize("args,message", [
    (["--metrics", "fid,beauty"], "unknown metric"),
    (["--extractor", "/no/such/weights.pt"], "weights.pt"),
    (["--samples", "1"], "at least 2"),
    (["--metrics", "fid", "--pairs", "p.png"], "--pairs needs memorisation"),
])
def test_bad_eval_input_is_one_line(run, args, message):
    result = genstudio("eval", run, "--data", "builtin:tins", *args, check=False)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
