"""The command line facing bad folders and damaged checkpoints: every skip reported with its
reason, an all-bad folder refused before training, a damaged checkpoint replaced by the
previous one with a warning."""

import os

from cli_helpers import genstudio
from PIL import Image

TINY = ["--size", "8", "--batch", "2", "--set", "base_channels=4", "--set", "latent_dim=2",
        "--sample-every", "0", "--checkpoint-every", "1", "--device", "cpu", "--quiet"]


def test_train_reports_every_skipped_file_with_its_reason(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(data / f"ok{i}.png")
    (data / "empty.png").write_bytes(b"")
    (data / "text.jpg").write_text("not a picture")
    with open(os.path.join(os.fsencode(data), b"caf\xe9.png"), "wb") as f:
        f.write(b"%!PS-Adobe-3.0 EPSF-3.0\n")
    os.mkfifo(data / "pipe.png")
    result = genstudio("train", "--family", "vae", "--data", data, "--out", tmp_path / "run",
                       "--steps", "2", *[a for a in TINY if a != "--quiet"])
    assert "completed at step 2" in result.stdout
    lines = result.stderr.splitlines()
    summary = "genstudio: 4 skipped: 1 not a regular file, 1 not an image, 1 unsupported format, 1 zero-byte file"
    assert lines[0] == summary
    quiet = genstudio("train", "--family", "vae", "--data", data, "--out", tmp_path / "quiet", "--steps", "1", *TINY)
    assert quiet.stderr.splitlines() == [summary]  # --quiet: the summary alone
    assert sorted(lines[1:]) == [
        "  skipped caf\\xe9.png: unsupported format (EPS)",
        "  skipped empty.png: zero-byte file",
        "  skipped pipe.png: not a regular file",
        "  skipped text.jpg: not an image",
    ]


def test_an_all_bad_folder_is_refused_before_training(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.png").write_bytes(b"")
    (data / "b.png").write_text("text")
    result = genstudio("train", "--family", "vae", "--data", data, "--out", tmp_path / "run",
                       "--steps", "2", *TINY, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"genstudio: error: No usable images in {data}: 2 files skipped "
        "(1 not an image, 1 zero-byte file).")
    assert not (tmp_path / "run").exists()


def test_a_damaged_checkpoint_falls_back_to_the_previous_one_with_a_warning(tmp_path):
    run = tmp_path / "run"
    genstudio("train", "--family", "vae", "--data", "builtin:tins", "--out", run, "--steps", "2",
              *TINY)
    checkpoint = run / "checkpoint.safetensors"
    checkpoint.write_bytes(checkpoint.read_bytes()[:64])
    info = genstudio("info", run)
    assert "step       1 of 2" in info.stdout
    assert info.stderr.startswith("genstudio: warning: checkpoint ")
    assert "corrupt or truncated" in info.stderr and "loaded the previous checkpoint" in info.stderr
    resumed = genstudio("train", "--family", "vae", "--data", "builtin:tins", "--out", run,
                        "--resume", "--steps", "3", *TINY)
    assert "completed at step 3" in resumed.stdout
    assert "loaded the previous checkpoint" in resumed.stderr


def test_a_second_ctrl_c_also_skips_the_final_grid_and_evaluation():
    """The first Ctrl+C (or SIGTERM) stops after saving the last whole step; a second one
    hurries: the trainer then skips the final sample grid and evaluation
    (tests/core/test_interrupt.py checks what hurry does in the loop)."""
    import signal

    from genstudio.cli import _restore_signals, _stop_on_signals
    from genstudio.core.runtime.training import TrainingControl

    control = TrainingControl()
    previous, received = _stop_on_signals(control)
    try:
        signal.raise_signal(signal.SIGINT)
        assert control.stop_requested and not control.hurried
        signal.raise_signal(signal.SIGTERM)
        assert control.hurried
        assert received == [signal.SIGINT, signal.SIGTERM]
    finally:
        _restore_signals(previous)
    assert signal.getsignal(signal.SIGINT) is previous[signal.SIGINT]
