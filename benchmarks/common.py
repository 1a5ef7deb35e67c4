"""Helpers shared by the benchmarks: measuring throughput from a run's metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path


def images_per_sec_from_metrics(run_dir: str | Path, batch: int, skip_steps: int,
                                grid_every: int = 0) -> float:
    """Training images/s over the logged intervals after `skip_steps` (warm-up).

    Uses the loop's own clock (`time` in each record: seconds since the loop started), so data
    loading and model building are excluded in every mode alike. grid_every: the run's
    sample_every; an interval in which the loop drew a sample grid is left out, since a bare
    loop draws none (a PixelCNN's grid costs as much as several training steps)."""
    records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    warm = [r for r in records if r["step"] > skip_steps and "time" in r]  # not eval records
    if len(warm) < 2:
        raise ValueError(f"too few records after step {skip_steps} in {run_dir}")
    steps = seconds = 0.0
    for a, b in zip(warm, warm[1:], strict=False):
        # The loop logs step k, then draws its grid: that grid's time lands in (k, next record].
        if grid_every and any(k % grid_every == 0 for k in range(a["step"], b["step"])):
            continue
        steps += b["step"] - a["step"]
        seconds += b["time"] - a["time"]
    if not steps:
        raise ValueError(f"every logged interval of {run_dir} holds a sample grid")
    return steps * batch / seconds
