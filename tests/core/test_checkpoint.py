"""Checkpoints: exact round trips, atomic writes, clear errors, and no code execution."""

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from genstudio.core.families import ImageSpec, create_family
from genstudio.core.runs.checkpoint import (
    CheckpointError,
    flatten_state,
    load_checkpoint,
    save_checkpoint,
    unflatten_state,
)


def _trained_vae():
    vae = create_family("vae", ImageSpec(1, 8), {"latent_dim": 2, "base_channels": 4})
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        vae.train_step(torch.rand(4, 1, 8, 8), None, gen)
    return vae


def _assert_same(a, b):
    assert isinstance(a, dict) == isinstance(b, dict) and isinstance(a, torch.Tensor) == isinstance(b, torch.Tensor)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=False):
            _assert_same(x, y)
    else:
        assert a == b


def test_flatten_unflatten_round_trips_nested_state():
    state = {"w": torch.arange(6).view(2, 3), "opt": {"state": {0: {"step": torch.tensor(3.0)}},
             "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0]}]}, "name": None}
    skeleton, tensors = flatten_state(state)
    _assert_same(unflatten_state(skeleton, tensors), state)


def test_family_state_with_optimizer_round_trips(tmp_path):
    vae = _trained_vae()
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, vae.state_dict(), {"step": 3})
    state, meta = load_checkpoint(path)
    _assert_same(state, vae.state_dict())
    assert meta == {"step": 3}
    fresh = create_family("vae", ImageSpec(1, 8), {"latent_dim": 2, "base_channels": 4}, seed=99)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.sample(3, seed=1), vae.sample(3, seed=1))


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, {"x": torch.ones(3)}, {"step": 1})
    before = path.read_bytes()

    import genstudio.core.runs.checkpoint as ckpt

    def crash(_tensors, filename, **_kwargs):
        Path(filename).write_bytes(b"half a checkpoint")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(ckpt, "save_file", crash)
    with pytest.raises(CheckpointError, match=r"could not save the checkpoint of step 2 \(Error while serializing: "
                                              r".*No space left on device.*\); the checkpoint before it is intact"):
        save_checkpoint(path, {"x": torch.zeros(3)}, {"step": 2})
    assert path.read_bytes() == before
    # The failed save had already kept the old one as the previous checkpoint; nothing else.
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.prev.safetensors", "checkpoint.safetensors"]
    assert (tmp_path / "checkpoint.prev.safetensors").read_bytes() == before


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_checkpoints_give_one_clear_error(tmp_path, damage):
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, _trained_vae().state_dict(), {"step": 3})
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00" * 64, "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="corrupt or truncated|not a genstudio"):
        load_checkpoint(path)


def test_loading_a_malicious_pickle_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "checkpoint.safetensors"
    path.write_bytes(pickle.dumps({"weights": Exploit()}))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()
