"""The GPU fast path (genstudio.core.runtime.accel) exercised on the CPU: off by default and then bit
for bit the plain loop; when forced, its precision / layout code paths train every family; a
device out-of-memory error lowers the batch and training continues."""

import dataclasses
import json
import math

import pytest
import torch

from genstudio.core.families import ImageSpec, available_families, create_family, family_class
from genstudio.core.runs.run import RunError, TrainSettings
from genstudio.core.runtime.accel import Acceleration, is_out_of_memory, plan_for, trained_modules
from genstudio.core.runtime.training import BatchLowered, StepLogged, Trainer, TrainingFinished

FAMILIES = available_families()
TINY = TrainSettings(
    family="vae", data="builtin:tins", size=8, steps=6, batch=8, seed=5, device="cpu",
    family_config={"base_channels": 4, "latent_dim": 3}, log_every=2, sample_every=0,
    checkpoint_every=0, grid_samples=1, eval_images=0,
)


def _state(family) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v for n, m in family.networks().items() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("family_name", ["vae", "gan"])
def test_on_the_cpu_the_trainer_is_bit_for_bit_the_plain_loop(tmp_path, family_name):
    """The feature code is present but resolves to off: the trained weights equal, exactly, a
    bare loop over the same batches calling train_step on a family built the same way."""
    settings = dataclasses.replace(TINY, family=family_name, family_config=dict(family_class(family_name).TINY))
    trainer = Trainer(settings, str(tmp_path / "run"))
    plan = trainer.accel.plan
    assert (plan.precision, plan.channels_last, plan.data_on_device, plan.pin_memory, plan.compile) == \
        ("fp32", False, False, False, False)
    runtime = trainer.family.step_runtime
    assert (runtime.scaler, runtime.reduce, runtime.autocast_to) == (None, None, None)
    assert trainer.images.device.type == "cpu" and not trainer.images.is_pinned()
    list(trainer.run())

    family = create_family(family_name, trainer.spec, settings.family_config, torch.device("cpu"), settings.seed)
    family.train_mode()
    generator = torch.Generator().manual_seed(settings.seed + 1)
    for step in range(settings.steps):
        idx = trainer.batch_indices(step)
        family.train_step(trainer.images[idx].float() / 255.0, None, generator)
    expected, got = _state(family), _state(trainer.family)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_a_plan_is_all_off_on_the_cpu_whatever_is_asked():
    family = create_family("vae", ImageSpec(1, 16), family_class("vae").TINY, torch.device("cpu"))
    for precision in ("auto", "fp32", "bf16", "fp16"):
        plan = plan_for(torch.device("cpu"), family, precision, compile=True)
        assert (plan.precision, plan.channels_last, plan.compile, plan.autocast_dtype) == ("fp32", False, False, None)
    with pytest.raises(ValueError, match="precision"):
        plan_for(torch.device("cpu"), family, "fp8")


def test_the_flow_keeps_float32_whatever_precision_is_asked():
    flow = create_family("flow", ImageSpec(1, 16), family_class("flow").TINY, torch.device("cpu"))
    assert plan_for(torch.device("cpu"), flow, "auto", force=True).precision == "fp32"
    assert plan_for(torch.device("cpu"), flow, "bf16", force=True).precision == "fp32"
    vae = create_family("vae", ImageSpec(1, 16), family_class("vae").TINY, torch.device("cpu"))
    assert plan_for(torch.device("cpu"), vae, "bf16", force=True).precision == "bf16"


def _forced_steps(name: str, precision: str, steps: int = 2) -> tuple[object, list[dict], Acceleration]:
    spec = ImageSpec(3, 16)
    family = create_family(name, spec, family_class(name).TINY, torch.device("cpu"), seed=1)
    family.train_mode()
    accel = Acceleration(plan_for(torch.device("cpu"), family, precision, force=True), family)
    family.step_runtime = accel.step_runtime()
    generator = torch.Generator().manual_seed(2)
    x = torch.rand((4, *spec.shape), generator=torch.Generator().manual_seed(3)).mul(255).round().div(255)
    metrics = []
    for _ in range(steps):
        with family.step_runtime.autocast():
            metrics.append(family.train_step(accel.batch_layout(x), None, generator))
    return family, metrics, accel


