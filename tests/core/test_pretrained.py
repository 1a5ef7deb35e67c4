"""Pretrained runs as a mechanism: packaging a run drops its optimizer state, installing copies
it into the user's runs folder once, and a weights-only run refuses to be resumed."""

from __future__ import annotations

import pytest
import torch

from genstudio.core.runs import pretrained
from genstudio.core.runs.checkpoint import load_checkpoint
from genstudio.core.runs.run import RunError, TrainSettings, load_run
from genstudio.core.runtime.training import Trainer, TrainingControl


@pytest.fixture
def tiny_shipped(tmp_path, monkeypatch):
    """A tiny VAE run trained here and packaged as a pretrained run, in its own folder."""
    run_dir = tmp_path / "trained"
    settings = TrainSettings(family="vae", data="builtin:tins", size=8, steps=3, batch=4, eval_images=0,
                             sample_every=0, checkpoint_every=0,
                             family_config={"base_channels": 4, "latent_dim": 2})
    for _event in Trainer(settings, str(run_dir)).run():
        pass
    root = tmp_path / "shipped"
    entry = pretrained.package(run_dir, root, "vae-tiny", "VAE · tiny", "genstudio train …")
    pretrained.write_manifest(root, [entry])
    monkeypatch.setenv("GENSTUDIO_PRETRAINED", str(root))
    return pretrained.find("vae-tiny")


def test_packaging_drops_the_optimizer_state_and_keeps_the_weights(tiny_shipped, tmp_path):
    shipped, _ = load_checkpoint(tiny_shipped.path / "checkpoint.safetensors")
    trained, _ = load_checkpoint(tmp_path / "trained" / "checkpoint.safetensors")
    assert trained["family"]["optimizers"] and shipped["family"]["optimizers"] == {}
    for key, weights in trained["family"]["networks"].items():
        for name, tensor in weights.items():
            assert torch.equal(shipped["family"]["networks"][key][name], tensor), name
    assert (tiny_shipped.path / "checkpoint.safetensors").stat().st_size < (
        tmp_path / "trained" / "checkpoint.safetensors").stat().st_size / 2


def test_a_run_stopped_before_its_planned_steps_ships_as_finished_at_the_step_it_reached(tmp_path):
    run_dir = tmp_path / "trained"
    settings = TrainSettings(family="vae", data="builtin:tins", size=8, steps=100, batch=4, eval_images=0,
                             sample_every=0, checkpoint_every=0,
                             family_config={"base_channels": 4, "latent_dim": 2})
    control = TrainingControl()
    for event in Trainer(settings, str(run_dir)).run(control):
        if getattr(event, "step", 0) >= 3:
            control.stop()  # as a time limit stops it: the last whole step is saved
    step = load_run(run_dir, device="cpu").step
    assert 0 < step < 100
    pretrained.package(run_dir, tmp_path / "shipped", "vae-tiny", "VAE · tiny", "genstudio train …")
    shipped = load_run(tmp_path / "shipped" / "vae-tiny", device="cpu")
    assert shipped.settings.steps == shipped.step == step


def test_installing_copies_once_and_replaces_a_damaged_copy(tiny_shipped):
    run = tiny_shipped
    target = pretrained.install(run)
    assert target.parent.name == "runs" and target != run.path
    assert pretrained.file_sha256(target / "checkpoint.safetensors") == run.sha256
    (target / "explorer").mkdir()  # the app's own files in the copy survive a second install
    assert pretrained.install(run) == target and (target / "explorer").is_dir()
    (target / "checkpoint.safetensors").write_bytes(b"damaged")
    pretrained.install(run)
    assert pretrained.file_sha256(target / "checkpoint.safetensors") == run.sha256
    assert load_run(target, device="cpu").step == 3
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_a_shipped_checkpoint_that_does_not_match_its_manifest_is_refused(tiny_shipped):
    with open(tiny_shipped.path / "checkpoint.safetensors", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(pretrained.PretrainedError, match="does not match its manifest"):
        pretrained.install(tiny_shipped)


def test_a_pretrained_run_cannot_be_resumed_and_says_why(tiny_shipped):
    target = pretrained.install(tiny_shipped)
    settings = TrainSettings(family="vae", data="builtin:tins", size=8, steps=10)
    with pytest.raises(RunError, match="weights only"):
        Trainer(settings, str(target), resume=True)


def test_no_manifest_means_no_pretrained_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("GENSTUDIO_PRETRAINED", str(tmp_path))
    assert pretrained.available() == []
    with pytest.raises(pretrained.PretrainedError, match="no pretrained run named"):
        pretrained.find("vae-shapes")
