"""Helpers shared by the benchmarks: measuring throughput from a run's metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path


def images_per_sec_from_metrics(run_dir: str | Path, batch: int, skip_steps: int) -> float:
    """Training images/s between the first record after `skip_steps` (warm-up) and the last.

    Uses the loop's own clock (`time` in each record: seconds since the loop started), so data
    loading and model building are excluded in every mode alike."""
    records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    warm = [r for r in records if r["step"] > skip_steps and "time" in r]  # not eval records
    if len(warm) < 2:
        raise ValueError(f"too few records after step {skip_steps} in {run_dir}")
    first, last = warm[0], warm[-1]
    return (last["step"] - first["step"]) * batch / (last["time"] - first["time"])
