"""Helpers shared by the benchmarks: throughput from a run's metrics.jsonl, a child's own peak
RSS, a printed table."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
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


def run_with_peak_rss(cmd: list[str], env: dict[str, str], interval: float = 0.05) -> tuple[int, str, float]:
    """Run cmd; (exit code, stderr, the process's own peak RSS in MiB).

    Not wait4's ru_maxrss: Linux carries the parent's high-water mark into a child across
    fork/vfork and exec, so a 13 MiB child of a 2 GiB parent reports 2 GiB (checked). VmHWM in
    /proc/PID/status is the high-water mark of the child's own address space; it is read every
    `interval` seconds, and the last reading before the exit is the figure (NaN if the child
    ended before the first one)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    status = Path(f"/proc/{proc.pid}/status")
    peak_kib = 0
    stderr_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()), daemon=True)
    reader.start()  # a full stderr pipe would block the child
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kib = max(peak_kib, int(line.split()[1]))
        except (OSError, ValueError, IndexError):
            pass  # exited between poll() and the read
        time.sleep(interval)
    reader.join()
    proc.stderr.close()
    # A child that ended before the first reading has no figure (not 0 MiB).
    peak = peak_kib / 1024 if peak_kib else float("nan")
    return proc.returncode, b"".join(stderr_chunks).decode(errors="replace"), peak


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A titled plain-text table, first column left-aligned and the rest right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    print(f"\n## {title}")
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))))
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False))))
    sys.stdout.flush()
