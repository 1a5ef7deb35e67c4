"""Checkpoints under faults: SIGKILL mid-save, damaged files, NaN weights, planted pickles."""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from genstudio.core.runs.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_latest,
    previous_path,
    save_checkpoint,
)
from genstudio.core.runs.run import RunError, TrainSettings, load_run
from genstudio.core.runtime.training import Notice, Trainer

TINY = TrainSettings(
    family="vae", data="builtin:tins", size=8, steps=4, batch=4, seed=1, device="cpu",
    family_config={"base_channels": 4, "latent_dim": 2}, log_every=1, sample_every=0,
    checkpoint_every=2, grid_samples=1, eval_images=0,
)

# A child that saves a first checkpoint, then starts a second save whose write stops halfway
# (real bytes in the temporary file) and says so, to be SIGKILLed right there.
KILLED_MID_WRITE = textwrap.dedent("""
    import sys, time
    import torch
    import genstudio.core.runs.checkpoint as ckpt

    path = sys.argv[1]
    ckpt.save_checkpoint(path, {"w": torch.full((1000,), 1.0)}, {"step": 1})

    def slow_save(tensors, tmp, metadata):
        with open(tmp, "wb") as f:
            f.write(b"half a checkpoint" * 1000)
            f.flush()
        print("writing", flush=True)
        time.sleep(60)

    ckpt.save_file = slow_save
    ckpt.save_checkpoint(path, {"w": torch.full((1000,), 2.0)}, {"step": 2})
""")

# A child that saves two alternating states for ever: killed at a random moment it may be
# anywhere in a real save (serialising, writing, fsync, the renames).
SAVING_FOR_EVER = textwrap.dedent("""
    import sys
    import torch
    from genstudio.core.runs.checkpoint import save_checkpoint

    big = {k: torch.full((1_000_000,), float(k)) for k in (1, 2)}
    print("saving", flush=True)
    step = 0
    while True:
        step += 1
        save_checkpoint(sys.argv[1], {"w": big[1 + step % 2]}, {"step": step})
""")


def _child(script: str, path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE,
                            text=True, env=env)


def _kill_after_line(child: subprocess.Popen, line: str, delay: float = 0.0) -> None:
    try:
        assert child.stdout.readline().strip() == line
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


