"""The C heap around training (core/runtime/memory.py): freed activations are kept for the next step while
a run trains, and handed back to the system when it ends (glibc)."""

import sys

import pytest

from genstudio.core.runtime.memory import release_freed_memory


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

    code = ("import sys; from genstudio.core.runs.run import TrainSettings; "
            "from genstudio.core.runtime.training import Trainer; "
            "s = TrainSettings(data='builtin:tins', size=8, steps=50, batch=4, device='cpu', "
            "family_config={'base_channels': 4, 'latent_dim': 2}, eval_images=0); "
            "run = Trainer(s, sys.argv[1]).run(); next(run); next(run); print('ok')")
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], cwd=repo,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    assert "Exception ignored" not in out.stderr and "Traceback" not in out.stderr, out.stderr


_STEPS_CODE = r"""
import ctypes, json, resource, sys, threading
from genstudio.core.runtime.memory import one_heap_for_all_threads, keep_freed_memory

on_a_thread, one_heap = sys.argv[1] == "thread", sys.argv[2] == "one-heap"
if one_heap:
    assert one_heap_for_all_threads()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
# A "step": BLOCKS activations of BLOCK MiB alive at once, then freed (default: twelve of 8 MiB).
BLOCK, BLOCKS = int(sys.argv[3]) * 2**20, int(sys.argv[4])

def rss_mib():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS:"))

def steps(n):
    faults = 0
    for k in range(n):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [libc.malloc(BLOCK) for _ in range(BLOCKS)]
        for b in blocks:
            ctypes.memset(b, 1, BLOCK)  # touch every page, as a tensor's first write does
        for b in blocks:
            libc.free(b)
        if k >= 2:  # after glibc has seen the pattern (its adaptive thresholds have moved)
            faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return faults

def train(figures):
    figures["default"] = steps(6)
    with keep_freed_memory() as tuned:
        figures["training"], figures["tuned"] = steps(6), tuned
        figures["rss_kept"] = rss_mib()  # the last step's blocks, freed but kept
    figures["rss_after"] = rss_mib()

figures = {"pages": 4 * BLOCKS * BLOCK // 4096}  # pages touched over the four measured steps
if on_a_thread:
    worker = threading.Thread(target=train, args=(figures,))
    worker.start()
    worker.join()
else:
    train(figures)
print(json.dumps(figures))
"""


