"""The pretrained runs that ship in pretrained/: every one loads, matches its manifest, is
small, and samples images that are neither blank nor noise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genstudio.core.families import available_families
from genstudio.core.runs import pretrained
from genstudio.core.runs.run import load_run
from genstudio.core.trained.sampling import generate

SHIPPED = Path(__file__).resolve().parents[2] / "pretrained"
MAX_BYTES = 10_000_000  # each checkpoint under 10 MB, so the clone stays small


@pytest.fixture
def shipped(monkeypatch):
    monkeypatch.setenv("GENSTUDIO_PRETRAINED", str(SHIPPED))
    return pretrained.available()


def test_every_listed_run_is_present_and_matches_its_manifest(shipped):
    listed = json.loads((SHIPPED / pretrained.MANIFEST).read_text())["runs"]
    assert [r.name for r in shipped] == [e["name"] for e in listed]  # none missing on disk
    assert {r.family for r in shipped} <= set(available_families())
    assert pretrained.DEFAULT in [r.name for r in shipped]
    for run in shipped:
        assert run.command.startswith("genstudio train --family ")
        assert pretrained.file_sha256(run.path / "checkpoint.safetensors") == run.sha256


@pytest.mark.parametrize("name", [e["name"] for e in json.loads((SHIPPED / pretrained.MANIFEST).read_text())["runs"]])
def test_each_pretrained_run_loads_and_samples_real_images(shipped, name):
    run = pretrained.find(name)
    assert (run.path / "checkpoint.safetensors").stat().st_size < MAX_BYTES
    loaded = load_run(run.path, device="cpu")
    assert loaded.family.name == run.family
    label = 0 if loaded.family.spec.num_classes else None
    options = {"steps": 10} if run.family == "diffusion" else None  # fewer DDIM steps: a test
    images = generate(loaded, 2, seed=0, label=label, options=options)
    size, channels = loaded.family.spec.size, loaded.family.spec.channels
    assert images.shape == (2, size, size, channels) and images.dtype == np.uint8
    assert images.std() > 5  # not a blank canvas
    assert np.array_equal(images, generate(loaded, 2, seed=0, label=label, options=options))


def test_a_checkout_finds_its_own_pretrained_folder(monkeypatch):
    """Without GENSTUDIO_PRETRAINED (as the app runs from a clone) the runs are the checkout's."""
    monkeypatch.delenv("GENSTUDIO_PRETRAINED", raising=False)
    assert pretrained.shipped_root() == SHIPPED
    assert pretrained.DEFAULT in [run.name for run in pretrained.available()]
