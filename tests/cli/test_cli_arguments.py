"""Arguments a person may type by mistake, run through the real `main` in this process (fast):
each is a usage error (exit 2) or one line (exit 1), before any folder is made or any work is
done, never a traceback or a silent wrong result."""

import json
import os
import signal
import threading

import numpy as np
import pytest
from PIL import Image

from genstudio import cli
from genstudio.core.runs.run import RunDir
from genstudio.core.trained import sampling

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--size", "8", "--batch", "2", "--set", "base_channels=4", "--set", "latent_dim=2",
        "--sample-every", "0", "--device", "cpu", "--quiet"]


def run_main(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(capsys, *args, code=1):
    got, out, err = run_main(capsys, *args)
    assert got == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genstudio: error: "), err
    return lines[0]


def usage_error(capsys, *args):
    with pytest.raises(SystemExit) as exited:
        cli.main([str(a) for a in args])
    assert exited.value.code == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("args") / "run"
    assert cli.main(["train", "--family", "vae", "--data", "builtin:tins", "--out", str(run), "--steps", "3",
                     "--checkpoint-every", "0", *TINY]) == 0
    return run


@pytest.mark.parametrize(("option", "message"), [
    ("latent_dim=abc", "latent_dim must be a whole number, not 'abc'"),
    ("latent_dim=2.5", "latent_dim must be a whole number, not 2.5"),
    ("latent_dim=-5", "latent_dim must not be negative, not -5"),
    ("latent_dim=0", "latent_dim must be at least 1, not 0"),
    ("lr=nan", "lr must be a number, not 'nan'"),
    ("lr=1e999", "lr must be a finite number, not inf"),
    ("beta=[1,2]", r"beta must be a number, not \[1, 2\]"),
    ("grad_clip=null", "grad_clip must be a number, not None"),
    ("per_pixel_scale=maybe", "per_pixel_scale must be true or false, not 'maybe'"),
    ("per_pixel_scale=1", "per_pixel_scale must be true or false, not 1"),
])
def test_a_knob_of_the_wrong_type_or_range_is_one_line_and_makes_no_folder(capsys, tmp_path, option, message):
    line = one_line(capsys, "train", "--family", "vae", "--data", "builtin:tins", "--out", tmp_path / "run",
                    "--steps", "1", "--set", option, "--device", "cpu")
    assert __import__("re").search(message, line), line
    assert not (tmp_path / "run").exists()


def test_knobs_of_every_type_are_taken_as_their_fields_type(tmp_path):
    from genstudio.core.families import config_from_dict, family_class

    gan = config_from_dict(family_class("gan").Config, {"adam_betas": [0.5, 0.9], "lr_generator": 1, "loss": "wgan-gp"})
    assert gan.adam_betas == (0.5, 0.9) and gan.lr_generator == 1.0 and isinstance(gan.lr_generator, float)
    with pytest.raises(ValueError, match=r"adam_betas must be \[\] or two numbers in \[0, 1\)"):
        config_from_dict(family_class("gan").Config, {"adam_betas": [0.5, 0.9, 0.1]})
    with pytest.raises(ValueError, match="loss must be one of"):
        config_from_dict(family_class("gan").Config, {"loss": "hinge"})
    with pytest.raises(ValueError, match=r"channel_mults must be a list like \[1, 2\]"):
        config_from_dict(family_class("diffusion").Config, {"channel_mults": 2})


@pytest.mark.parametrize("seed", [str(2**62), str(2**64), "-1", "abc"])
def test_seeds_are_bounded_in_the_help_and_refused_beyond(capsys, tmp_path, run, seed):
    bound = "a seed is a whole number from 0 to 2147483647"
    assert bound in usage_error(capsys, "train", "--family", "vae", "--data", "builtin:tins", "--out",
                                tmp_path / "new", "--seed", seed)
    assert bound in usage_error(capsys, "sample", run, "--n", "1", "--seed", seed, "--out", tmp_path / "s")
    line = one_line(capsys, "interpolate", run, "--from", f"seed:{seed}", "--to", "seed:1", "--out", tmp_path / "i.png")
    assert "from 0 to 2147483647" in line
    assert not (tmp_path / "new").exists() and not (tmp_path / "s").exists()
    code, _, _ = run_main(capsys, "sample", run, "--n", "1", "--seed", "2147483647", "--out", tmp_path / "s")
    assert code == 0


@pytest.mark.parametrize("epochs", ["inf", "nan", "0", "-1", "lots"])
def test_epochs_must_be_a_finite_number_above_zero(capsys, tmp_path, epochs):
    err = usage_error(capsys, "train", "--family", "vae", "--data", "builtin:tins", "--out", tmp_path / "run",
                      "--epochs", epochs)
    assert "--epochs takes a number above 0" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("option", "message"), [
    ("steps=2.5", "steps must be a whole number, not 2.5"),
    ("steps=abc", "steps must be a whole number, not 'abc'"),
    ("eta=abc", "eta must be a number, not 'abc'"),
    ("eta=nan", "eta must be a number, not 'nan'"),
    ("eta=-1", "steps must be ≥ 1, eta ≥ 0"),
])
def test_sampling_options_of_the_wrong_type_are_one_line(capsys, tmp_path_factory, tmp_path, option, message):
    run = tmp_path_factory.getbasetemp() / "diffusion-run"
    if not run.exists():
        assert cli.main(["train", "--family", "diffusion", "--data", "builtin:tins", "--out", str(run), "--steps",
                         "1", "--size", "8", "--batch", "2", "--set", "base_channels=4", "--set",
                         "channel_mults=[1]", "--set", "timesteps=20", "--sample-every", "0", "--device", "cpu",
                         "--quiet"]) == 0
        capsys.readouterr()
    line = one_line(capsys, "sample", run, "--n", "2", "--seed", "0", "--out", tmp_path / "s", "--option", option)
    assert message in line
    assert not (tmp_path / "s").exists()