def _fault_counts(where: str, heap: str, block_mib: int = 8, blocks: int = 12) -> dict:
    import json
    import subprocess
    from pathlib import Path

    # A fresh process, so glibc starts from its own defaults.
    out = subprocess.run([sys.executable, "-c", _STEPS_CODE, where, heap, str(block_mib), str(blocks)],
                         cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert figures["tuned"], "no glibc: nothing to tune"
    return figures


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the allocator settings are glibc's")
def test_training_reuses_freed_activations_instead_of_faulting_in_fresh_pages():
    figures = _fault_counts("main", "arenas")
    if figures["default"] < figures["pages"] // 2:
        pytest.skip(f"this C library reuses the blocks by itself ({figures}): nothing to show")
    # Under glibc's defaults the 96 MiB freed at each step's end pass the trim threshold and go
    # back to the kernel, so every step faults its pages in again; while training they are kept.
    assert figures["training"] < figures["pages"] // 100, figures


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the allocator settings are glibc's")
def test_training_on_a_thread_keeps_its_memory_when_all_threads_share_one_heap():
    # The app trains on a QThread. With an arena of its own, the thread's 64 MiB heap pieces go
    # back to the kernel when they fall wholly free, tuned or not.
    own_arena = _fault_counts("thread", "arenas")
    if own_arena["training"] < own_arena["pages"] // 4:
        pytest.skip(f"this C library keeps a thread's freed heaps by itself ({own_arena}): nothing to show")
    shared = _fault_counts("thread", "one-heap")
    assert shared["training"] < shared["pages"] // 100, shared


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the allocator settings are glibc's")
def test_blocks_above_the_mmap_ceiling_are_kept_too():
    # 40 MiB blocks (a diffusion model's activations at 64 px are 128 MiB) are above the highest
    # mmap threshold glibc accepts (32 MiB): without mmap turned off they get fresh pages every step.
    figures = _fault_counts("main", "arenas", block_mib=40, blocks=3)
    if figures["default"] < figures["pages"] // 2:
        pytest.skip(f"this C library reuses big blocks by itself ({figures}): nothing to show")
    assert figures["training"] < figures["pages"] // 100, figures
    # and they go back to the system when the work ends
    assert figures["rss_kept"] - figures["rss_after"] > 100, figures


@pytest.fixture
def glibc_calls(monkeypatch):
    """The allocator calls keep_freed_memory makes, recorded instead of made."""
    from genstudio.core.runtime import memory

    calls = []

    class RecordingGlibc:
        def mallopt(self, parameter, value):
            calls.append(("mallopt", parameter, value))
            return 1

        def malloc_trim(self, pad):
            calls.append(("trim", pad))

    monkeypatch.setattr(memory, "_glibc", lambda: RecordingGlibc())
    return calls


# What keep_freed_memory sets on entry (core/runtime/memory.py).
TUNED = [("mallopt", -3, 32 * 2**20),  # M_MMAP_THRESHOLD: glibc's ceiling
         ("mallopt", -1, -1),          # M_TRIM_THRESHOLD: no trimming
         ("mallopt", -4, 0)]           # M_MMAP_MAX: no blocks with pages of their own


def test_nested_blocks_tune_once_and_restore_once(glibc_calls):
    from genstudio.core.runtime import memory

    calls = glibc_calls
    with memory.keep_freed_memory():
        with memory.keep_freed_memory():
            pass
        assert calls == TUNED
    assert calls[3:] == [("mallopt", memory.M_MMAP_MAX, memory.DEFAULT_MMAP_MAX),
                         ("mallopt", memory.M_TRIM_THRESHOLD, memory.SETTLED_TRIM_THRESHOLD), ("trim", 0)]


def test_a_training_run_tunes_the_allocator_and_hands_memory_back_at_its_end(glibc_calls, tmp_path):
    from genstudio.core.runs.run import TrainSettings
    from genstudio.core.runtime import memory
    from genstudio.core.runtime.training import StepLogged, Trainer

    calls = glibc_calls
    settings = TrainSettings(data="builtin:tins", size=8, steps=3, batch=4, device="cpu", log_every=1,
                             family_config={"base_channels": 4, "latent_dim": 2}, eval_images=0)
    seen_during_steps = []
    for event in Trainer(settings, str(tmp_path / "run")).run():
        if isinstance(event, StepLogged):
            seen_during_steps.append(list(calls))
    assert seen_during_steps and all(c == TUNED for c in seen_during_steps)
    assert calls[-1] == ("trim", 0) and calls[-2][2] == memory.SETTLED_TRIM_THRESHOLD


def test_every_cli_command_runs_inside_keep_freed_memory(glibc_calls, monkeypatch, tmp_path, capsys):
    from genstudio import cli
    from genstudio.core.runs.run import RunError
    from genstudio.core.runtime import memory

    blocks_open = []

    def load_run(*args, **kwargs):
        blocks_open.append(memory._open_blocks)  # noqa: SLF001
        raise RunError("no run here")

    monkeypatch.setattr("genstudio.core.runs.run.load_run", load_run)
    assert cli.main(["info", str(tmp_path)]) == 1
    assert blocks_open == [1] and memory._open_blocks == 0  # noqa: SLF001
    assert glibc_calls[-1] == ("trim", 0)


_FREEZE_CODE = """
import gc, json, sys, time
import torch
from genstudio.core.runtime import memory
mode = sys.argv[1]
frozen, dynamo_before_the_model = 0, None
if mode == "freeze":
    frozen = memory.freeze_imported_objects()
elif mode == "background":
    memory.freeze_imported_objects(compiler=False)
    dynamo_before_the_model = "torch._dynamo" in sys.modules
    thread = memory.freeze_the_compiler_in_the_background()
from genstudio.core.families import ImageSpec, create_family
create_family("vae", ImageSpec(1, 16), {"base_channels": 4, "latent_dim": 2})  # an optimizer: torch's compiler
if mode == "background":
    thread.join()
    frozen = gc.get_freeze_count()
print(json.dumps({"frozen": frozen, "tracked": len(gc.get_objects()), "dynamo": "torch._dynamo" in sys.modules,
                  "dynamo_before_the_model": dynamo_before_the_model}))
"""


def _objects_after_a_model(mode):
    import json
    import subprocess

    out = subprocess.run([sys.executable, "-c", _FREEZE_CODE, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freezing_takes_torchs_objects_out_of_the_collectors_full_passes():
    # What a full pass walks (gc.get_objects: every tracked object that is not frozen), with and
    # without the freeze, once a model and its optimizer exist (torch imports its compiler then).
    plain, frozen = _objects_after_a_model("plain"), _objects_after_a_model("freeze")
    assert plain["dynamo"] and frozen["dynamo"]
    assert frozen["frozen"] > 100_000
    assert plain["tracked"] > 100_000 and frozen["tracked"] < plain["tracked"] / 10, (plain, frozen)


def test_the_compiler_frozen_in_the_background_leaves_the_full_passes_as_small():
    # The app freezes without torch's compiler (its import would hold the window back a second)
    # and imports it on a thread, which freezes again after: a model's optimizer built meanwhile
    # waits for that import, and the full passes walk as few objects as with one freeze.
    plain, background = _objects_after_a_model("plain"), _objects_after_a_model("background")
    assert background["dynamo_before_the_model"] is False  # the first freeze did not import it
    assert background["dynamo"]
    assert background["frozen"] > 100_000
    assert background["tracked"] < plain["tracked"] / 10, (plain, background)
