"""The benchmarks' own measuring helpers: a wrong helper makes every figure built on it wrong."""

import json
import os
import sys

import numpy as np

from benchmarks.common import images_per_sec_from_metrics, run_with_peak_rss


def test_throughput_leaves_out_the_intervals_that_drew_a_sample_grid(tmp_path):
    # 1 s per step, except that the grid drawn after step 20 costs 30 s inside (20, 25].
    records, now = [], 0.0
    for step in range(5, 41, 5):
        now += 5.0 + (30.0 if step == 25 else 0.0)
        records.append({"step": step, "loss": 1.0, "time": now})
    records.append({"step": 40, "eval_bpd": 3.0})  # an evaluation record has no time
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert images_per_sec_from_metrics(tmp_path, batch=8, skip_steps=0, grid_every=20) == 8.0
    everything = images_per_sec_from_metrics(tmp_path, batch=8, skip_steps=0)
    assert abs(everything - 35 * 8 / 65) < 1e-9  # the grid counted against the loop


def test_a_child_peak_rss_is_its_own_not_the_parents():
    # This process holds 300 MiB; wait4 would report at least that for any child.
    held = np.ones(300 * 2**20 // 8)
    code, _, small = run_with_peak_rss([sys.executable, "-c", "import time; time.sleep(0.5)"], dict(os.environ))
    grows = "import time, numpy; a = numpy.ones(150 * 2**20 // 8); time.sleep(0.5)"
    _, _, big = run_with_peak_rss([sys.executable, "-c", grows], dict(os.environ))
    assert held.sum() > 0 and code == 0
    assert small < 100
    assert 150 < big < 300
