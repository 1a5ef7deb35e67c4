"""Training under faults: NaN/inf losses, running out of memory, and exact resume after a kill."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from assertions import assert_equal_state

from genstudio.core.families import family_class
from genstudio.core.families.diffusion import DECODER_LR_FACTOR
from genstudio.core.runs.checkpoint import load_checkpoint
from genstudio.core.runs.run import RunError, TrainSettings, load_run
from genstudio.core.runtime import step_runtime as guard
from genstudio.core.runtime.accel import use_fused_adam
from genstudio.core.runtime.training import BatchLowered, Notice, Trainer, TrainingFinished

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = TrainSettings(
    family="vae", data="builtin:tins", size=8, steps=8, batch=4, seed=2, device="cpu",
    family_config={"base_channels": 4, "latent_dim": 2}, log_every=1, sample_every=0,
    checkpoint_every=2, grid_samples=1, eval_images=0,
)


def _poison_batches(trainer: Trainer, bad_steps: set[int], value: float = float("nan")) -> None:
    """Batches at these (0-based) step indices hold NaN or inf, so their loss is not finite."""
    real = trainer.batch

    def batch(step):
        x, labels = real(step)
        return (torch.full_like(x, value) if step in bad_steps else x), labels

    trainer.batch = batch


def _networks(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.detach().clone() for n, m in trainer.family.networks().items()
            for k, v in m.state_dict().items()}


def _lrs(trainer: Trainer) -> list[float]:
    return [g["lr"] for o in trainer.family.optimizers().values() for g in o.param_groups]


@pytest.mark.parametrize("fused", [False, True], ids=["host check", "fused Adam skips on the device"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_one_non_finite_loss_skips_its_update_and_training_goes_on(tmp_path, value, fused):
    trainer = Trainer(TINY, str(tmp_path / "run"))
    if fused:  # what the CUDA plan chooses (core/runtime/accel.py); fused Adam runs on the CPU too
        use_fused_adam(trainer.family.optimizers().values(), True)
        assert trainer.family.optimizer.param_groups[0]["fused"]
    _poison_batches(trainer, {2}, value)
    around = {}
    real_step = trainer.family.train_step

    def recording_step(x, labels, generator):
        index = trainer.step
        if index == 2:
            # Deep copies: a state dict holds the live tensors that the step updates in place.
            around["before"] = (_networks(trainer), copy.deepcopy(trainer.family.optimizer.state_dict()))
        metrics = real_step(x, labels, generator)
        if index == 2:
            around["after"] = (_networks(trainer), copy.deepcopy(trainer.family.optimizer.state_dict()))
        return metrics

    trainer.family.train_step = recording_step
    seen = list(trainer.run())
    notices = [e for e in seen if isinstance(e, Notice)]
    assert [n.step for n in notices] == [3] and "the update was skipped" in notices[0].message
    before, after = around["before"], around["after"]
    assert before[0].keys() == after[0].keys()
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])  # no weight moved
    for key, moments in before[1]["state"].items():  # nor any of Adam's moments or counts
        for name, value in moments.items():
            assert torch.equal(value, after[1]["state"][key][name]), (key, name)
    assert seen[-1] == TrainingFinished(8, "completed", str(tmp_path / "run"))
    assert all(torch.isfinite(v).all() for v in _networks(trainer).values())
    assert load_run(tmp_path / "run", "cpu").step == 8  # the final checkpoint was saved


def test_repeated_non_finite_losses_roll_back_and_lower_the_learning_rate(tmp_path):
    trainer = Trainer(TINY, str(tmp_path / "run"))
    lr = _lrs(trainer)
    _poison_batches(trainer, {4, 5, 6})  # after the checkpoint at step 4
    at_step_4 = {}
    real_save = trainer.save

    def save():
        event = real_save()
        if event.step == 4:
            at_step_4.update(_networks(trainer))
        return event

    trainer.save = save
    rolled_back = {}
    for event in trainer.run():
        if isinstance(event, Notice) and "rolled back" in event.message:
            rolled_back = {"message": event.message, "networks": _networks(trainer)}
    assert "for 3 steps in a row" in rolled_back["message"]
    assert "state of step 4" in rolled_back["message"] and "0.5×" in rolled_back["message"]
    assert all(torch.equal(rolled_back["networks"][k], at_step_4[k]) for k in at_step_4)
    assert _lrs(trainer) == [x * 0.5 for x in lr] and trainer.family.lr_scale == 0.5
    # The lowered rate is part of the checkpoint, so a resumed run keeps it.
    state, _ = load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    assert state["lr_scale"] == 0.5
    resumed = Trainer(dataclasses.replace(TINY, steps=9), str(tmp_path / "run"), resume=True)
    assert resumed.family.lr_scale == 0.5 and _lrs(resumed) == [x * 0.5 for x in lr]


def test_warmup_families_apply_the_lowered_learning_rate_every_step(tmp_path):
    """Diffusion and flow set their learning rate each step from the config; the scale must
    survive that, in every parameter group (diffusion's learned decoder has its own rate)."""
    for name, factors in (("diffusion", [1.0, DECODER_LR_FACTOR]), ("flow", [1.0])):
        config = {**family_class(name).TINY, "warmup_steps": 1, "lr": 1e-3}
        settings = dataclasses.replace(TINY, family=name, family_config=config, steps=2,
                                       checkpoint_every=0)
        trainer = Trainer(settings, str(tmp_path / name))
        list(trainer.run())
        assert _lrs(trainer) == pytest.approx([1e-3 * f for f in factors]), name
        trainer.family.lr_scale = 0.25
        x, labels = trainer.batch(0)
        trainer.family.train_step(x, labels, trainer.generator)
        assert _lrs(trainer) == pytest.approx([1e-3 * 0.25 * f for f in factors]), name


def test_a_run_that_never_stops_diverging_ends_with_a_clear_error(tmp_path):
    trainer = Trainer(dataclasses.replace(TINY, steps=100), str(tmp_path / "run"))
    _poison_batches(trainer, set(range(3, 100)))
    events = []
    with pytest.raises(RunError, match="diverged at step .* after lowering the learning rate 4 times"):
        for event in trainer.run():
            events.append(event)
    rollbacks = [e for e in events if isinstance(e, Notice) and "rolled back" in e.message]
    assert len(rollbacks) == guard.MAX_ROLLBACKS
    assert trainer.family.lr_scale == 0.5 ** guard.MAX_ROLLBACKS
    # Updates were skipped, never applied: every checkpoint written on the way is finite.
    loaded = load_run(tmp_path / "run", "cpu")
    assert all(torch.isfinite(p).all() for m in loaded.family.networks().values()
               for p in m.parameters())


def test_nan_reaching_the_state_is_rolled_back_at_once(tmp_path, monkeypatch):
    """A skipped step that still wrote NaN outside the optimizer (as an EBM's replay buffer
    can) is undone immediately, so the next checkpoint can be saved."""
    trainer = Trainer(TINY, str(tmp_path / "run"))
    real_step = trainer.family.train_step

    def step_that_poisons(x, labels, generator):
        metrics = real_step(x, labels, generator)
        if trainer.step == 2:
            first_weights = next(trainer.family.networks()["encoder"].parameters())
            with torch.no_grad():
                first_weights.fill_(float("nan"))
            metrics = {**metrics, "loss": float("nan")}
        return metrics

    trainer.family.train_step = step_that_poisons
    notices = [e for e in trainer.run() if isinstance(e, Notice)]
    assert len(notices) == 1 and "restored the state of step 2" in notices[0].message
    assert trainer.family.lr_scale == 1.0  # one bad step does not lower the learning rate
    assert load_run(tmp_path / "run", "cpu").step == 8


def test_out_of_memory_with_nothing_left_to_lower_saves_and_ends_with_a_clear_error(tmp_path):
    """Simulated: there is no GPU here, so the step raises torch.cuda.OutOfMemoryError itself,
    as CUDA does when an allocation fails. Each failure halves the batch (4 → 2 → 1); at batch 1
    the run keeps what it has and says what to change."""
    trainer = Trainer(dataclasses.replace(TINY, checkpoint_every=0), str(tmp_path / "run"))
    real_step = trainer.family.train_step

    def step(x, labels, generator):
        if trainer.step == 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(x, labels, generator)

    trainer.family.train_step = step
    lowered = []
    with pytest.raises(RunError) as raised:
        for event in trainer.run():
            if isinstance(event, BatchLowered):
                lowered.append((event.old_batch, event.new_batch))
    assert lowered == [(4, 2), (2, 1)]
    message = str(raised.value)
    assert "out of CPU memory at step 4 (batch 1, 8 px)" in message
    assert "the model at step 3 was saved" in message and "Lower the batch size" in message
    assert load_run(tmp_path / "run", "cpu").step == 3


# -- exact resume -------------------------------------------------------------------------------

# Trains to step 5 (checkpoint at 5) and is SIGKILLed by itself right after that save, in the
# middle of the run: nothing after the checkpoint can reach the disk.
KILLED_AFTER_CHECKPOINT = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    from genstudio.core.runs.run import TrainSettings
    from genstudio.core.runtime.training import CheckpointSaved, Trainer

    settings = TrainSettings.from_json(json.loads(sys.argv[2]))
    for event in Trainer(settings, sys.argv[1]).run():
        if isinstance(event, CheckpointSaved) and event.step == 5:
            os.kill(os.getpid(), signal.SIGKILL)
""")


def _settings(family: str) -> TrainSettings:
    return dataclasses.replace(TINY, family=family, family_config=dict(family_class(family).TINY),
                               steps=10, checkpoint_every=5)


@pytest.mark.parametrize("family", ["vae", "gan", "flow", "diffusion", "pixelcnn", "ebm"])
def test_ten_steps_equal_five_then_resume_five_bit_for_bit(tmp_path, family):
    """Everything in the checkpoint is equal: weights, optimizer moments, EMA, replay buffer,
    RNG states, step; resume rebuilds the data order from the seed."""
    settings = _settings(family)
    list(Trainer(settings, str(tmp_path / "straight")).run())
    list(Trainer(dataclasses.replace(settings, steps=5), str(tmp_path / "split")).run())
    torch.manual_seed(12345)  # the resumed run must not depend on this process's RNG
    list(Trainer(settings, str(tmp_path / "split"), resume=True).run())
    straight = load_checkpoint(tmp_path / "straight" / "checkpoint.safetensors")
    split = load_checkpoint(tmp_path / "split" / "checkpoint.safetensors")
    assert_equal_state(straight[0], split[0])
    assert straight[1]["step"] == split[1]["step"] == 10


@pytest.mark.timeout(180)
def test_ten_steps_equal_five_then_sigkill_then_resume_bit_for_bit(tmp_path):
    settings = _settings("vae")
    list(Trainer(settings, str(tmp_path / "straight")).run())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    payload = json.dumps(settings.to_json())
    child = subprocess.run([sys.executable, "-c", KILLED_AFTER_CHECKPOINT, str(tmp_path / "killed"),
                            payload], env=env, capture_output=True, text=True, timeout=150)
    assert child.returncode == -9, child.stderr[-2000:]
    at_kill, meta = load_checkpoint(tmp_path / "killed" / "checkpoint.safetensors")
    assert meta["step"] == 5
    trainer = Trainer(settings, str(tmp_path / "killed"), resume=True)
    assert torch.equal(trainer.generator.get_state(), at_kill["rng"]["train"])
    assert torch.equal(torch.get_rng_state(), at_kill["rng"]["torch"])  # restored as saved
    list(trainer.run())
    straight, _ = load_checkpoint(tmp_path / "straight" / "checkpoint.safetensors")
    resumed, _ = load_checkpoint(tmp_path / "killed" / "checkpoint.safetensors")
    # The process-wide torch RNG is saved and restored, but training draws nothing from it
    # (all its noise comes from the seeded generator), so it starts wherever each process's
    # starts: the child's differs from this process's. Everything else is equal, bit for bit.
    del straight["rng"]["torch"], resumed["rng"]["torch"]
    assert_equal_state(straight, resumed)
    records = [json.loads(line)
               for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 11))  # none lost, none twice


def test_a_non_finite_metric_with_finite_gradients_keeps_its_update(tmp_path):
    trainer = Trainer(dataclasses.replace(TINY, steps=3), str(tmp_path / "run"))
    real_step = trainer.family.train_step

    def overflowing_metric(x, labels, generator):
        metrics = real_step(x, labels, generator)
        return {**metrics, "kl": float("inf")} if trainer.step == 1 else metrics

    trainer.family.train_step = overflowing_metric
    notices = [e.message for e in trainer.run() if isinstance(e, Notice)]
    assert notices == ["step 2: kl = inf; the gradients were finite, so the update was kept"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_the_gradient_check_finds_one_bad_element_and_changes_no_gradient(bad):
    grads = [torch.randn(7, 5), torch.randn(300), torch.randn(2, 3, dtype=torch.float64)]
    grads[0][0, 0] = torch.finfo(torch.float32).max  # finite extremes are not flagged
    grads[1][1] = -0.0
    grads[1][2] = torch.finfo(torch.float32).tiny / 8  # a subnormal
    kept = [g.clone() for g in grads]
    assert guard._non_finite(grads).item() == 0.0  # noqa: SLF001
    for g, k in zip(grads, kept, strict=True):  # bit for bit, the sign of -0.0 included
        assert torch.equal(g, k) and torch.equal(g.signbit(), k.signbit())
    for where in range(3):  # one bad element anywhere, in either dtype
        poisoned = [g.clone() for g in grads]
        poisoned[where].view(-1)[-1] = bad
        assert guard._non_finite(poisoned).item() == 1.0, where  # noqa: SLF001
