"""benchmarks/quality.py --evaluate leaves the run it evaluates as it was (it may be a shipped
model) and writes its result and sample grid under the work folder."""

import json

import pytest

from benchmarks.quality import main
from genstudio.core.runs.run import TrainSettings
from genstudio.core.runtime.training import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_evaluating_a_run_writes_nothing_into_its_folder(tmp_path):
    run = tmp_path / "shipped"
    settings = TrainSettings(family="vae", data="builtin:tins", size=8, steps=2, batch=2, seed=0, device="cpu",
                             family_config={"base_channels": 4, "latent_dim": 2}, sample_every=0,
                             checkpoint_every=1, grid_samples=1, eval_images=0)
    list(Trainer(settings, str(run)).run())
    before = {path.relative_to(run): path.stat().st_mtime_ns for path in run.rglob("*")}

    assert main(["--evaluate", str(run), "--data", "builtin:tins", "--size", "8", "--samples", "8",
                 "--extractor", "offline", "--bpd-images", "0", "--work", str(tmp_path / "work"),
                 "--threads", "1"]) == 0

    assert {path.relative_to(run): path.stat().st_mtime_ns for path in run.rglob("*")} == before
    out = tmp_path / "work" / "evaluated" / "shipped"
    assert json.loads((out / "benchmark-result.json").read_text())["samples"] == 8
    assert (out / "benchmark-samples.png").stat().st_size > 0
