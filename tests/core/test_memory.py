"""release_freed_memory hands the C heap's free pages back (glibc), which training relies on to
not keep gigabytes of freed activations after a run."""

import sys

import pytest

from genstudio.core.memory import release_freed_memory


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's (Linux)")
def test_freed_heap_memory_goes_back_to_the_system():
    # 200 MB in 10 kB blocks: below glibc's mmap threshold, so they live in the heap, and
    # freeing them does not shrink the process by itself (the top block stays in use).
    blocks = [bytearray(10_000) for _ in range(20_000)]
    keep = bytearray(10_000)  # allocated last: pins the top of the heap
    del blocks
    before = _rss_mib()
    assert release_freed_memory()
    after = _rss_mib()
    assert before - after > 100, (before, after)
    del keep


def test_a_run_left_open_at_interpreter_exit_closes_quietly(tmp_path):
    # The run's generator is closed by the interpreter's shutdown, when imports no longer work:
    # releasing memory there printed "Exception ignored ... ImportError" (a ctypes library search).
    import subprocess
    from pathlib import Path

    code = ("import sys; from genstudio.core.run import TrainSettings; "
            "from genstudio.core.training import Trainer; "
            "s = TrainSettings(data='builtin:tins', size=8, steps=50, batch=4, device='cpu', "
            "family_config={'base_channels': 4, 'latent_dim': 2}, eval_images=0); "
            "run = Trainer(s, sys.argv[1]).run(); next(run); next(run); print('ok')")
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], cwd=repo,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    assert "Exception ignored" not in out.stderr and "Traceback" not in out.stderr, out.stderr
