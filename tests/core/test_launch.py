"""Launching a data-parallel run with torchrun and following it (core/runtime/launch.py): the command
reproduces the settings, events survive the pipe, and a real 2-process run can be followed,
stopped and reported when it fails."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from genstudio.cli import build_parser, train_settings
from genstudio.core.families import family_class
from genstudio.core.runs.checkpoint import load_checkpoint
from genstudio.core.runs.images import save_png
from genstudio.core.runs.run import RunDir, TrainSettings
from genstudio.core.runtime.launch import (
    LaunchedRun,
    LaunchError,
    decode_event,
    encode_event,
    torchrun_command,
    train_arguments,
)
from genstudio.core.runtime.training import (
    BatchLowered,
    CheckpointSaved,
    Evaluated,
    Notice,
    PauseChanged,
    RunStarted,
    SamplesReady,
    StepLogged,
    TrainingFinished,
)


def _parsed(arguments: list[str]) -> TrainSettings:
    return train_settings(build_parser().parse_args(["train", *arguments, "--out", "RUN"]))


def test_train_arguments_reproduce_every_setting():
    settings = TrainSettings(
        family="diffusion", data="/some where/imgs", size=24, channels=1, steps=777, batch=48, seed=5,
        device="cpu", conditional=True, family_config={"base_channels": 8, "schedule": "cosine", "p": 0.5},
        log_every=3, sample_every=0, checkpoint_every=40, eval_every=9,
        eval_metrics=("bpd", "fid"), precision="bf16", compile=True, minutes=2.5)
    assert _parsed(train_arguments(settings)) == settings
    assert _parsed(train_arguments(TrainSettings())) == TrainSettings()


def test_settings_without_a_train_option_are_refused():
    with pytest.raises(LaunchError, match="no option for grid_samples"):
        train_arguments(TrainSettings(grid_samples=9))


def test_the_command_checks_the_split_of_the_batch():
    settings = TrainSettings(batch=10)
    with pytest.raises(LaunchError, match="multiple of the number of processes"):
        torchrun_command(settings, "RUN", 3)
    with pytest.raises(LaunchError, match="at least 1"):
        torchrun_command(settings, "RUN", 0)
    command = torchrun_command(settings, "RUN", 2)
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert command[-3:] == ["--out", "RUN", "--events"]
    assert torchrun_command(settings, "RUN", 2, resume=True)[-4:] == ["--out", "RUN", "--resume", "--events"]


def test_every_event_survives_encoding(tmp_path):
    grid = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    save_png(tmp_path / "grid.png", grid)
    events = [
        RunStarted("/r", 0, 10, "shapes", "", "cpu", 1234),
        StepLogged(5, 10, {"loss": 1.5, "bpd": 3.25}, 120.0, None, 0.5),
        SamplesReady(5, grid, str(tmp_path / "grid.png")),
        CheckpointSaved(5, "/r/checkpoint.safetensors"),
        Evaluated(5, {"bpd": np.float32(3.5), "samples": np.int64(64), "note": "x"}),
        PauseChanged(5, True), Notice(5, "skipped a step"), BatchLowered(5, 64, 32, "lowered"),
        TrainingFinished(10, "completed", "/r"),
    ]
    for event in events:
        line = encode_event(event)
        assert "\n" not in line
        decoded = decode_event(line)
        assert type(decoded) is type(event)
        if isinstance(event, SamplesReady):
            assert np.array_equal(decoded.grid, grid)
            assert dataclasses.replace(decoded, grid=None) == dataclasses.replace(event, grid=None)
        else:
            assert decoded == event
    assert decode_event("W1201 torchrun says something") is None


def _tiny(steps: int, data: str = "builtin:tins") -> TrainSettings:
    return TrainSettings(family="vae", data=data, size=8, steps=steps, batch=8, seed=1, device="cpu",
                         family_config=dict(family_class("vae").TINY), log_every=2, sample_every=0,
                         checkpoint_every=0, eval_every=0)


def test_a_launched_run_is_followed_and_stops_like_an_in_process_one(tmp_path):
    run_dir = tmp_path / "run"
    launched = LaunchedRun(_tiny(steps=1_000_000), run_dir, 2)
    seen = []
    try:
        for event in launched.events():
            seen.append(event)
            if isinstance(event, StepLogged) and event.step == 4:
                launched.stop()
    finally:
        launched.kill()
    kinds = [type(e) for e in seen]
    assert kinds[0] is RunStarted and kinds[-1] is TrainingFinished
    logged = [e.step for e in seen if isinstance(e, StepLogged)]
    assert logged[:2] == [2, 4]  # rank 0 only: one event per logged step, not one per process
    finished = seen[-1]
    assert finished.reason == "stopped" and finished.run_dir == str(run_dir)
    # The stop was agreed by both processes after the same step, and rank 0 saved it.
    _, meta = load_checkpoint(RunDir(run_dir).checkpoint_path)
    assert meta["step"] == finished.step >= 4
    assert CheckpointSaved in kinds and SamplesReady in kinds
    samples = next(e for e in seen if isinstance(e, SamplesReady))
    assert samples.grid.ndim == 3 and samples.grid.dtype == np.uint8


def test_a_launch_continues_a_run_trained_in_one_process(tmp_path):
    # The app's Continue with Processes = 2 on a run it trained in its own thread: torchrun
    # resumes it from its checkpoint (a change of process count), to the new total of steps.
    from genstudio.core.runtime.training import Trainer

    run_dir = tmp_path / "run"
    for _event in Trainer(_tiny(steps=4), str(run_dir)).run():
        pass
    seen = list(LaunchedRun(_tiny(steps=8), run_dir, 2, resume=True).events())
    assert seen[0].start_step == 4 and seen[0].total_steps == 8
    assert seen[-1].reason == "completed" and seen[-1].step == 8
    _, meta = load_checkpoint(RunDir(run_dir).checkpoint_path)
    assert meta["step"] == 8
    assert [r["step"] for r in RunDir(run_dir).read_metrics() if "loss" in r] == [2, 4, 6, 8]


def test_a_launch_that_fails_says_why(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    launched = LaunchedRun(_tiny(steps=4, data=str(empty)), tmp_path / "run", 2)
    with pytest.raises(LaunchError, match=r"2 training processes ended \(exit \d+\).*No images found"):
        list(launched.events())
    assert not (tmp_path / "run").exists()


def test_unknown_evaluation_metrics_are_refused_before_anything_is_written(tmp_path, capsys):
    from genstudio.cli import main

    out = tmp_path / "run"
    assert main(["train", "--family", "vae", "--data", "builtin:tins", "--out", str(out),
                 "--eval-metrics", "bpd,sharpness"]) == 1
    assert "--eval-metrics: unknown metric(s) sharpness" in capsys.readouterr().err
    assert not out.exists()