@pytest.mark.timeout(90)
def test_sigkill_mid_write_leaves_the_previous_checkpoint_byte_identical(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    child = _child(KILLED_MID_WRITE, path)
    _kill_after_line(child, "writing")
    # The kill left the torn temporary file (nothing can clean up after SIGKILL) ...
    temps = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(temps) == 1 and temps[0].read_bytes().startswith(b"half a checkpoint")
    # ... but the checkpoint itself is the first save, byte for byte (its previous copy too).
    state, meta = load_checkpoint(path)
    assert meta == {"step": 1} and torch.equal(state["w"], torch.full((1000,), 1.0))
    assert path.read_bytes() == previous_path(path).read_bytes()
    # The next save removes the stale temporary file.
    save_checkpoint(path, {"w": torch.zeros(3)}, {"step": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.safetensors",
                                                          "checkpoint.safetensors"]
    assert load_checkpoint(previous_path(path))[1] == {"step": 1}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("delay", [0.4, 1.5])
def test_sigkill_at_any_moment_of_a_save_leaves_a_complete_checkpoint(tmp_path, delay):
    path = tmp_path / "checkpoint.safetensors"
    _kill_after_line(_child(SAVING_FOR_EVER, path), "saving", delay)
    if not path.exists():
        pytest.skip("the child was killed before its first save finished (machine too slow)")
    for candidate in (path, previous_path(path)):
        if candidate.exists():
            state, meta = load_checkpoint(candidate)  # complete, whatever moment the kill hit
            assert torch.equal(state["w"], torch.full((1_000_000,), float(1 + meta["step"] % 2)))


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, {"w": torch.ones(2)}, {"step": 1})
    save_checkpoint(path, {"w": torch.zeros(2)}, {"step": 2})
    assert load_latest(path)[1:] == ({"step": 2}, "")
    path.write_bytes(path.read_bytes()[:40])  # cut short, e.g. by a failing disk or a bad copy
    state, meta, notice = load_latest(path)
    assert meta == {"step": 1} and torch.equal(state["w"], torch.ones(2))
    assert "corrupt or truncated" in notice and "loaded the previous checkpoint" in notice
    assert "step 1" in notice
    path.unlink()  # a missing newest one falls back too
    assert load_latest(path)[1] == {"step": 1}


def test_both_checkpoints_damaged_is_one_clear_error(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, {"w": torch.ones(2)}, {"step": 1})
    save_checkpoint(path, {"w": torch.ones(2)}, {"step": 2})
    path.write_bytes(b"\x00" * 10)
    previous_path(path).write_bytes(b"")
    with pytest.raises(CheckpointError) as raised:
        load_latest(path)
    message = str(raised.value)
    assert "\n" not in message and "the previous one cannot be used either" in message


def test_resume_and_load_run_fall_back_to_the_previous_checkpoint_and_say_so(tmp_path):
    run = tmp_path / "run"
    list(Trainer(TINY, str(run)).run())  # checkpoints at steps 2 and 4: prev holds step 2
    ckpt = run / "checkpoint.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    loaded = load_run(run, "cpu")
    assert loaded.step == 2 and "loaded the previous checkpoint" in loaded.notice
    trainer = Trainer(dataclasses.replace(TINY, steps=5), str(run), resume=True)
    assert trainer.step == 2
    events = list(trainer.run())
    notices = [e for e in events if isinstance(e, Notice)]
    assert len(notices) == 1 and "corrupt or truncated" in notices[0].message
    assert load_run(run, "cpu").step == 5 and load_run(run, "cpu").notice == ""
    # With both damaged, resuming is one clear error naming the run.
    ckpt.write_bytes(b"junk")
    previous_path(ckpt).write_bytes(b"junk")
    with pytest.raises(RunError, match="cannot resume .* the previous one cannot be used either"):
        Trainer(dataclasses.replace(TINY, steps=6), str(run), resume=True)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_never_saved(tmp_path, bad):
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, {"w": torch.ones(3)}, {"step": 1})
    before = path.read_bytes()
    weights = torch.ones(3)
    weights[1] = bad
    with pytest.raises(CheckpointError, match="NaN or inf values \\(in net.w\\)"):
        save_checkpoint(path, {"net": {"w": weights}, "count": torch.tensor([1, 2])}, {"step": 2})
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["checkpoint.safetensors"]


class _Exploit:
    """Unpickling this would create `marker`: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_a_planted_malicious_checkpoint_runs_no_code(tmp_path, writer):
    """Both newest and previous checkpoint are replaced by pickles (plain, and torch.save's
    zip format) and .pt/.pth files are planted beside them: loading the run fails with one
    clear error, and the marker file the pickles would create never appears."""
    run = tmp_path / "run"
    list(Trainer(dataclasses.replace(TINY, steps=2), str(run)).run())
    marker = tmp_path / "pwned"
    payload = {"weights": _Exploit(marker)}
    for name in ("checkpoint.safetensors", "checkpoint.prev.safetensors", "checkpoint.pt",
                 "model.pth"):
        if writer == "pickle":
            (run / name).write_bytes(pickle.dumps(payload))
        else:
            torch.save(payload, run / name)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_run(run, "cpu")
    with pytest.raises(RunError, match="cannot resume"):
        Trainer(dataclasses.replace(TINY, steps=3), str(run), resume=True)
    assert not marker.exists()


def test_a_damaged_newest_checkpoint_never_replaces_the_good_previous_one(tmp_path):
    """After a fallback, the next save must keep the good previous checkpoint, not rotate the
    damaged newest one into its place."""
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, {"w": torch.ones(2)}, {"step": 1})
    save_checkpoint(path, {"w": torch.ones(2)}, {"step": 2})
    path.write_bytes(b"\x00" * 10)
    save_checkpoint(path, {"w": torch.ones(2)}, {"step": 3})
    assert load_checkpoint(previous_path(path))[1] == {"step": 1}
    assert load_checkpoint(path)[1] == {"step": 3}
