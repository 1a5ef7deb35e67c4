"""The contract every registered family keeps (docs/adding-a-family.md), run over each one.

Family-specific mathematics lives in each family's own test file; this suite checks what the
app, the CLI and the metrics rely on: shapes and ranges, reproducibility by seed, declared
capabilities that work and undeclared ones that refuse, checkpoint round trips, labels, and
inpainting that keeps the known pixels exactly."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
import torch

from benchmarks.widths import step_flops_per_image
from genstudio.core.families import (
    Capability,
    CapabilityError,
    ImageSpec,
    SamplingCancelled,
    available_families,
    create_family,
    family_class,
)
from genstudio.core.runs.checkpoint import load_checkpoint, save_checkpoint
from genstudio.core.runtime.step_runtime import StepRuntime

SIZE = 16
FAMILIES = available_families()


def tiny_config(name: str) -> dict:
    """The smallest sensible model of each family (its TINY attribute, if it declares one)."""
    return dict(getattr(family_class(name), "TINY", {}))


def make(name: str, channels: int = 3, classes: int = 0, seed: int = 0):
    spec = ImageSpec(channels=channels, size=SIZE, num_classes=classes)
    return create_family(name, spec, tiny_config(name), device="cpu", seed=seed)


def batch(n: int = 8, channels: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, SIZE, SIZE), generator=g).float() / 255


def test_every_family_is_registered_and_described():
    for name in FAMILIES:
        cls = family_class(name)
        assert cls.title and cls.summary and Capability.SAMPLE in cls.capabilities
        assert (cls.log_prob_kind is not None) == (Capability.LOG_PROB in cls.capabilities)
        # The app states how a fill was made beside it; only inpainters say how they do it.
        assert bool(cls.inpaint_method) == (Capability.INPAINT in cls.capabilities)
        assert bool(cls.why_no_latent) == (Capability.DECODE not in cls.capabilities)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("channels", [1, 3])
def test_samples_are_images_in_the_unit_range_and_reproducible(name, channels):
    family = make(name, channels)
    family.eval_mode()
    a = family.sample(3, seed=7)
    assert a.shape == (3, channels, SIZE, SIZE) and a.dtype == torch.float32 and a.device.type == "cpu"
    assert torch.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, family.sample(3, seed=7))
    assert not torch.equal(a, family.sample(3, seed=8))


@pytest.mark.parametrize("name", FAMILIES)
def test_a_train_step_is_finite_and_draws_randomness_only_from_its_generator(name):
    x = batch()
    metrics = []
    for _ in range(2):
        family = make(name, seed=3)
        metrics.append(family.train_step(x, None, torch.Generator().manual_seed(11)))
    assert metrics[0] == metrics[1]  # same weights, data and generator: same step
    assert metrics[0] and all(isinstance(v, float) and math.isfinite(v) for v in metrics[0].values())


class _CountingRuntime(StepRuntime):
    """The plain runtime, counting which optimizers each backward and step were for."""

    def __init__(self):
        super().__init__()
        self.backwards, self.steps = [], []

    def backward(self, loss, optimizer):
        self.backwards.append(optimizer)
        super().backward(loss, optimizer)

    def step(self, optimizer):
        self.steps.append(optimizer)
        super().step(optimizer)


@pytest.mark.parametrize("name", FAMILIES)
def test_a_train_step_goes_through_the_step_runtime_for_every_optimizer(name):
    """Interrupts, fp16 scaling, the gradient all-reduce and the non-finite guard live in the
    runtime (core/runtime/step_runtime.py): a family that called loss.backward() or optimizer.step()
    itself would train without them."""
    family = make(name)
    family.train_mode()
    family.step_runtime = runtime = _CountingRuntime()
    family.train_step(batch(), None, torch.Generator().manual_seed(1))
    optimizers = {id(o) for o in family.optimizers().values()}
    assert {id(o) for o in runtime.steps} == optimizers, "an optimizer was stepped outside the runtime"
    assert {id(o) for o in runtime.backwards} == optimizers
    assert len(runtime.backwards) == len(runtime.steps)  # one backward per optimizer step


@pytest.mark.parametrize("name", FAMILIES)
def test_checkpoint_round_trip_gives_the_same_samples(name, tmp_path):
    family = make(name, seed=1)
    family.train_step(batch(), None, torch.Generator().manual_seed(0))
    save_checkpoint(tmp_path / "c.safetensors", family.state_dict(), {"family": name})
    state, _meta = load_checkpoint(tmp_path / "c.safetensors")
    other = make(name, seed=2)
    other.load_state_dict(state)
    family.eval_mode()
    other.eval_mode()
    assert torch.equal(family.sample(2, seed=5), other.sample(2, seed=5))


@pytest.mark.parametrize("name", FAMILIES)
def test_undeclared_capabilities_refuse_clearly(name):
    family = make(name)
    x = batch(2)
    calls = {
        Capability.ENCODE: lambda: family.encode(x),
        Capability.DECODE: lambda: family.decode(torch.zeros(2, 4)),
        Capability.LOG_PROB: lambda: family.log_prob(x),
        Capability.INPAINT: lambda: family.inpaint(x, torch.ones(2, 1, SIZE, SIZE, dtype=torch.bool), seed=0),
    }
    for capability, call in calls.items():
        if capability not in family.capabilities:
            with pytest.raises(CapabilityError):
                call()


@pytest.mark.parametrize("name", [n for n in FAMILIES if Capability.LOG_PROB in family_class(n).capabilities])
def test_log_prob_is_finite_nats_per_image(name):
    family = make(name)
    family.eval_mode()
    lp = family.log_prob(batch(4))
    assert lp.shape == (4,) and torch.isfinite(lp).all()
    bounds = family.likelihood_bounds(batch(4))
    # Per image one figure, or several independent estimates of it (Hutchinson's probes).
    assert bounds and all(v.shape[0] == 4 and v.dim() in (1, 2) and torch.isfinite(v).all() for v in bounds.values())


@pytest.mark.parametrize("name", [n for n in FAMILIES if Capability.DECODE in family_class(n).capabilities])
def test_decode_maps_latents_to_images(name):
    family = make(name)
    family.eval_mode()
    dim = family.latent_dim
    assert isinstance(dim, int) and dim > 0
    z = torch.randn(2, dim, generator=torch.Generator().manual_seed(0))
    images = family.decode(z)
    assert images.shape == (2, 3, SIZE, SIZE) and images.min() >= 0 and images.max() <= 1
    if Capability.ENCODE in family.capabilities:
        assert family.encode(batch(2)).shape == (2, dim)


@pytest.mark.parametrize("name", [n for n in FAMILIES if Capability.INPAINT in family_class(n).capabilities])
def test_inpainting_keeps_known_pixels_exactly_and_is_reproducible(name):
    family = make(name)
    family.eval_mode()
    x = batch(2)
    keep = torch.ones(2, 1, SIZE, SIZE, dtype=torch.bool)
    keep[:, :, 4:12, 4:12] = False
    out = family.inpaint(x, keep, seed=3)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out * keep, x * keep)  # bit for bit
    assert not torch.equal(out, x)
    assert torch.equal(out, family.inpaint(x, keep, seed=3))
    with pytest.raises(ValueError, match="does not fit images"):
        family.inpaint(x, torch.ones(2, 1, SIZE + 1, SIZE, dtype=torch.bool), seed=3)


@pytest.mark.parametrize("name", [n for n in FAMILIES if Capability.CONDITIONAL in family_class(n).capabilities])
def test_conditional_families_take_labels_everywhere(name):
    family = make(name, classes=3)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    metrics = family.train_step(batch(), labels, torch.Generator().manual_seed(0))
    assert all(math.isfinite(v) for v in metrics.values())
    family.eval_mode()
    assert family.sample(3, seed=0, labels=torch.tensor([2, 1, 0])).shape == (3, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match="labels"):
        family.sample(2, seed=0, labels=torch.tensor([0, 5]))


@pytest.mark.parametrize("name", FAMILIES)
def test_sample_options_are_typed_and_progress_can_cancel(name):
    family = make(name)
    family.eval_mode()
    options = family.sample_options({})
    assert (options is None) == (family.SampleOptions is None)
    with pytest.raises(ValueError):
        family.sample_options({"no_such_option": 1})
    seen = []
    images = family.sample(2, seed=0, options=options, progress=lambda s, t, imgs: seen.append((s, t)))
    assert images.shape == (2, 3, SIZE, SIZE)
    assert all(0 < s <= t for s, t in seen)  # iterative samplers report; one-shot ones may not


@pytest.mark.parametrize("name", [n for n in FAMILIES if Capability.INPAINT in family_class(n).capabilities])
def test_inpainting_reports_progress_to_the_end_and_can_be_cancelled(name):
    """Every inpainting method is iterative here, so each reports steps up to its total; a
    progress callback that raises SamplingCancelled stops it at once."""
    family = make(name)
    family.eval_mode()
    x = batch(1)
    keep = torch.ones(1, 1, SIZE, SIZE, dtype=torch.bool)
    keep[:, :, 4:12, 4:12] = False
    seen = []
    quiet = family.inpaint(x, keep, seed=5)
    reported = family.inpaint(x, keep, seed=5, progress=lambda s, t, imgs: seen.append((s, t, imgs)))
    assert torch.equal(quiet, reported)  # watching does not change the fill
    steps = [s for s, _t, _i in seen]
    totals = {t for _s, t, _i in seen}
    assert len(totals) == 1 and steps == sorted(steps) and steps[-1] == totals.pop() and len(steps) > 1
    assert all(i is None or (i.shape == x.shape and i.min() >= 0 and i.max() <= 1) for _s, _t, i in seen)

    calls = []

    def cancel_on_second(step, total, images):
        calls.append(step)
        if len(calls) == 2:
            raise SamplingCancelled("stop")

    with pytest.raises(SamplingCancelled):
        family.inpaint(x, keep, seed=5, progress=cancel_on_second)
    assert len(calls) == 2


@pytest.mark.parametrize("name", [n for n in FAMILIES if family_class(n).width_knobs])
def test_suggested_widths_keep_a_64_px_image_about_as_cheap_as_the_defaults_at_32_px(name):
    cls = family_class(name)
    suggested = cls.suggested_config(ImageSpec(channels=3, size=64), torch.device("cpu"))
    assert suggested and set(suggested) == set(cls.width_knobs)
    assert all(value < getattr(cls.Config(), knob) for knob, value in suggested.items())
    at_32 = step_flops_per_image(name, ImageSpec(channels=3, size=32), {})
    at_64 = ImageSpec(channels=3, size=64)
    assert step_flops_per_image(name, at_64, {}) > 3.5 * at_32  # what the suggestion saves
    assert step_flops_per_image(name, at_64, suggested) < 2 * at_32


@pytest.mark.parametrize("name", FAMILIES)
def test_the_defaults_stand_where_they_are_tuned_and_on_a_gpu(name):
    cls = family_class(name)
    for size in (16, 28, 32):
        assert cls.suggested_config(ImageSpec(channels=3, size=size), torch.device("cpu")) == {}
    for device in ("cuda", "mps"):
        assert cls.suggested_config(ImageSpec(channels=3, size=128), torch.device(device)) == {}
    narrowest = cls.suggested_config(ImageSpec(channels=1, size=256), torch.device("cpu"))
    assert all(value == 8 for value in narrowest.values())  # never below 8 channels


@pytest.mark.parametrize("name", FAMILIES)
def test_every_knob_is_in_the_knob_table_of_its_docs_page(name):
    page = Path(__file__).resolve().parents[2] / "docs" / "families" / f"{name}.md"
    knobs_section = page.read_text(encoding="utf-8").split("## Knobs", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(\w+)` \|", knobs_section, re.MULTILINE))
    assert {f.name for f in dataclasses.fields(family_class(name).Config)} <= listed