def test_eval_refuses_an_empty_or_unknown_metric_list_before_any_work(capsys, run):
    assert "--metrics: no metric named" in one_line(capsys, "eval", run, "--data", "builtin:tins", "--metrics", ",")
    assert "unknown metric(s) beauty" in one_line(capsys, "eval", run, "--data", "builtin:tins", "--metrics", "bpd,beauty")


@pytest.mark.parametrize(("metrics", "message"), [
    ("bpd", 'settings.eval_metrics is "bpd", not a list of strings'),
    (["bpd", "beauty"], r"eval_metrics: unknown metric\(s\) beauty"),
])
def test_a_runs_evaluation_metrics_are_checked_before_it_trains(capsys, tmp_path, run, metrics, message):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    config = json.loads((copy / "config.json").read_text())
    config["settings"]["eval_metrics"] = metrics
    (copy / "config.json").write_text(json.dumps(config))
    before = (copy / "metrics.jsonl").read_text()
    assert __import__("re").search(message, one_line(capsys, "train", "--out", copy, "--resume", "--steps", "5"))
    assert (copy / "metrics.jsonl").read_text() == before


def test_a_resume_to_fewer_steps_than_the_run_has_is_refused(capsys, run):
    line = one_line(capsys, "train", "--out", run, "--resume", "--steps", "2")
    assert "is at step 3 of 3; to train it further give a total above 3 steps (--steps), not 2" in line
    line = one_line(capsys, "train", "--out", run, "--resume")  # its own total: nothing left to do
    assert "give a total above 3 steps" in line
    assert RunDir(run).read_settings().steps == 3


def test_eval_on_a_run_it_cannot_write_says_so_before_the_work(capsys, run, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path).startswith(str(run)) else real_access(path, mode))
    line = one_line(capsys, "eval", run, "--data", "builtin:tins", "--metrics", "bpd", "--reference", "20")
    assert "is read-only); add --no-record" in line
    code, out, _ = run_main(capsys, "eval", run, "--data", "builtin:tins", "--metrics", "bpd", "--reference", "20",
                            "--no-record")
    assert code == 0 and "eval_bpd" in out


def test_eval_prints_its_figures_even_when_recording_them_fails(capsys, run, monkeypatch):
    def disk_full(self, record):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RunDir, "append_metrics", disk_full)
    code, out, err = run_main(capsys, "eval", run, "--data", "builtin:tins", "--metrics", "bpd", "--reference", "20")
    assert code == 1 and "eval_bpd" in out
    assert "the figures above were not recorded in" in err and "No space left on device" in err


def test_inpaint_and_interpolate_refuse_to_write_over_their_inputs(capsys, tmp_path, run):
    image = tmp_path / "photo.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(image)
    mask = tmp_path / "mask.png"
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(mask)
    before = image.read_bytes(), mask.read_bytes()
    for out in (image, mask, tmp_path / "." / "photo.png"):
        line = one_line(capsys, "inpaint", run, "--image", image, "--mask", mask, "--out", out)
        assert "is an input of this command" in line
    line = one_line(capsys, "interpolate", run, "--from", image, "--to", "seed:1", "--out", image)
    assert "is an input of this command" in line
    assert (image.read_bytes(), mask.read_bytes()) == before


