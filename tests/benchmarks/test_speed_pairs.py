"""The speed suite's step-by-step pairing: each bare step's time must be its own, and each
trainer iteration must leave out the bare step run inside it."""

import contextlib
import itertools
import time

import pytest

from benchmarks import speed
from genstudio.core.runs.run import TrainSettings
from genstudio.core.runtime import training

pytestmark = pytest.mark.usefixtures("one_thread")  # no spin-waiting team around the sleeps


def test_paired_steps_time_each_side_on_its_own(monkeypatch):
    # Bare steps sleep 20 ms and 250 ms in turn, so a pair that took the wrong bare step's time,
    # or an iteration that kept the bare step inside it, is off by 230 ms or more; and a bare
    # step inside the loop's own step timing would make it look slow enough to arm its hooks.
    sleeps = itertools.cycle([0.02, 0.25])
    planned: list[float] = []
    hooked: list[bool] = []  # per bare step: were any interrupt hooks left on the modules?
    real_bare_step = speed.bare_train_step

    def slowed_bare_step(family, *args):
        pause = next(sleeps)
        planned.append(pause)
        hooked.append(any(m._forward_pre_hooks for net in family.networks().values() for m in net.modules()))
        time.sleep(pause)
        return real_bare_step(family, *args)

    monkeypatch.setattr(speed, "bare_train_step", slowed_bare_step)
    armed: list[bool] = []  # per trainer step: did the loop arm its interrupt hooks?
    real_train_step = training.Trainer._train_step

    def loop_step(self, x, labels):
        armed.append(self.runtime.interrupter._armed_thread is not None)
        return real_train_step(self, x, labels)

    monkeypatch.setattr(training.Trainer, "_train_step", loop_step)
    settings = TrainSettings(family="vae", data="builtin:tins", size=8, batch=4, steps=12, seed=0, device="cpu",
                             family_config={"base_channels": 4, "latent_dim": 2}, log_every=5)
    pairs = speed.paired_steps(settings, warmup=2)
    assert len(pairs) == len(planned) - 3  # the warm-up steps and the last step have no pair
    for k, (iteration, bare, step) in enumerate(pairs, start=2):
        assert planned[k] <= bare < planned[k] + 0.05, (k, bare, planned[k])
        assert 0 < step < iteration < 0.05, (k, step, iteration)  # a tiny VAE step, no bare sleep in it
    # Only the first step is armed (no step time yet), as in a real run of tiny steps.
    assert armed[0] and not any(armed[1:]), armed
    assert not any(hooked)  # the bare step trains with no hook of the loop's on


def test_the_bare_step_trains_the_loops_own_model_with_its_hooks_off_and_back_on(monkeypatch):
    # One model for both (no twin whose memory lies elsewhere); the loop, armed for every step
    # here, still has its hooks on in each of its steps after the bare steps took them off.
    monkeypatch.setattr(training, "SLOW_STEP_SECONDS", 0.0)
    seen: list[tuple[int, bool]] = []
    real_bare_step = speed.bare_train_step

    def recording_bare_step(family, *args):
        seen.append((id(family), any(m._forward_pre_hooks for net in family.networks().values()
                                     for m in net.modules())))
        return real_bare_step(family, *args)

    monkeypatch.setattr(speed, "bare_train_step", recording_bare_step)
    trainers: list[int] = []
    hooks_at_loop_steps: list[bool] = []
    real_train_step = training.Trainer._train_step

    def loop_step(self, x, labels):
        trainers.append(id(self.family))
        hooks_at_loop_steps.append(bool(self.runtime.interrupter._handles))
        return real_train_step(self, x, labels)

    monkeypatch.setattr(training.Trainer, "_train_step", loop_step)
    settings = TrainSettings(family="vae", data="builtin:tins", size=8, batch=4, steps=8, seed=0, device="cpu",
                             family_config={"base_channels": 4, "latent_dim": 2}, log_every=5)
    speed.paired_steps(settings, warmup=2)
    assert seen and {family for family, _ in seen} == set(trainers)
    assert not any(hooked for _, hooked in seen)
    assert all(hooks_at_loop_steps)  # each armed step of the loop's installs them again


def test_the_time_spent_around_a_bare_step_counts_neither_to_it_nor_to_the_loop(tmp_path):
    # The app's pairing holds the window still around each bare step; waiting for the GUI thread
    # to be held, and letting it go, is neither the bare step's time nor the loop's.
    @contextlib.contextmanager
    def slow_to_enter_and_leave():
        time.sleep(0.1)
        yield
        time.sleep(0.1)

    settings = TrainSettings(family="vae", data="builtin:tins", size=8, batch=4, steps=8, seed=0, device="cpu",
                             family_config={"base_channels": 4, "latent_dim": 2}, log_every=5,
                             sample_every=0, checkpoint_every=0, eval_images=0, grid_samples=1)
    trainer = training.Trainer(settings, str(tmp_path / "run"))
    trainer.observer = pairing = speed.StepPairing(trainer, slow_to_enter_and_leave)
    for _ in trainer.run():
        pass
    pairs = pairing.pairs(warmup=2)
    assert len(pairs) == 5
    for iteration, bare, step in pairs:
        assert bare < 0.05 and 0 < step < iteration < 0.05, (iteration, bare, step)
