"""Abandoning a train step part-way (core/runtime/step_runtime.py, StepInterrupter): a step interrupted anywhere before its
first optimizer step and taken again leaves every family exactly where an uninterrupted run
does; Pause and Stop inside a step work through the trainer; no hook outlives its step."""

import dataclasses

import numpy as np
import pytest
import torch
from assertions import assert_equal_state
from PIL import Image

from genstudio.core.families import ImageSpec, available_families, create_family, family_class
from genstudio.core.runs.checkpoint import load_checkpoint
from genstudio.core.runs.run import TrainSettings
from genstudio.core.runtime import training
from genstudio.core.runtime.step_runtime import (
    StepInterrupted,
    StepInterrupter,
    StepRuntime,
    weighted_modules,
)
from genstudio.core.runtime.training import (
    PauseChanged,
    StepLogged,
    Stopping,
    Trainer,
    TrainingControl,
    TrainingFinished,
)

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = available_families()  # every registered family, a new one included


def _model(family):
    model = create_family(family, ImageSpec(3, 16), dict(family_class(family).TINY), torch.device("cpu"), 7)
    model.train_mode()
    return model


def _interruptible(model, should_interrupt, **kwargs):
    """A StepInterrupter that the model's backward and optimizer steps report to, as in a run."""
    interrupter = StepInterrupter(model, should_interrupt, **kwargs)
    model.step_runtime = StepRuntime(interrupter=interrupter)
    return interrupter


def _batches():
    g = torch.Generator().manual_seed(0)
    return [torch.rand((6, 3, 16, 16), generator=g) for _ in range(3)]


def _checks_per_step(family):
    """How many times an armed step looks at its flag before its first optimizer step."""
    model, generator = _model(family), torch.Generator().manual_seed(1)
    interrupter = _interruptible(model, lambda: False)
    counts = []
    for x in _batches():
        before = interrupter.checks
        with interrupter.step(generator):
            model.train_step(x, None, generator)
        counts.append(interrupter.checks - before)
    return counts