def test_a_long_sampling_is_made_in_batches_and_reproducible(capsys, tmp_path, run, monkeypatch):
    sizes = []
    loaded_family_sample = sampling.generate

    def counting(loaded, n, *args, **kwargs):
        sizes.append(n)
        return loaded_family_sample(loaded, n, *args, **kwargs)

    monkeypatch.setattr(sampling, "generate", counting)
    monkeypatch.setattr(sampling, "SAMPLING_BATCH", 16)
    assert run_main(capsys, "sample", run, "--n", "40", "--seed", "5", "--out", tmp_path / "a")[0] == 0
    assert sizes == [16, 16, 8]  # never more than a batch at once
    assert run_main(capsys, "sample", run, "--n", "40", "--seed", "5", "--out", tmp_path / "b")[0] == 0
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert len(names) == 40 and names[-1] == f"{run.name}-seed5-0039.png"
    assert all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in names)
    assert run_main(capsys, "sample", run, "--n", "16", "--seed", "5", "--out", tmp_path / "c")[0] == 0
    assert all((tmp_path / "c" / n).read_bytes() == (tmp_path / "a" / n).read_bytes()
               for n in os.listdir(tmp_path / "c"))  # the first batch is the short call's
    other = run_main(capsys, "sample", run, "--n", "40", "--seed", "6", "--out", tmp_path / "d")
    assert other[0] == 0
    later = [(tmp_path / d / f"{run.name}-seed{seed}-0020.png").read_bytes() for d, seed in (("a", 5), ("d", 6))]
    assert later[0] != later[1]
    assert "--grid holds at most" in one_line(capsys, "sample", run, "--n", "5000", "--seed", "0", "--out",
                                              tmp_path / "e", "--grid", tmp_path / "g.png")


def test_many_skipped_files_are_summarised_and_a_slow_load_shows_progress(capsys, tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(data / f"ok{i}.png")
    for i in range(25):
        (data / f"bad{i:02d}.png").write_text("not an image")
    monkeypatch.setattr(cli._ProgressLine, "QUIET_SECONDS", 0.0)
    monkeypatch.setattr(cli._ProgressLine, "EVERY_SECONDS", 0.0)
    code, _, err = run_main(capsys, "train", "--family", "vae", "--data", data, "--out", tmp_path / "run", "--steps",
                            "1", *[a for a in TINY if a != "--quiet"])
    lines = err.splitlines()
    assert code == 0
    assert any(line.startswith("genstudio: reading images: ") for line in lines)
    assert "genstudio: 25 skipped: 25 not an image" in lines
    assert sum(line.startswith("  skipped ") for line in lines) == 20 and "  … and 5 more" in lines
    code, _, err = run_main(capsys, "train", "--family", "vae", "--data", data, "--out", tmp_path / "quiet",
                            "--steps", "1", *TINY)
    assert err.splitlines() == ["genstudio: 25 skipped: 25 not an image"]


def test_sigterm_during_a_command_is_one_line_and_exit_143(capsys, run, tmp_path, monkeypatch):
    def terminated(*_args, **_kwargs):
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(sampling, "generate", terminated)
    code, _, err = run_main(capsys, "sample", run, "--n", "2", "--seed", "0", "--out", tmp_path / "s")
    assert code == 143 and err.strip() == "genstudio: stopped by SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_training_stopped_by_a_signal_exits_with_its_code_after_saving(capsys, tmp_path, signum, code):
    run = tmp_path / "run"
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signum))
    timer.start()
    try:
        got, out, _ = run_main(capsys, "train", "--family", "vae", "--data", "builtin:tins", "--out", run,
                               "--steps", "100000", *TINY)
    finally:
        timer.cancel()
    assert got == code and "stopped at step" in out
    from genstudio.core.runs.run import load_run

    assert load_run(run, "cpu").step > 0  # saved


def test_train_minutes_trains_for_that_long_and_ends_as_a_stop_does(capsys, tmp_path):
    run = tmp_path / "run"
    code, out, err = run_main(capsys, "train", "--family", "vae", "--data", "builtin:tins", "--out", run,
                              "--minutes", "0.02", *[a for a in TINY if a != "--quiet"], "--log-every", "5")
    assert code == 0
    assert "the 0.02-minute time limit is reached at step " in err and "saving and drawing the last samples" in err
    assert "time limit reached at step " in out.splitlines()[-1]
    assert "step 5  " in out  # no "of 1000000000": the time alone ends it
    from genstudio.core.runs.run import load_run

    loaded = load_run(run, "cpu")
    assert loaded.settings.minutes == 0.02 and loaded.step > 0
    assert run_main(capsys, "info", run)[1].splitlines()[2].endswith("(limited by time: 0.02 minutes a session)")
    for bad in ("0", "-1", "inf", "soon"):
        assert "--minutes takes a number above 0" in usage_error(capsys, "train", "--family", "vae", "--data",
                                                                  "builtin:tins", "--out", tmp_path / "x",
                                                                  "--minutes", bad)
