"""The command line as a user runs it: real subprocesses, exit codes, files on disk."""

import json
import subprocess
import sys

import pytest
from cli_helpers import genstudio
from PIL import Image

from genstudio.core.runs.images import read_png_metadata

TINY = ["--size", "16", "--batch", "8", "--set", "base_channels=4", "--set", "latent_dim=3",
        "--log-every", "2", "--sample-every", "0", "--checkpoint-every", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    result = genstudio("train", "--family", "vae", "--data", "builtin:tins", "--out", run,
                       "--steps", "6", *TINY)
    assert "completed at step 6" in result.stdout
    assert "step 6/6" in result.stdout
    assert "On 256 held-out images: elbo " in result.stdout and "iwae " in result.stdout
    return run


def test_train_writes_a_run(trained_run):
    assert (trained_run / "checkpoint.safetensors").is_file()
    assert (trained_run / "config.json").is_file()
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 6]  # three logged steps, then the evaluation
    assert records[-1]["reference_images"] == 256 and records[-1]["elbo_bpd"] > 0


def test_train_says_which_knobs_it_took_from_the_suggestion_for_the_image_size(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(12):
        Image.new("RGB", (64, 64), (20 * i, 100, 200 - 10 * i)).save(folder / f"{i}.png")
    args = ["train", "--family", "vae", "--data", folder, "--steps", "1", "--batch", "2",
            "--size", "64", "--set", "latent_dim=3", "--sample-every", "0", "--device", "cpu"]
    result = genstudio(*args, "--out", tmp_path / "suggested")
    assert ("genstudio: base_channels 16, suggested for 64 px images on a CPU (the defaults suit up to 32 px); "
            "--set base_channels=32 keeps the default") in result.stderr
    config = json.loads((tmp_path / "suggested" / "config.json").read_text())
    assert config["family_config"]["base_channels"] == 16
    chosen = genstudio(*args, "--set", "base_channels=8", "--out", tmp_path / "chosen")
    assert "suggested" not in chosen.stderr


def test_same_run_and_seed_give_byte_identical_pngs(trained_run, tmp_path):
    genstudio("sample", trained_run, "--n", "5", "--seed", "11", "--out", tmp_path / "a", "--grid", tmp_path / "a.png")
    genstudio("sample", trained_run, "--n", "5", "--seed", "11", "--out", tmp_path / "b", "--grid", tmp_path / "b.png")
    genstudio("sample", trained_run, "--n", "5", "--seed", "12", "--out", tmp_path / "c")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == [f"{trained_run.name}-seed11-{i:04d}.png" for i in range(5)]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    others = sorted((tmp_path / "c").iterdir())
    assert [p.name for p in others] == [f"{trained_run.name}-seed12-{i:04d}.png" for i in range(5)]
    assert any((tmp_path / "a" / n).read_bytes() != p.read_bytes() for n, p in zip(names, others, strict=True))
    # Again into the same folder: the first files stay, the new ones go beside them, and it says so.
    before = {n: (tmp_path / "a" / n).read_bytes() for n in names}
    out = genstudio("sample", trained_run, "--n", "2", "--seed", "12", "--out", tmp_path / "a").stdout
    assert "0 of them" not in out and "beside" not in out  # seed 12's names were free
    out = genstudio("sample", trained_run, "--n", "2", "--seed", "11", "--out", tmp_path / "a").stdout
    assert "2 of them named -2, -3, … beside files already there" in out
    assert all((tmp_path / "a" / n).read_bytes() == data for n, data in before.items())
    assert (tmp_path / "a" / names[1].replace(".png", "-2.png")).is_file()
    genstudio("sample", trained_run, "--n", "1", "--seed", "12", "--out", tmp_path / "a", "--overwrite")
    assert not (tmp_path / "a" / f"{trained_run.name}-seed12-0000-2.png").exists()
    with Image.open(tmp_path / "a" / names[0]) as im:
        assert im.size == (16, 16)  # the model's resolution
    meta = read_png_metadata(tmp_path / "a" / names[0])
    assert meta["family"] == "vae" and meta["seed"] == "11" and meta["step"] == "6" and meta["run"] == "run"


def test_info_describes_the_run(trained_run):
    text = genstudio("info", trained_run).stdout
    assert "vae" in text and "step       6 of 6" in text and "builtin:tins" in text
    info = json.loads(genstudio("info", trained_run, "--json").stdout)
    assert info["step"] == 6 and info["family"] == "vae" and "log_prob" in info["capabilities"]


def test_resume_continues_to_the_total_step_count(trained_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    out = genstudio("train", "--family", "vae", "--data", "builtin:tins", "--out", run, "--steps", "8",
                    "--resume", *TINY).stdout
    assert "completed at step 8" in out
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 8


def test_resume_keeps_the_runs_own_settings_and_takes_a_new_schedule(trained_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    resume = ["train", "--family", "vae", "--data", "builtin:tins", "--out", run, "--steps", "8", "--resume"]
    # Options that would change what the run trains are refused, naming the run's own value.
    for extra, said in ((["--batch", "16"], "--batch 16 (the run's: 8)"),
                        (["--set", "latent_dim=5"], "--set latent_dim=5 (the run's: 3)"),
                        (["--conditional"], "--conditional (the run's: False)")):
        result = genstudio(*resume, *extra, check=False)
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
        assert said in result.stderr and "train a new run" in result.stderr
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 6
    # Left out, an option is the run's own (batch 8, log every 2, 16 px, its model), not the
    # default; given, a schedule option changes, and the run's config.json says so from then on.
    out = genstudio(*resume, "--sample-every", "1", "--set", "latent_dim=3", "--device", "cpu").stdout
    assert "completed at step 8" in out
    settings = json.loads((run / "config.json").read_text())["settings"]
    assert (settings["batch"], settings["log_every"], settings["size"]) == (8, 2, 16)
    assert (settings["steps"], settings["sample_every"]) == (8, 1)
    assert sorted(p.name for p in (run / "samples").glob("step_*.png")) == [
        "step_0000006.png", "step_0000007.png", "step_0000008.png"]


@pytest.mark.parametrize("args,message", [
    (["sample", "/no/such/run", "--n", "2", "--seed", "0", "--out", "x"], "no run at"),
    (["train", "--family", "vae", "--data", "/no/such/folder", "--out", "{tmp}/r"], "folder"),
    (["train", "--family", "nope", "--data", "builtin:tins", "--out", "{tmp}/r"], "unknown family"),
    (["train", "--family", "vae", "--data", "builtin:nope", "--out", "{tmp}/r"], "nope"),
    (["train", "--family", "vae", "--data", "builtin:tins", "--out", "{tmp}/r", "--set", "bogus=1"], "bogus"),
    (["train", "--family", "vae", "--data", "builtin:tins", "--out", "{tmp}/r", "--size", "3"], "size"),
])
def test_bad_input_exits_1_with_one_clear_line(tmp_path, args, message):
    result = genstudio(*[a.replace("{tmp}", str(tmp_path)) for a in args], check=False)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genstudio: error:"), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()  # a refused run leaves no folder behind


def test_existing_run_without_resume_is_refused(trained_run):
    result = genstudio("train", "--family", "vae", "--data", "builtin:tins", "--out", trained_run, *TINY, check=False)
    assert result.returncode == 1 and "--resume" in result.stderr


def test_bad_label_and_usage_errors(trained_run, tmp_path):
    result = genstudio("sample", trained_run, "--n", "2", "--seed", "0", "--out", tmp_path, "--label", "cat", check=False)
    assert result.returncode == 1 and "not class-conditional" in result.stderr
    assert genstudio("train", "--family", "vae", check=False).returncode == 2
    assert genstudio("frobnicate", check=False).returncode == 2


def test_version_and_console_script():
    assert genstudio("--version").stdout.startswith("genstudio ")
    script = subprocess.run([str(__import__("pathlib").Path(sys.executable).with_name("genstudio")), "--version"],
                            capture_output=True, text=True, timeout=60)
    assert script.returncode == 0 and script.stdout.startswith("genstudio ")


def test_the_end_of_run_work_is_reported_stage_by_stage(capsys, monkeypatch):
    from genstudio import cli

    monkeypatch.setattr(cli._ProgressLine, "QUIET_SECONDS", 0.0)  # every report shows
    monkeypatch.setattr(cli._ProgressLine, "EVERY_SECONDS", 0.0)
    report = cli._StageProgress()
    for what, done, total in [("drawing the final samples", 1, 4), ("drawing the final samples", 4, 4),
                              ("measuring: likelihood", 0, 0), ("measuring: likelihood", 8, 16),
                              ("measuring: likelihood", 16, 16)]:
        report(what, done, total)
    err = capsys.readouterr().err.splitlines()
    assert [line.split(", done in")[0] for line in err] == [
        "genstudio: drawing the final samples: 1 of 4", "genstudio: drawing the final samples: 4 of 4",
        "genstudio: measuring: likelihood: 8 of 16", "genstudio: measuring: likelihood: 16 of 16"]
    assert [", done in" in line for line in err] == [False, True, False, True]
