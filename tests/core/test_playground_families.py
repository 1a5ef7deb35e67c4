"""The 2-D families: their densities against closed forms where the network is known, their
densities integrating to 1 on the grid, the flow's log-determinants against autograd, the
autoregressive model's causality, and a short training that moves the yardstick the right way."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from genstudio.core.playground.families import PLANE_FAMILIES, create_plane_family
from genstudio.core.playground.families.autoregressive import logistic_mixture_log_prob
from genstudio.core.playground.families.diffusion import (
    T_MIN,
    alpha_bar,
    probability_flow_log_density,
)
from genstudio.core.playground.grid import Grid, normalise
from genstudio.core.playground.session import fit
from genstudio.core.playground.toys import toy
from genstudio.core.playground.yardstick import data_density

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = {
    "vae": {"width": 32, "importance": 16, "kl_warmup": 200},
    "gan": {"width": 32, "depth": 2},
    "flow": {"layers": 6, "width": 32},
    "diffusion": {"width": 32, "depth": 2, "steps": 40},
    "flow-matching": {"width": 32, "depth": 2, "steps": 10},
    "autoregressive": {"width": 32},
    "ebm": {"width": 32, "depth": 2, "sgld_steps": 5},
}
NORMALISED = ["flow", "diffusion", "flow-matching", "autoregressive"]   # densities that integrate to 1 by construction


def small(name, **knobs):
    return create_plane_family(name, {**SMALL[name], **knobs})


def train(family, points, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = torch.as_tensor(points, dtype=torch.float32)
    for _ in range(steps):
        rows = torch.randint(0, len(batch), (family.config.batch,), generator=g)
        family.train_step(batch[rows], g)


def test_every_family_is_registered_with_its_small_knobs():
    assert set(PLANE_FAMILIES) == set(SMALL)


def test_a_fresh_flow_matching_field_is_still_so_its_density_is_the_standard_normal():
    family = small("flow-matching")
    points = np.random.default_rng(0).standard_normal((20, 2)) * 2
    expected = -0.5 * (points**2).sum(1) - math.log(2 * math.pi)
    np.testing.assert_allclose(family.log_density(points), expected, atol=1e-5)
    np.testing.assert_allclose(family.sample(5, seed=1), torch.randn((5, 2), generator=torch.Generator().manual_seed(1)),
                               atol=1e-6)


class GaussianNoise(nn.Module):
    """The exact ε(x, t) = E[ε | x_t] for data N(0, s²I): σ(t)·x / (ᾱ(t)s² + σ(t)²)."""

    def __init__(self, s):
        super().__init__()
        self.s = s

    def forward(self, x, t):
        a = alpha_bar(t)[:, None]
        return (1 - a).sqrt() * x / (a * self.s**2 + 1 - a)


def test_the_diffusion_probability_flow_of_the_exact_noise_predictor_gives_the_gaussians_density():
    s = 0.5
    points = np.random.default_rng(1).standard_normal((10, 2)) * s
    a = alpha_bar(torch.tensor(T_MIN, dtype=torch.float64)).item()
    variance = a * s**2 + 1 - a                                    # x at T_MIN: the data blurred by σ(T_MIN)
    expected = -0.5 * (points**2).sum(1) / variance - math.log(2 * math.pi * variance)
    # the closed form the network should learn, in its place
    log_p = probability_flow_log_density(GaussianNoise(s), torch.as_tensor(points, dtype=torch.float32), steps=200)
    np.testing.assert_allclose(log_p.double().numpy(), expected, atol=2e-3)


@pytest.mark.parametrize("name", NORMALISED)
def test_a_trained_familys_density_holds_on_the_grid_the_share_of_its_samples_that_fall_there(name):
    """Its density integrates over the grid's cells to the share of its samples inside the grid
    (1 when all of them are): density and sampler are one distribution. A short-trained
    diffusion model still puts a few percent of its samples beyond [−4, 4]²."""
    family = small(name)
    train(family, toy("8gaussians").sample(2000, np.random.default_rng(0)), 100)
    grid = Grid(resolution=96)
    density = normalise(grid, family.log_density(grid.centres()), family.density_kind)
    samples = family.sample(4000, seed=3)
    inside = (np.abs(samples) < grid.extent).all(1).mean()
    assert density.mass == pytest.approx(inside, abs=0.02)   # the grid's and the solver's error
    assert density.mass > 0.5   # most of it: the check above is not between two tiny numbers


def test_the_vaes_importance_weighted_density_is_near_its_samples_share_and_above_its_elbo():
    family = small("vae", kl_warmup=50)   # the true ELBO after 50 steps: the bound is the point here
    data = toy("moons").sample(2000, np.random.default_rng(0))
    train(family, data, 200)
    grid = Grid(resolution=96)
    density = normalise(grid, family.log_density(grid.centres()), family.density_kind)
    inside = (np.abs(family.sample(4000, seed=3)) < grid.extent).all(1).mean()
    assert density.mass == pytest.approx(inside, abs=0.05)   # a bound in expectation: a little under

    def with_samples(k):
        twin = small("vae", importance=k)
        twin.encoder.load_state_dict(family.encoder.state_dict())
        twin.decoder.load_state_dict(family.decoder.state_dict())
        return twin.log_density(data[:500])

    assert with_samples(256).mean() > with_samples(1).mean()   # K = 1 is the ELBO; more samples, a tighter bound


@pytest.mark.parametrize("coupling", ["affine", "spline"])
def test_each_coupling_layers_log_determinant_is_autograds_and_it_inverts(coupling):
    family = small("flow", coupling=coupling)
    train(family, toy("moons").sample(2000, np.random.default_rng(0)), 30)  # layers that are not the identity
    x = torch.cat([torch.randn(6, 2, dtype=torch.float64), torch.tensor([[6.0, -0.5], [0.3, -7.0]], dtype=torch.float64)])  # two beyond the spline
    family.layers.double()
    for layer in family.layers:
        y, log_det = layer(x)
        jacobians = [torch.autograd.functional.jacobian(lambda v, layer=layer: layer(v[None])[0][0], point)
                     for point in x]
        torch.testing.assert_close(log_det, torch.stack([torch.linalg.slogdet(j)[1] for j in jacobians]))
        torch.testing.assert_close(layer.inverse(y), x)
    assert any(layer(x)[1].abs().max() > 1e-3 for layer in family.layers)  # trained: not all volume-preserving
    _z, total = family.to_noise(x, family.layers)
    whole = [torch.linalg.slogdet(torch.autograd.functional.jacobian(
        lambda v: family.to_noise(v[None], family.layers)[0][0], p))[1] for p in x]
    torch.testing.assert_close(total, torch.stack(whole))


@pytest.mark.parametrize("conditional", ["logistic", "nade", "mixture"])
def test_the_autoregressive_first_factor_ignores_x2_and_each_slice_integrates_to_1(conditional):
    family = small("autoregressive", conditional=conditional)
    train(family, toy("8gaussians").sample(2000, np.random.default_rng(0)), 50)
    x = torch.zeros(5, 2, requires_grad=True)
    with torch.no_grad():
        x[:, 0] = torch.linspace(-2, 2, 5)
    (grad,) = torch.autograd.grad(family._log_density(x).sum(), x)
    # ∂ log p(x)/∂x₂ is ∂ log p(x₂ | x₁)/∂x₂ alone: the first factor does not see x₂, so moving
    # x₂ changes log p(x) exactly as it changes the conditional.
    x2 = x.detach().clone().requires_grad_(True)
    params = family.second_parameters(x2[:, 0].detach())
    (grad_conditional,) = torch.autograd.grad(logistic_mixture_log_prob(x2[:, 1], *params).sum(), x2)
    torch.testing.assert_close(grad[:, 1], grad_conditional[:, 1])
    values = np.linspace(-30, 30, 60_001)
    for a in (-2.5, 0.0, 1.7):
        assert np.trapezoid(family.conditional_slice(a, values), values) == pytest.approx(1.0, abs=1e-3)


def test_the_autoregressive_mixture_learns_a_two_mode_conditional():
    # x₂ = ±1 whatever x₁ is: one logistic per x₁ (the mixture's components stuck together)
    # would put its peak between the modes, at 0.
    rng = np.random.default_rng(0)
    points = np.stack([rng.standard_normal(4000), rng.choice([-1.0, 1.0], 4000) + 0.1 * rng.standard_normal(4000)], 1)
    family = small("autoregressive")
    train(family, points, 300)
    slice_ = family.conditional_slice(0.0, np.array([-1.0, 0.0, 1.0]))
    assert slice_[0] > 5 * slice_[1] and slice_[2] > 5 * slice_[1]


@pytest.mark.parametrize("name", list(SMALL))
def test_training_brings_the_model_closer_to_the_data(name):
    grid, data = Grid(resolution=64), toy("8gaussians")
    target = data_density(grid, data)
    family = small(name)
    fitted = fit(family, data.sample(4000, np.random.default_rng(0)), math.inf, grid, target, data,
                 measure_every=math.inf, max_steps=800)
    before, after = fitted.history[0], fitted.history[-1]
    assert after.step == 800 and math.isfinite(after.kl)
    if name not in ("gan", "ebm"):   # adversarial and contrastive training need longer to be sure of
        assert after.kl < 0.8 * before.kl
    assert after.covered is not None and fitted.last.coverage.modes == 8
    assert fitted.last.samples.shape == (2000, 2)


def test_the_live_loop_trains_what_is_playing_steps_what_is_stepped_and_resets_on_request():
    import threading

    from genstudio.core.playground.live import VIEW_SAMPLES, LivePlayground, PlaygroundControl
    from genstudio.core.playground.scenario import Scenario

    scenario = Scenario(toy="8gaussians", toy_points=2000, families={"flow": SMALL["flow"], "vae": SMALL["vae"]})
    live = LivePlayground(scenario, ["flow", "vae"])
    control, views, asked = PlaygroundControl(running={"flow"}), [], set()

    def emitted(view):  # the GUI's part, scripted: step the VAE, then reset the flow, then stop
        views.append(view)
        if "step" not in asked and any(v.name == "flow" and v.steps > 0 and v.kl is not None for v in views):
            asked.add("step")
            control.step("vae", 3)
        elif "reset" not in asked and view.name == "vae" and view.steps == 3:
            asked.add("reset")
            control.reset("flow")
        elif "reset" in asked and view.name == "flow" and view.steps == 0:
            control.stop()

    thread = threading.Thread(target=live.run, args=(control, emitted),
                              kwargs={"slice_seconds": 0.01, "view_interval": 0.0, "measure_every": 0.05})
    thread.start()
    thread.join(120)
    assert not thread.is_alive()
    first = {v.name: v for v in views[:2]}
    assert first["flow"].steps == first["vae"].steps == 0 and first["flow"].kl is None   # the measurer's comes later
    assert any(v.kl is not None and v.steps > 0 for v in views if v.name == "flow")
    vae_steps = [v.steps for v in views if v.name == "vae"]
    assert vae_steps[0] == 0 and 3 in vae_steps and max(vae_steps) == 3   # stepped three, never played
    flow_steps = [v.steps for v in views if v.name == "flow"][1:]
    trained_most = flow_steps.index(max(flow_steps))
    assert max(flow_steps) > 0 and 0 in flow_steps[trained_most:]         # trained, then reset to a fresh model
    assert all(v.samples.shape == (VIEW_SAMPLES, 2) for v in views)
    assert all(v.running for v in views[2:] if v.name == "flow" and v.steps > 0)


@pytest.mark.parametrize("name", list(SMALL))
def test_every_family_has_its_own_view_of_finite_arrays_on_the_plane(name):
    from genstudio.core.playground.extras import extra_view

    family, grid = small(name), Grid(resolution=32)
    data = toy("moons").sample(600, np.random.default_rng(0))
    train(family, data, 20)
    view = extra_view(family, grid, data, t=0.3)
    assert view.title
    shown = [a for a in (view.image, view.lines, view.arrows, view.points) if a is not None]
    assert shown, "a view with nothing to draw"
    if view.image is not None:
        assert view.image.shape == (32, 32) and view.image.min() >= 0 and view.image.max() <= 1
    if view.lines is not None:
        assert view.lines.shape[1] == 2 and np.isfinite(view.lines).any()
    if view.arrows is not None:
        assert view.arrows.shape == (17 * 17, 4) and np.isfinite(view.arrows).all()
    if view.points is not None:
        assert view.points.shape == (500, 2) and np.isfinite(view.points).all()


def test_the_flow_view_shows_the_noise_grid_then_each_layer_ending_at_the_data_side():
    from genstudio.core.playground.extras import extra_view

    family = small("flow")
    data = toy("moons").sample(600, np.random.default_rng(0))
    train(family, data, 20)
    view = extra_view(family, Grid(resolution=32), data)
    assert len(view.frames) == len(family.layers) + 1
    grid_lines = view.frames[0][np.isfinite(view.frames[0]).all(1)]
    assert np.abs(grid_lines).max() == pytest.approx(2.5)          # frame 0: the noise grid itself
    np.testing.assert_array_equal(view.frames[-1], view.lines)       # the last: pushed through them all
    assert not np.allclose(view.frames[1], view.frames[0], equal_nan=True)


def test_the_vae_view_draws_two_sigma_ellipses_around_posterior_means():
    from genstudio.core.playground.extras import ELLIPSES, extra_view

    family = small("vae")
    data = toy("moons").sample(600, np.random.default_rng(0))
    train(family, data, 20)
    view = extra_view(family, Grid(resolution=32), data)
    means, stds = family.encode(data[:ELLIPSES])
    rings = view.outlines.reshape(ELLIPSES, 26, 2)[:, :25]           # 25 points and a NaN each
    np.testing.assert_allclose(rings.max(1), means + 2 * stds, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rings.mean(1)[:, 0], means[:, 0], atol=0.1 * stds[:, 0].max())


def test_the_autoregressive_view_holds_the_conditional_at_every_cursor_position():
    from genstudio.core.playground.extras import extra_view

    family = small("autoregressive")
    train(family, toy("8gaussians").sample(2000, np.random.default_rng(0)), 50)
    view = extra_view(family, Grid(resolution=32), np.zeros((2, 2)))
    assert view.slices.shape == (len(view.slice_at), len(view.slice_values))
    i = int(np.abs(view.slice_at - 1.7).argmin())
    np.testing.assert_allclose(view.slices[i], family.conditional_slice(view.slice_at[i], view.slice_values))


def test_the_live_loop_sends_a_familys_own_view_only_when_asked_and_at_the_fields_time():
    import threading

    from genstudio.core.playground.live import LivePlayground, PlaygroundControl
    from genstudio.core.playground.scenario import Scenario

    scenario = Scenario(toy="8gaussians", toy_points=2000, families={"flow-matching": SMALL["flow-matching"]})
    live = LivePlayground(scenario, ["flow-matching"])
    control, views = PlaygroundControl(running={"flow-matching"}), []

    def emitted(view):  # the GUI's part, scripted: ask for the own view, then move the field's t
        views.append(view)
        if len(views) == 3:
            control.show_own_view("flow-matching", True)
        elif view.extra is not None and "t = 0.50" in view.extra.title:
            control.set_field_time(0.9)
        elif view.extra is not None and "t = 0.90" in view.extra.title:
            control.stop()

    thread = threading.Thread(target=live.run, args=(control, emitted), kwargs={"view_interval": 0.0})
    thread.start()
    thread.join(120)
    assert not thread.is_alive()
    assert all(view.extra is None for view in views[:3])   # not asked for: not computed
    with_field = [view for view in views if view.extra is not None]
    assert with_field and with_field[-1].extra.arrows.shape == (17 * 17, 4)
