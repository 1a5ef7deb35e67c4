"""Flow matching's mathematics against closed forms: for Gaussian data the optimal velocity field
is known exactly, so its samples, its loss, its round trip and its change-of-variables likelihood
can each be checked against what they must be; the ODE solvers against their orders, Hutchinson's
divergence against the exact one, and the minibatch transport against brute force."""

import itertools
import math

import numpy as np
import pytest
import torch

from genstudio.core.families.flow_matching import (
    InpaintOptions,
    exact_divergence,
    flow_matching_loss,
    hutchinson_divergence,
    inpaint_along_path,
    integrate,
    integrate_over,
    log_likelihood,
    optimal_assignment,
    pair_by_transport,
    path_point,
    renoise,
    sample_times,
    target_velocity,
    uniform_times,
)

pytestmark = pytest.mark.usefixtures("one_thread")

MU = torch.tensor([1.0, -2.0], dtype=torch.float64)
SIGMA = torch.tensor([[2.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
EYE = torch.eye(2, dtype=torch.float64)


def path_moments(t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """For x₀ ~ N(0, I), x₁ ~ N(μ, Σ): Cov(x₁ − x₀, x_t) = tΣ − (1 − t)I and Cov(x_t) = (1 − t)²I + t²Σ."""
    return t * SIGMA - (1 - t) * EYE, (1 - t) ** 2 * EYE + t**2 * SIGMA


def optimal_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[x₁ − x₀ | x_t = x] = μ + C_t S_t⁻¹ (x − tμ), the Gaussian conditional mean."""
    out = torch.empty_like(x)
    for value in t.unique():
        rows = t == value
        c, s = path_moments(value.item())
        out[rows] = MU + (x[rows] - value * MU) @ torch.linalg.solve(s, c).T
    return out


def gaussian_log_density(x: torch.Tensor) -> torch.Tensor:
    return torch.distributions.MultivariateNormal(MU, SIGMA).log_prob(x)


def gaussian_data(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return MU + torch.randn(n, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(SIGMA).T


# -- the path and its training -------------------------------------------------------------------


def test_the_path_runs_straight_from_noise_to_data_at_its_target_velocity():
    g = torch.Generator().manual_seed(0)
    noise, data = torch.randn(3, 1, 4, 4, generator=g), torch.rand(3, 1, 4, 4, generator=g)
    torch.testing.assert_close(path_point(noise, data, torch.zeros(3)), noise)
    torch.testing.assert_close(path_point(noise, data, torch.ones(3)), data)
    t, dt = torch.tensor([0.2, 0.5, 0.9]), 1e-3
    slope = (path_point(noise, data, t + dt) - path_point(noise, data, t)) / dt
    torch.testing.assert_close(slope, target_velocity(noise, data), atol=1e-3, rtol=0)


def test_the_loss_at_the_optimal_field_is_its_closed_form():
    """E‖u − v*(x_t)‖² = tr Cov(u) − tr(C_t S_t⁻¹ C_t) with u = x₁ − x₀, Cov(u) = Σ + I; the loss
    averages over the two dimensions."""
    n, t = 200_000, 0.3
    data = gaussian_data(n, seed=1)
    noise = torch.randn(n, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    loss = flow_matching_loss(optimal_velocity, noise, data, torch.full((n,), t, dtype=torch.float64))
    c, s = path_moments(t)
    expected = (torch.trace(SIGMA + EYE) - torch.trace(c @ torch.linalg.solve(s, c))) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=0.02)
    worse = flow_matching_loss(lambda x, tt: optimal_velocity(x, tt) + 0.1, noise, data,
                               torch.full((n,), t, dtype=torch.float64))
    assert worse.item() == pytest.approx(loss.item() + 0.01, rel=0.02)  # the optimum is a minimum


def test_training_times_lie_inside_the_interval_where_each_kind_puts_them():
    g = torch.Generator().manual_seed(0)
    uniform, logit_normal = sample_times(20_000, "uniform", g), sample_times(20_000, "logit-normal", g)
    for t in (uniform, logit_normal):
        assert t.min() > 0 and t.max() < 1
    assert uniform.mean().item() == pytest.approx(0.5, abs=0.01)
    assert uniform.var().item() == pytest.approx(1 / 12, rel=0.05)
    assert logit_normal.mean().item() == pytest.approx(0.5, abs=0.01)
    assert ((logit_normal > 0.25) & (logit_normal < 0.75)).float().mean() > 0.7  # the middle
    with pytest.raises(ValueError, match="logit-normal, uniform"):
        sample_times(4, "beta", g)


# -- minibatch optimal transport -----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_the_assignment_is_the_cheapest_permutation(seed):
    rng = np.random.default_rng(seed)
    cost = rng.random((6, 6)) if seed else rng.integers(0, 3, (6, 6)).astype(float)  # seed 0: ties
    best = min(sum(cost[i, p[i]] for i in range(6)) for p in itertools.permutations(range(6)))
    assignment = optimal_assignment(cost)
    assert sorted(assignment) == list(range(6))
    assert cost[np.arange(6), assignment].sum() == pytest.approx(best)


def test_transport_pairing_reorders_the_noise_and_shortens_the_paths():
    g = torch.Generator().manual_seed(0)
    noise, data = torch.randn(32, 1, 4, 4, generator=g), torch.randn(32, 1, 4, 4, generator=g) + 2
    paired = pair_by_transport(noise, data)
    assert sorted(paired.flatten(1).sum(1).tolist()) == pytest.approx(sorted(noise.flatten(1).sum(1).tolist()))
    assert (paired - data).pow(2).sum() < (noise - data).pow(2).sum()


# -- the ODE ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver,order", [("euler", 1), ("midpoint", 2), ("heun", 2)])
def test_each_solver_converges_at_its_order(solver, order):
    """dx/dt = x from x(0) = 1 gives e at t = 1; halving the step divides the error by 2^order."""
    def field(x, t):
        return x

    one = torch.ones(1, 1, dtype=torch.float64)
    errors = [abs(integrate(field, one, 0.0, 1.0, steps, solver).item() - math.e) for steps in (20, 40)]
    assert errors[0] / errors[1] == pytest.approx(2**order, rel=0.1)


def test_a_step_report_follows_every_step_and_bad_arguments_are_refused():
    seen = []
    integrate(lambda x, t: x, torch.ones(1, 1), 0.0, 1.0, 3, "euler", on_step=lambda i, n, x: seen.append((i, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(ValueError, match="euler, midpoint, heun"):
        integrate(lambda x, t: x, torch.ones(1, 1), 0.0, 1.0, 3, "rk4")
    with pytest.raises(ValueError, match="at least 1"):
        integrate(lambda x, t: x, torch.ones(1, 1), 0.0, 1.0, 0)


def test_sampling_the_optimal_field_reproduces_the_data_distribution():
    noise = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    samples = integrate(optimal_velocity, noise, 0.0, 1.0, 50, "heun")
    torch.testing.assert_close(samples.mean(0), MU, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(samples.T), SIGMA, atol=0.06, rtol=0)


def test_encoding_then_decoding_returns_the_data():
    data = gaussian_data(100, seed=4)
    latent = integrate(optimal_velocity, data, 1.0, 0.0, 50, "heun")
    torch.testing.assert_close(integrate(optimal_velocity, latent, 0.0, 1.0, 50, "heun"), data, atol=1e-4, rtol=0)
    # and the latent is the noise the data came from: standard normal
    big = integrate(optimal_velocity, gaussian_data(20_000, seed=5), 1.0, 0.0, 50, "heun")
    torch.testing.assert_close(torch.cov(big.T), EYE, atol=0.06, rtol=0)


# -- the likelihood --------------------------------------------------------------------------------


def test_the_change_of_variables_likelihood_of_the_optimal_field_is_the_gaussian_density():
    data = gaussian_data(50, seed=6)
    log_p, _noise = log_likelihood(optimal_velocity, data, uniform_times(1.0, 0.0, 200),
                                   lambda x, t: exact_divergence(optimal_velocity, x, t)[:, None])
    torch.testing.assert_close(log_p[:, 0], gaussian_log_density(data), atol=2e-4, rtol=0)  # Heun's error at 200 steps


def curved_field(x, t):
    """A field whose Jacobian depends on x, so the divergence is not a constant."""
    w = torch.tensor([[0.5, -1.0, 0.3], [0.8, 0.2, -0.6], [-0.4, 0.9, 0.7]], dtype=x.dtype)
    return torch.tanh(x @ w.T) * (1 + t[:, None]) + x.pow(2) * 0.1


def test_the_exact_divergence_is_the_trace_of_the_jacobian():
    x, t = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0.1, 0.4, 0.6, 0.9], dtype=torch.float64)
    def jacobian_trace(point, time):
        return torch.trace(torch.autograd.functional.jacobian(lambda v: curved_field(v[None], time)[0], point))

    expected = [jacobian_trace(x[i], t[i:i + 1]) for i in range(4)]
    torch.testing.assert_close(exact_divergence(curved_field, x, t), torch.stack(expected))


def test_hutchinsons_estimate_is_unbiased():
    x, t = torch.randn(4, 3, dtype=torch.float64), torch.full((4,), 0.5, dtype=torch.float64)
    estimates = hutchinson_divergence(curved_field, x, t, 4000, torch.Generator().manual_seed(7))
    mean, standard_error = estimates.mean(1), estimates.std(1) / math.sqrt(4000)
    assert (standard_error > 0).all()  # an estimate, not the trace by another name
    assert ((mean - exact_divergence(curved_field, x, t)).abs() < 4 * standard_error).all()


def test_the_likelihood_with_hutchinsons_estimate_scatters_around_the_exact_one():
    """One path, 400 probes each integrated on its own: their mean is within its standard error
    of the likelihood with the exact divergence."""
    data = gaussian_data(8, seed=8)
    g = torch.Generator().manual_seed(9)
    probes = log_likelihood(optimal_velocity, data, uniform_times(1.0, 0.0, 20),
                            lambda x, t: hutchinson_divergence(optimal_velocity, x, t, 400, g), columns=400)[0]
    exact = log_likelihood(optimal_velocity, data, uniform_times(1.0, 0.0, 20),
                           lambda x, t: exact_divergence(optimal_velocity, x, t)[:, None])[0][:, 0]
    assert (probes.std(1) > 0).all()
    assert ((probes.mean(1) - exact).abs() < 4 * probes.std(1) / math.sqrt(400)).all()


def test_the_likelihoods_ode_must_end_at_the_noise():
    with pytest.raises(ValueError, match="end at t = 0"):
        log_likelihood(lambda x, s: x, torch.ones(1, 1), [1.0, 0.5], lambda x, s: x.new_zeros(1, 1))


def test_a_grid_of_equal_steps_integrates_as_the_step_count_does():
    field = curved_field
    x = torch.randn(3, 3, dtype=torch.float64)
    torch.testing.assert_close(integrate_over(field, x, uniform_times(0.2, 0.9, 7), "heun"),
                               integrate(field, x, 0.2, 0.9, 7, "heun"))


# -- inpainting ------------------------------------------------------------------------------------


def test_renoising_gives_the_paths_own_distribution_at_the_earlier_time():
    """From x_s = (1 − s)·x₀ + s·x₁, renoise to t < s must give x_t's law: mean t·x₁, std 1 − t."""
    g = torch.Generator().manual_seed(10)
    data = torch.full((200_000, 1), 0.7, dtype=torch.float64)
    s, t = 0.8, 0.3
    later = path_point(torch.randn(data.shape, generator=g, dtype=torch.float64), data, torch.full((200_000,), s))
    earlier = renoise(later, s, t, g)
    assert earlier.mean().item() == pytest.approx(t * 0.7, abs=0.01)
    assert earlier.std().item() == pytest.approx(1 - t, rel=0.01)


def test_inpainting_keeps_the_known_values_and_fills_from_the_conditional():
    """With the optimal field of a 2-D Gaussian, keeping coordinate 0 and filling coordinate 1
    should give p(x₁ | x₀ kept) = N(μ₁ + Σ₁₀/Σ₀₀ (k − μ₀), Σ₁₁ − Σ₁₀²/Σ₀₀); RePaint is an
    approximation of that, so the check is loose."""
    n, kept = 4000, 2.0
    known = torch.zeros(n, 2, dtype=torch.float64)
    known[:, 0] = kept
    keep = torch.tensor([True, False]).expand(n, 2)
    filled = inpaint_along_path(optimal_velocity, known, keep, torch.Generator().manual_seed(11),
                                InpaintOptions(steps=50, resamples=4))
    assert torch.equal(filled[:, 0], known[:, 0])
    mean = MU[1] + SIGMA[1, 0] / SIGMA[0, 0] * (kept - MU[0])
    std = math.sqrt(SIGMA[1, 1] - SIGMA[1, 0] ** 2 / SIGMA[0, 0])
    assert filled[:, 1].mean().item() == pytest.approx(mean.item(), abs=0.1)
    assert filled[:, 1].std().item() == pytest.approx(std, rel=0.2)


# -- the family ----------------------------------------------------------------------------------


def tiny_model(classes=0, **config):
    from genstudio.core.families import ImageSpec, create_family
    from genstudio.core.families.flow_matching import FlowMatching

    return create_family("flow-matching", ImageSpec(1, 8, num_classes=classes), {**FlowMatching.TINY, **config},
                         device="cpu", seed=0)


def test_guidance_mixes_the_conditional_and_unconditional_fields():
    model = tiny_model(classes=3)
    for p in model.ema.parameters():  # a fresh network is v = 0 for every class: give it some
        torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(p.numel()))
    x, t, y = torch.randn(4, 1, 8, 8), torch.rand(4), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        conditional, unconditional = model.ema(x, t, y), model.ema(x, t, torch.full_like(y, 3))
        torch.testing.assert_close(model.velocity_fn(y, 1.0)(x, t), conditional)
        torch.testing.assert_close(model.velocity_fn(y, 0.0)(x, t), unconditional)
        torch.testing.assert_close(model.velocity_fn(y, 2.5)(x, t), unconditional + 2.5 * (conditional - unconditional))


def test_the_default_sampler_never_reads_the_field_at_the_data_end():
    """At t = 1 the field of data with discrete support is singular (docs: Heun's last slope there
    made the shipped model's samples far worse); Euler, the default, stops reading at 1 − h."""
    model = tiny_model()
    times = []
    handle = model.ema.register_forward_hook(lambda _m, args, _out: times.append(float(args[1].max())))
    model.eval_mode()
    model.sample(2, seed=0)
    handle.remove()
    assert len(times) == model.SampleOptions().steps and max(times) < 1.0
    times.clear()
    handle = model.ema.register_forward_hook(lambda _m, args, _out: times.append(float(args[1].max())))
    model.sample(2, seed=0, options=model.sample_options({"solver": "heun"}))
    handle.remove()
    assert max(times) == pytest.approx(1.0)  # what the default avoids


@pytest.mark.parametrize("transport_pairing", [False, True])
def test_a_tiny_model_learns_a_flat_grey_image_and_encodes_it_back(transport_pairing):
    model = tiny_model(lr=1e-2, warmup_steps=0, ema_decay=0.9, transport_pairing=transport_pairing)
    assert model.sample(16, seed=1).std().item() > 0.3  # the untrained field v = 0 leaves the noise
    data, g = torch.full((16, 1, 8, 8), 0.75), torch.Generator().manual_seed(0)
    for _ in range(150):
        metrics = model.train_step(data, None, g)
    assert math.isfinite(metrics["loss"])
    model.eval_mode()
    samples = model.sample(16, seed=1)
    assert samples.mean().item() == pytest.approx(0.75, abs=0.05) and samples.std().item() < 0.1
    samples = model.sample(16, seed=1, options=model.sample_options({"solver": "heun"}))  # the latents' solver
    latent = model.encode(samples[:4])
    assert latent.shape == (4, 64)
    torch.testing.assert_close(model.decode(latent), samples[:4], atol=0.01, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])  # 64 numbers: the exact divergence; 192: Hutchinson's
def test_an_untrained_models_likelihood_is_the_standard_normal_of_the_dequantized_image(channels):
    """A fresh network is v = 0, so the ODE leaves the image where it is and the divergence is 0:
    log p(k + u) = log N(2(k + u)/256 − 1; 0, I) + D·log(2/256), whichever divergence is used."""
    from genstudio.core.families import ImageSpec, create_family
    from genstudio.core.families.flow_matching import FlowMatching
    from genstudio.core.families.layers import dequantize

    model = create_family("flow-matching", ImageSpec(channels, 8), dict(FlowMatching.TINY), device="cpu", seed=0)
    x = torch.randint(0, 256, (3, channels, 8, 8), generator=torch.Generator().manual_seed(0)) / 255.0
    pattern = torch.rand((channels, 8, 8), generator=torch.Generator().manual_seed(5))  # log_prob's, from seed 5
    z = dequantize(x, pattern) * 2 - 1
    dims = channels * 64
    expected = -0.5 * z.flatten(1).pow(2).sum(1) - 0.5 * dims * math.log(2 * math.pi) + dims * math.log(2 / 256)
    torch.testing.assert_close(model.log_prob(x, seed=5), expected, rtol=1e-5, atol=1e-3)
    name = "cnf" if channels == 1 else "cnf_est"
    assert set(model.likelihood_bounds(x, quick=True)) == {name}