@pytest.mark.parametrize("name", FAMILIES)
def test_forced_channels_last_and_bf16_autocast_train_every_family(name):
    """The CUDA code path (channels_last networks and batches, bf16 autocast) run on the CPU:
    every family's step works with it (no .view on a channels_last tensor, no dtype clash)."""
    family, metrics, accel = _forced_steps(name, "bf16")
    assert accel.plan.channels_last
    expected = "fp32" if name == "flow" else "bf16"
    assert accel.plan.precision == expected
    for record in metrics:
        assert all(math.isfinite(v) for v in record.values()), record
    conv = next(m for net in family.networks().values() for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name", ["vae", "gan"])
def test_forced_fp16_with_a_gradient_scaler_steps_every_optimizer(name):
    before = {k: v.clone() for k, v in _state(create_family(
        name, ImageSpec(3, 16), family_class(name).TINY, torch.device("cpu"), seed=1)).items()}
    family, metrics, accel = _forced_steps(name, "fp16", steps=3)
    assert accel.scaler is not None and family.step_runtime.scaler is accel.scaler
    assert math.isfinite(accel.scaler.get_scale())
    after = _state(family)
    for module_name in (m for m in family.networks() if m in ("encoder", "generator", "discriminator")):
        changed = [k for k in after if k.startswith(module_name + ".") and after[k].is_floating_point()
                   and not torch.equal(after[k], before[k])]
        assert changed, f"{module_name} was never stepped"
    # The scaler starts at 2^16, which may overflow a gradient: such a step reports an infinite
    # norm, is skipped and lowers the scale. Everything else, and the last step's norm, is finite.
    def norms(record):
        return [v for k, v in record.items() if k.startswith("grad_norm")]

    assert all(math.isfinite(v) for record in metrics for k, v in record.items() if not k.startswith("grad_norm"))
    assert all(map(math.isfinite, norms(metrics[-1])))
    if any(not math.isfinite(v) for record in metrics for v in norms(record)):
        assert accel.scaler.get_scale() < 2.0**16


def test_compile_applies_to_the_trained_networks_only(monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    family = create_family("gan", ImageSpec(1, 16), family_class("gan").TINY, torch.device("cpu"))
    Acceleration(plan_for(torch.device("cpu"), family, "fp32", compile=True, force=True), family)
    assert {id(m) for m in compiled} == {id(family.generator), id(family.discriminator)}
    assert family.generator_ema not in trained_modules(family)


def test_dataset_placement_and_gather_are_unchanged_on_the_cpu():
    family = create_family("vae", ImageSpec(1, 16), family_class("vae").TINY, torch.device("cpu"))
    accel = Acceleration(plan_for(torch.device("cpu"), family), family)
    images = torch.randint(0, 256, (10, 1, 16, 16), dtype=torch.uint8)
    labels = torch.arange(10)
    placed, placed_labels, note = accel.place_dataset(images, labels)
    assert placed is images and placed_labels is labels and note == ""
    idx = torch.tensor([3, 1, 4])
    assert torch.equal(accel.gather(images, idx, torch.device("cpu")), images[idx])


# -- out of memory ------------------------------------------------------------------------------


def _oom_above(trainer: Trainer, limit: int, calls: list[int]) -> None:
    """Make the family's train step fail like CUDA does when the batch is larger than `limit`."""
    real = trainer.family.train_step

    def train_step(x, labels, generator):
        calls.append(x.shape[0])
        if x.shape[0] > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(x, labels, generator)

    trainer.family.train_step = train_step


def test_out_of_memory_lowers_the_batch_and_training_continues(tmp_path):
    trainer = Trainer(dataclasses.replace(TINY, batch=16), str(tmp_path / "run"))
    calls: list[int] = []
    _oom_above(trainer, 4, calls)
    events = list(trainer.run())
    lowered = [e for e in events if isinstance(e, BatchLowered)]
    assert [(e.old_batch, e.new_batch) for e in lowered] == [(16, 8), (8, 4)]
    assert all(e.step == 0 for e in lowered) and "continuing" in lowered[0].message
    assert calls == [16, 8] + [4] * TINY.steps
    finished = events[-1]
    assert isinstance(finished, TrainingFinished) and finished.reason == "completed"
    assert finished.step == TINY.steps
    logged = [e for e in events if isinstance(e, StepLogged)]
    assert logged and all(math.isfinite(e.metrics["loss"]) for e in logged)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["settings"]["batch"] == 4  # a resumed run keeps the batch that fits
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x")) and not is_out_of_memory(RuntimeError("x"))


def test_out_of_memory_at_batch_one_is_a_clear_error(tmp_path):
    trainer = Trainer(dataclasses.replace(TINY, batch=1), str(tmp_path / "run"))
    _oom_above(trainer, 0, [])
    with pytest.raises(RunError, match=r"out of CPU memory at step 1 \(batch 1, "):
        list(trainer.run())


def test_other_errors_in_a_step_are_not_taken_for_out_of_memory(tmp_path):
    trainer = Trainer(TINY, str(tmp_path / "run"))

    def broken(x, labels, generator):
        raise RuntimeError("shape mismatch")

    trainer.family.train_step = broken
    with pytest.raises(RuntimeError, match="shape mismatch"):
        list(trainer.run())


def test_fused_adam_is_chosen_for_the_gpu_only_and_undone_on_the_cpu():
    """The CUDA plan asks for fused Adam (a non-finite step is then skipped on the device); a
    CPU run of a checkpoint written on a GPU goes back to the default Adam, so the CPU path
    stays the plain loop's."""
    spec = ImageSpec(3, 8)
    family = create_family("gan", spec, dict(family_class("gan").TINY), torch.device("cpu"), 0)
    forced = plan_for(torch.device("cpu"), family, force=True)
    assert forced.fused_optimizers
    Acceleration(forced, family)
    assert all(g["fused"] for o in family.optimizers().values() for g in o.param_groups)
    Acceleration(plan_for(torch.device("cpu"), family), family)
    assert all(g["fused"] is None for o in family.optimizers().values() for g in o.param_groups)
    assert not plan_for(torch.device("cpu"), family, precision="fp16", force=True).fused_optimizers