@pytest.mark.parametrize("family", FAMILIES)
def test_a_step_interrupted_anywhere_and_taken_again_changes_nothing(family):
    """Three steps straight vs the same three steps with step `which` abandoned at its first,
    middle and last look at the flag and then taken again: every weight, optimizer moment,
    buffer (BatchNorm statistics, spectral norm vectors, actnorm, EMA, replay buffer) and the
    generator's state are equal, bit for bit."""
    straight, g_straight = _model(family), torch.Generator().manual_seed(1)
    for x in _batches():
        straight.train_step(x, None, g_straight)
    expected = straight.state_dict()
    counts = _checks_per_step(family)
    assert min(counts) >= 3, counts  # the flag is looked at all through a step
    for which in (0, 1):  # the first step (a flow initialises actnorm there) and a later one
        for look in (1, counts[which] // 2, counts[which]):
            model, generator = _run_interrupting(family, which, look)
            assert_equal_state(model.state_dict(), expected, f"{family} step {which} look {look}")
            assert torch.equal(generator.get_state(), g_straight.get_state())


def _run_interrupting(family, which, look):
    """The three steps with step `which` abandoned at its `look`-th look, then taken again."""
    model, generator = _model(family), torch.Generator().manual_seed(1)
    fire_at = [None]  # the look (counted within step `which`) that interrupts
    interrupter = _interruptible(model, lambda: interrupter.checks == fire_at[0])
    for i, x in enumerate(_batches()):
        if i == which:
            interrupter.checks, fire_at[0] = 0, look
            with pytest.raises(StepInterrupted), interrupter.step(generator):
                model.train_step(x, None, generator)
            fire_at[0] = None
        with interrupter.step(generator):
            model.train_step(x, None, generator)
    interrupter.close()
    return model, generator


def test_close_leaves_no_hook_behind():
    model = _model("gan")
    interrupter = _interruptible(model, lambda: False)
    generator = torch.Generator().manual_seed(1)
    with interrupter.step(generator):
        model.train_step(_batches()[0], None, generator)
    assert any(m._forward_pre_hooks for net in model.networks().values() for m in net.modules())
    interrupter.close()
    for net in model.networks().values():
        for module in net.modules():
            assert not module._forward_pre_hooks and not module._forward_hooks


def _hooked(model):
    """Per network, the indices among its weighted modules of those that carry a hook."""
    return {name: [i for i, m in enumerate(weighted_modules(net)) if m._forward_pre_hooks]
            for name, net in model.networks().items()}


def test_the_stride_gives_the_asked_mean_gap_between_looks():
    model = _model("vae")
    interrupter = _interruptible(model, lambda: False, check_spacing=0.01)
    assert interrupter.stride is None  # measured by the first whole armed step
    interrupter._space_checks(seconds=0.5, looks=1000)     # 0.5 ms apart
    assert interrupter.stride == 20
    interrupter._space_checks(seconds=0.5, looks=20)       # 25 ms apart: every module keeps looking
    assert interrupter.stride == 1
    assert StepInterrupter(model, lambda: False).stride == 1  # spacing 0: never thinned


def test_after_the_first_armed_step_only_every_kth_module_of_each_network_looks():
    model = _model("gan")  # two networks: each keeps its first module hooked
    interrupter = _interruptible(model, lambda: False, check_spacing=10.0)  # far apart: thin to the most
    generator = torch.Generator().manual_seed(1)
    batches = _batches()
    with interrupter.step(generator):
        model.train_step(batches[0], None, generator)
        in_the_first_step = _hooked(model)
    first_looks = interrupter.checks
    weighted = {name: len(weighted_modules(net)) for name, net in model.networks().items()}
    assert in_the_first_step == {name: list(range(n)) for name, n in weighted.items()}  # every one
    assert interrupter.stride > max(weighted.values())
    with interrupter.step(generator):
        model.train_step(batches[1], None, generator)
    assert _hooked(model) == {name: [0] for name in weighted}, _hooked(model)
    assert 3 <= interrupter.checks - first_looks < first_looks  # fewer looks, still some in the step
    interrupter.close()


def test_thinning_takes_every_kth_module_in_the_order_the_step_calls_them():
    """A PixelCNN defines each layer's vertical and horizontal convolutions side by side but
    runs every vertical one first: every 2nd by definition hooked no horizontal module at all,
    and a Pause landing in that stack waited for all of it (1.1 s after a resume)."""
    model = _model("pixelcnn")
    interrupter = _interruptible(model, lambda: False, check_spacing=0.01)
    generator = torch.Generator().manual_seed(1)
    with interrupter.step(generator):
        model.train_step(_batches()[0], None, generator)
    interrupter.stride = None
    interrupter._space_checks(seconds=0.05, looks=10)  # 5 ms apart: every 2nd
    assert interrupter.stride == 2
    with interrupter.step(generator):
        model.train_step(_batches()[1], None, generator)
    names = {module: name for name, module in model.network.named_modules()}
    hooked = {names[m] for m in weighted_modules(model.network) if m._forward_pre_hooks}
    assert hooked == {"layers.0.vertical", "layers.1.vertical", "layers.0.horizontal", "layers.1.horizontal",
                      "head_hidden"}
    interrupter.close()


@pytest.mark.parametrize("family", ["ebm", "flow"])
def test_a_thinned_step_still_pauses_part_way_and_is_taken_again_exactly(tmp_path, monkeypatch, family):
    """Through the trainer with spacing on (tiny steps thin to one hooked module per network):
    a pause inside step 4 is still answered inside it, and the run ends where a straight one does."""
    _armed_always(monkeypatch, spaced=True)
    list(Trainer(_settings(family), str(tmp_path / "straight")).run())
    trainer = Trainer(_settings(family), str(tmp_path / "paused"))
    control = _AskInsideStep("pause", at_step=3, look=3)
    control.trainer = trainer
    calls = _counting_steps(trainer)
    strides = []
    real = trainer.family.train_step
    trainer.family.train_step = lambda *a: (strides.append(trainer.runtime.interrupter.stride), real(*a))[1]
    for event in trainer.run(control):
        if isinstance(event, PauseChanged) and event.paused:
            control.resume()
    assert strides[0] is None and all(k > 1 for k in strides[1:]), strides  # thinned after step 1
    assert calls == [0, 1, 2, 3, 3, 4, 5]
    assert_equal_state(load_checkpoint(tmp_path / "straight" / "checkpoint.safetensors")[0],
                       load_checkpoint(tmp_path / "paused" / "checkpoint.safetensors")[0])


def test_a_fast_step_is_not_armed():
    model = _model("vae")
    interrupter = _interruptible(model, lambda: True)  # would interrupt at once if armed
    generator = torch.Generator().manual_seed(1)
    with interrupter.step(generator, arm=False):
        model.train_step(_batches()[0], None, generator)
    assert interrupter.checks == 0
    assert not any(m._forward_pre_hooks for net in model.networks().values() for m in net.modules())


# -- through the trainer ------------------------------------------------------------------------

TINY = TrainSettings(data="builtin:shapes", size=16, steps=6, batch=6, seed=3, device="cpu",
                     log_every=1, sample_every=0, checkpoint_every=0, grid_samples=2, eval_images=0)


def _settings(family):
    return dataclasses.replace(TINY, family=family, family_config=dict(family_class(family).TINY))


class _AskInsideStep(TrainingControl):
    """Pauses or stops at its `look`-th look at its flags while step `at_step` + 1 runs (the
    trainer's step counter reads `at_step` then), i.e. from inside that step."""

    def __init__(self, action: str, at_step: int, look: int):
        super().__init__()
        self.action, self.at_step, self.look = action, at_step, look
        self.trainer = None
        self.looks = 0

    @property
    def paused(self) -> bool:
        if self.trainer is not None and self.trainer.step == self.at_step:
            self.looks += 1
            if self.looks == self.look:
                self.pause() if self.action == "pause" else self.stop()
        return TrainingControl.paused.fget(self)


def _armed_always(monkeypatch, spaced=False):
    monkeypatch.setattr(training, "SLOW_STEP_SECONDS", 0.0)  # tiny steps are fast: arm them anyway
    if not spaced:  # every module looks, so which look interrupts does not depend on timing
        monkeypatch.setattr(training, "CHECK_SPACING_SECONDS", 0.0)


def _counting_steps(trainer):
    calls = []
    real = trainer.family.train_step
    trainer.family.train_step = lambda *a: (calls.append(trainer.step), real(*a))[1]
    return calls


@pytest.mark.parametrize("family", FAMILIES)
def test_pause_inside_a_step_then_resume_gives_the_uninterrupted_run(tmp_path, monkeypatch, family):
    _armed_always(monkeypatch)
    list(Trainer(_settings(family), str(tmp_path / "straight")).run())
    trainer = Trainer(_settings(family), str(tmp_path / "paused"))
    control = _AskInsideStep("pause", at_step=3, look=4)  # the loop's own look is the first
    control.trainer = trainer
    calls = _counting_steps(trainer)
    pauses = []
    for event in trainer.run(control):
        if isinstance(event, PauseChanged):
            pauses.append((event.step, event.paused))
            if event.paused:
                control.resume()
    assert pauses == [(3, True), (3, False)]
    assert calls == [0, 1, 2, 3, 3, 4, 5]  # step 4 was abandoned once and taken again
    straight = load_checkpoint(tmp_path / "straight" / "checkpoint.safetensors")
    paused = load_checkpoint(tmp_path / "paused" / "checkpoint.safetensors")
    assert_equal_state(straight[0], paused[0])
    steps = [line for line in (tmp_path / "paused" / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 6  # each step logged once


@pytest.mark.parametrize("family", ["gan", "ebm"])
def test_stop_inside_a_step_saves_the_last_whole_step_and_resumes_exactly(tmp_path, monkeypatch, family):
    _armed_always(monkeypatch)
    list(Trainer(_settings(family), str(tmp_path / "straight")).run())
    trainer = Trainer(_settings(family), str(tmp_path / "stopped"))
    control = _AskInsideStep("stop", at_step=2, look=4)
    control.trainer = trainer
    calls = _counting_steps(trainer)
    events = list(trainer.run(control))
    assert calls == [0, 1, 2]  # the third step began and was abandoned
    assert [e.step for e in events if isinstance(e, Stopping)] == [2]
    assert isinstance(events[-1], TrainingFinished) and events[-1].reason == "stopped"
    assert events[-1].step == 2
    assert [e.step for e in events if isinstance(e, StepLogged)] == [1, 2]
    assert load_checkpoint(tmp_path / "stopped" / "checkpoint.safetensors")[1]["step"] == 2
    list(Trainer(_settings(family), str(tmp_path / "stopped"), resume=True).run())
    assert_equal_state(load_checkpoint(tmp_path / "straight" / "checkpoint.safetensors")[0],
                        load_checkpoint(tmp_path / "stopped" / "checkpoint.safetensors")[0])


def test_a_run_leaves_no_hook_on_its_model(tmp_path, monkeypatch):
    _armed_always(monkeypatch)
    trainer = Trainer(_settings("gan"), str(tmp_path / "run"))
    list(trainer.run())
    for net in trainer.family.networks().values():
        for module in net.modules():
            assert not module._forward_pre_hooks and not module._forward_hooks
    assert trainer.runtime.interrupter is None and trainer.family.step_runtime is trainer.runtime


# -- sample grids -------------------------------------------------------------------------------

GRIDDED = dataclasses.replace(TINY, steps=4, sample_every=2, grid_samples=2)


def _gridded(family):
    return dataclasses.replace(GRIDDED, family=family, family_config=dict(family_class(family).TINY))


def _asking_while_sampling(trainer, control, action, at_step):
    """The first sample grid drawn at `at_step` asks for `action` as it begins."""
    calls = []
    real = trainer.family.sample

    def sample(*args, **kwargs):
        calls.append(trainer.step)
        if trainer.step == at_step and calls.count(at_step) == 1:
            getattr(control, action)()
        return real(*args, **kwargs)

    trainer.family.sample = sample
    return calls


@pytest.mark.parametrize("family", ["diffusion", "pixelcnn"])
def test_pause_during_a_grid_cuts_it_short_and_draws_it_again_after_resume(tmp_path, family):
    list(Trainer(_gridded(family), str(tmp_path / "straight")).run())
    trainer = Trainer(_gridded(family), str(tmp_path / "paused"))
    control = TrainingControl()
    calls = _asking_while_sampling(trainer, control, "pause", at_step=2)
    pauses = []
    for event in trainer.run(control):
        if isinstance(event, PauseChanged):
            pauses.append((event.step, event.paused))
            if event.paused:
                control.resume()
    assert pauses == [(2, True), (2, False)]
    assert calls == [2, 2, 4, 4]  # the grid at step 2 was begun twice; step 4's: mid-run and final
    for name in ("step_0000002.png", "step_0000004.png"):  # the same pixels (the run name differs)
        assert np.array_equal(np.asarray(Image.open(tmp_path / "paused" / "samples" / name)),
                              np.asarray(Image.open(tmp_path / "straight" / "samples" / name)))
    assert_equal_state(load_checkpoint(tmp_path / "straight" / "checkpoint.safetensors")[0],
                        load_checkpoint(tmp_path / "paused" / "checkpoint.safetensors")[0])


def test_stop_during_a_grid_drops_it_and_saves_then_draws_the_final_grid(tmp_path):
    trainer = Trainer(_gridded("diffusion"), str(tmp_path / "run"))
    control = TrainingControl()
    calls = _asking_while_sampling(trainer, control, "stop", at_step=2)
    events = list(trainer.run(control))
    kinds = [type(e).__name__ for e in events if not isinstance(e, StepLogged)]
    assert kinds[-4:] == ["Stopping", "CheckpointSaved", "SamplesReady", "TrainingFinished"]
    assert calls == [2, 2]  # the cut-short grid, then the final one after the save
    assert events[-1].reason == "stopped" and events[-1].step == 2
    assert (tmp_path / "run" / "samples" / "step_0000002.png").is_file()


def test_hurry_saves_and_skips_the_final_grid_and_evaluation(tmp_path):
    settings = dataclasses.replace(_gridded("diffusion"), steps=100, sample_every=0, eval_images=16)
    trainer = Trainer(settings, str(tmp_path / "run"))
    control = TrainingControl()
    events = []
    for event in trainer.run(control):
        events.append(event)
        if isinstance(event, StepLogged) and event.step == 2:
            control.hurry()
    kinds = [type(e).__name__ for e in events if not isinstance(e, StepLogged)]
    assert kinds[-4:] == ["Stopping", "CheckpointSaved", "Notice", "TrainingFinished"]
    assert events[-2].message == "stopped: the final sample grid and evaluation were skipped"
    assert load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")[1]["step"] == 2
    assert not (tmp_path / "run" / "samples").exists() or not list((tmp_path / "run" / "samples").iterdir())


def _heap_in_use_mib() -> float | None:
    """Bytes glibc's allocator has handed out and not had back, in MiB; None off glibc."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except AttributeError:
        return None
    mallinfo2.restype = MallInfo2
    info = mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20


@pytest.mark.skipif(_heap_in_use_mib() is None, reason="needs glibc's mallinfo2 to see the heap")
@pytest.mark.parametrize("family", ["pixelcnn", "vae"])
def test_a_step_interrupted_in_its_backward_leaves_none_of_its_memory_held(family):
    """A hook's exception inside backward left autograd holding part of the step's graph (72 MiB
    of this PixelCNN's, 10 MiB of this VAE's) until the thread's next backward, and the step
    taken again after the pause then grew the heap into fresh pages."""
    model = create_family(family, ImageSpec(3, 16), {}, torch.device("cpu"), 7)  # default sizes
    model.train_mode()
    x, generator = torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.Generator()
    fire_at = [None]
    interrupter = _interruptible(model, lambda: interrupter.checks == fire_at[0])
    for _ in range(2):  # the second whole step counts the looks; both leave the heap settled
        before = interrupter.checks
        with interrupter.step(generator):
            model.train_step(x, None, generator)
    looks = interrupter.checks - before
    settled = _heap_in_use_mib()
    for share in (0.5, 0.6, 0.7, 0.8, 0.9):  # from the forward's end well into the backward
        interrupter.checks, fire_at[0] = 0, int(looks * share)
        with pytest.raises(StepInterrupted), interrupter.step(generator):
            model.train_step(x, None, generator)
        fire_at[0] = None
        held = _heap_in_use_mib() - settled
        assert held < 4, f"{held:.1f} MiB still held after an interrupt at look {int(looks * share)} of {looks}"
        with interrupter.step(generator):
            model.train_step(x, None, generator)
    interrupter.close()
