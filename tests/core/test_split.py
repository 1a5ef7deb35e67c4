"""The held-out split: fixed, disjoint, shared by every run on the same data."""

import dataclasses

import numpy as np
import torch

from genstudio.core.data import held_out_split
from genstudio.core.data.split import MAX_HELD_OUT
from genstudio.core.runs.run import TrainSettings
from genstudio.core.runtime.training import Trainer


def test_split_is_deterministic_disjoint_and_complete():
    a, b = held_out_split(1000), held_out_split(1000)
    assert np.array_equal(a.test, b.test) and np.array_equal(a.train, b.train)
    assert len(a.test) == 100 and len(a.train) == 900
    assert not set(a.test) & set(a.train)
    assert sorted([*a.test, *a.train]) == list(range(1000))
    assert not np.array_equal(a.test, np.arange(100))  # shuffled, not the first tenth


def test_split_sizes_at_the_extremes():
    assert len(held_out_split(10).test) == 0 and len(held_out_split(10).train) == 10
    assert len(held_out_split(70_000).test) == MAX_HELD_OUT


def test_training_never_sees_the_held_out_images(tmp_path):
    settings = TrainSettings(data="builtin:tins", size=16, steps=1, batch=8, device="cpu",
                             family_config={"base_channels": 4, "latent_dim": 2}, eval_images=0)
    trainer = Trainer(settings, str(tmp_path / "run"))
    split = held_out_split(len(trainer.dataset))
    all_images = torch.from_numpy(trainer.dataset.images).permute(0, 3, 1, 2)
    assert torch.equal(trainer.images, all_images[split.train])
    assert torch.equal(trainer.test_images, all_images[split.test])
    seen = torch.cat([trainer.batch_indices(step) for step in range(len(trainer.images) // 8)])
    assert seen.max() < len(trainer.images)  # batch indices address the train split only
    other = Trainer(dataclasses.replace(settings, seed=5), str(tmp_path / "other"))
    assert torch.equal(other.test_images, trainer.test_images)  # same test set for every run


def test_each_epoch_is_one_seeded_permutation_of_the_train_split(tmp_path):
    settings = TrainSettings(data="builtin:tins", size=16, steps=1, batch=64, seed=3, device="cpu",
                             family_config={"base_channels": 4, "latent_dim": 2}, eval_images=0)
    trainer = Trainer(settings, str(tmp_path / "run"))
    n = len(trainer.images)
    per_epoch = n // 64
    for epoch in (0, 1, 2):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(3 * 1_000_003 + epoch))
        batches = [trainer.batch_indices(epoch * per_epoch + k) for k in range(per_epoch)]
        assert torch.equal(torch.cat(batches), order[:per_epoch * 64])
    # Asked out of order (a resume lands mid-epoch), the same batches come back.
    assert torch.equal(trainer.batch_indices(1), torch.randperm(
        n, generator=torch.Generator().manual_seed(3 * 1_000_003))[64:128])
