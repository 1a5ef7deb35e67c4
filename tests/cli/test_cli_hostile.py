"""The command line used the way a careless or hostile user would: a second writer, another
folder on resume, odd names and arguments. Each case ends with one line and exit 1, or works,
and leaves the files as they were."""

import os
import signal
import subprocess
import sys
import time

from cli_helpers import genstudio

TINY = ["--size", "8", "--batch", "2", "--set", "base_channels=4", "--set", "latent_dim=2",
        "--sample-every", "0", "--device", "cpu", "--quiet"]


def _error(result):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genstudio: error: "), result.stderr
    return lines[0]


def test_a_resume_needs_only_the_run_and_refuses_another_data_source(tmp_path):
    run = tmp_path / "run"
    genstudio("train", "--family", "vae", "--data", "builtin:tins", "--out", run, "--steps", "2", *TINY)
    other = _error(genstudio("train", "--out", run, "--resume", "--data", "builtin:shapes", check=False))
    assert "drop --data builtin:shapes (the run's: builtin:tins)" in other
    family = _error(genstudio("train", "--out", run, "--resume", "--family", "gan", check=False))
    assert "drop --family gan (the run's: vae)" in family
    resumed = genstudio("train", "--out", run, "--resume", "--steps", "3", "--quiet")
    assert "completed at step 3" in resumed.stdout
    usage = genstudio("train", "--out", tmp_path / "new", "--family", "vae", check=False)
    assert usage.returncode == 2 and "the following arguments are required: --data" in usage.stderr


def test_a_relative_data_folder_is_found_again_from_another_working_folder(tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(data / f"{i}.png")
    subprocess.run([sys.executable, "-m", "genstudio", "train", "--family", "vae", "--data", "data",
                    "--out", "run", "--steps", "1", *TINY], cwd=tmp_path, check=True, capture_output=True)
    resumed = genstudio("train", "--out", tmp_path / "run", "--resume", "--steps", "2", "--quiet")
    assert "completed at step 2" in resumed.stdout


def test_a_second_writer_is_told_who_holds_the_run_and_a_killed_one_holds_nothing(tmp_path):
    run = tmp_path / "run"
    genstudio("train", "--family", "vae", "--data", "builtin:tins", "--out", run, "--steps", "1", *TINY)
    first = subprocess.Popen([sys.executable, "-m", "genstudio", "train", "--out", run, "--resume",
                              "--steps", "100000", "--log-every", "1", "--checkpoint-every", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().startswith("step ")  # training, and holding the run
        second = genstudio("train", "--out", run, "--resume", "--steps", "5", check=False)
        line = _error(second)
        assert f"is in use by process {first.pid} on " in line and "(resuming, since " in line
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    steps_before = run.joinpath("metrics.jsonl").read_text().count("\n")
    assert steps_before > 1
    third = genstudio("train", "--out", run, "--resume", "--steps", "3", "--quiet")  # no stale lock
    assert "completed at step 3" in third.stdout


def test_an_error_naming_a_file_cannot_drive_the_terminal(tmp_path):
    name = tmp_path / "run\x1b[2K\x1b]0;owned\x07"
    line = _error(genstudio("info", name, check=False))
    assert "\x1b" not in line and "\\x1b[2K\\x1b]0;owned\\x07" in line


def test_the_run_of_a_killed_first_save_can_be_started_again(tmp_path):
    run = tmp_path / "run"
    started = time.monotonic()
    first = subprocess.Popen([sys.executable, "-m", "genstudio", "train", "--family", "vae", "--data",
                              "builtin:tins", "--out", run, "--steps", "100000", "--log-every", "1",
                              "--checkpoint-every", "0", *TINY[:-1]],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert first.stdout.readline().startswith("step ")
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    assert time.monotonic() - started < 120
    resume = _error(genstudio("train", "--out", run, "--resume", check=False))
    assert "ended before its first checkpoint" in resume and "without --resume" in resume
    again = genstudio("train", "--family", "vae", "--data", "builtin:tins", "--out", run, "--steps", "1", *TINY)
    assert "completed at step 1" in again.stdout
    assert not os.path.exists(run / "checkpoint.prev.safetensors")
