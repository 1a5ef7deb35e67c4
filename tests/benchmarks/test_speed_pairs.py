"""The speed suite's step-by-step pairing: each bare step's time must be its own, and each
trainer iteration must leave out the bare step run inside it."""

import itertools
import time

import pytest

from benchmarks import speed
from genstudio.core.interrupt import StepInterrupter
from genstudio.core.run import TrainSettings

pytestmark = pytest.mark.usefixtures("one_thread")  # no spin-waiting team around the sleeps


def test_paired_steps_time_each_side_on_its_own(monkeypatch):
    # Bare steps sleep 20 ms and 250 ms in turn, so a pair that took the wrong bare step's time,
    # or an iteration that kept the bare step inside it, is off by 230 ms or more; and a bare
    # step inside the loop's own step timing would make it look slow enough to arm its hooks.
    sleeps = itertools.cycle([0.02, 0.25])
    planned: list[float] = []
    real_create = speed.create_family

    def slowed_bare_family(*args, **kwargs):
        family = real_create(*args, **kwargs)
        step = family.train_step

        def train_step(*a, **k):
            pause = next(sleeps)
            planned.append(pause)
            time.sleep(pause)
            return step(*a, **k)

        family.train_step = train_step
        return family

    monkeypatch.setattr(speed, "create_family", slowed_bare_family)
    armed: list[bool] = []  # per trainer step: did the loop arm its interrupt hooks?
    real_step = StepInterrupter.step
    monkeypatch.setattr(StepInterrupter, "step",
                        lambda self, generator, arm=True: armed.append(arm) or real_step(self, generator, arm))
    settings = TrainSettings(family="vae", data="builtin:tins", size=8, batch=4, steps=12, seed=0, device="cpu",
                             family_config={"base_channels": 4, "latent_dim": 2}, log_every=5)
    pairs = speed.paired_steps(settings, warmup=2)
    assert len(pairs) == len(planned) - 3  # the warm-up steps and the last step have no pair
    for k, (iteration, bare, step) in enumerate(pairs, start=2):
        assert planned[k] <= bare < planned[k] + 0.05, (k, bare, planned[k])
        assert 0 < step < iteration < 0.05, (k, step, iteration)  # a tiny VAE step, no bare sleep in it
    # Only the first step is armed (no step time yet), as in a real run of tiny steps.
    assert armed[0] and not any(armed[1:]), armed
