"""The diffusion family's mathematics: the schedule's closed forms against Bayes' rule and
Monte Carlo, samplers and the likelihood bound driven by the analytically optimal ε-predictor
for data whose answer is known (Gaussian, or one or two fixed images), DDIM inversion,
classifier-free guidance, RePaint, and that a tiny model learns."""

import math

import numpy as np
import pytest
import torch

from genstudio.core.families import (
    ImageSpec,
    SamplingCancelled,
    create_family,
    stored_family_config,
)
from genstudio.core.families.diffusion import (
    Diffusion,
    NoiseSchedule,
    PixelDecoder,
    ddim_invert,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    discretized_gaussian_log_prob,
    dpm_solver_pp_sample,
    log_snr_timesteps,
    repaint,
    repaint_positions,
    variational_bound,
)
from genstudio.core.families.unet import unet_levels

PIXEL_VALUES = torch.arange(256, dtype=torch.float64) * 2 / 255 - 1  # k → [−1, 1]


pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian_optimal_eps(schedule: NoiseSchedule, mean: float, var: float):
    """E[ε | x_t] when every dimension of x_0 is N(mean, var) independently.

    x_t = a·x_0 + s·ε with a = √ᾱ_t, s = √(1 − ᾱ_t), so (ε, x_t) are jointly Gaussian with
    Cov(ε, x_t) = s and Var(x_t) = a²·var + s², hence E[ε | x_t] = s (x_t − a·mean) / (a²·var + s²).
    It minimises the training loss, so it is what a perfect network would learn."""

    def eps(x, t):
        alpha_bar = schedule.at(schedule.alpha_bars, t, x)
        return (1 - alpha_bar).sqrt() * (x - alpha_bar.sqrt() * mean) / (alpha_bar * var + 1 - alpha_bar)

    return eps


def point_mixture_optimal_eps(schedule: NoiseSchedule, images: torch.Tensor):
    """E[ε | x_t] when x_0 is one of `images` (K, …) with equal probability: E[x_0 | x_t] is
    the images weighted by their posterior probability ∝ exp(−‖x_t − a·x_k‖² / 2s²)."""

    def eps(x, t):
        alpha_bar = schedule.at(schedule.alpha_bars, t, x)
        a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        sq_dist = (x[:, None] - a[:, None] * images[None]).pow(2).flatten(2).sum(2)  # (B, K)
        weights = torch.softmax(-sq_dist / (2 * s.view(-1, 1) ** 2), dim=1)
        x0 = torch.einsum("bk,k...->b...", weights, images)
        return (x - a * x0) / s

    return eps


# -- the schedule ---------------------------------------------------------------------------------


def test_linear_schedule_has_ho_et_al_endpoints_and_scales_with_length():
    s = NoiseSchedule.linear(1000)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    assert torch.allclose(s.betas.diff(), torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64))
    short = NoiseSchedule.linear(250)  # 4× fewer steps, 4× larger betas
    assert short.betas[0].item() == pytest.approx(4e-4) and short.betas[-1].item() == pytest.approx(0.08)
    assert torch.allclose(s.alpha_bars, torch.cumprod(1 - s.betas, 0))


def test_cosine_alpha_bar_follows_its_formula_and_decreases_inside_the_unit_interval():
    T, offset = 1000, 0.008
    s = NoiseSchedule.cosine(T)
    f = lambda t: math.cos((t / T + offset) / (1 + offset) * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 10, 500, 900):  # index t is the paper's step t + 1
        assert s.alpha_bars[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert (s.alpha_bars > 0).all() and (s.alpha_bars < 1).all()
    assert (s.alpha_bars.diff() < 0).all()
    assert s.alpha_bars[0] > 0.9999 and s.alpha_bars[-1] < 1e-6
    assert (s.betas <= 0.999).all()


def test_forward_noising_is_the_closed_form_with_the_right_moments():
    s = NoiseSchedule.cosine(100)
    x0 = torch.tensor([0.7, -0.3], dtype=torch.float64).repeat(200_000, 1)
    t = torch.full((x0.shape[0],), 40)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    xt = s.q_sample(x0, t, noise)
    alpha_bar = s.alpha_bars[40]
    assert torch.allclose(xt, alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise)
    expected_mean = alpha_bar.sqrt() * torch.tensor([0.7, -0.3], dtype=torch.float64)
    assert torch.allclose(xt.mean(0), expected_mean, atol=4 * math.sqrt(1 / 200_000))
    assert torch.allclose(xt.var(0), 1 - alpha_bar, rtol=0.01)


@pytest.mark.parametrize("t", [1, 30, 98])
def test_posterior_matches_bayes_rule_on_a_grid(t):
    """q(x_{t−1} | x_t, x_0) ∝ q(x_t | x_{t−1}) q(x_{t−1} | x_0), integrated numerically."""
    s = NoiseSchedule.linear(100)
    x0, xt = torch.tensor([0.4], dtype=torch.float64), torch.tensor([-0.2], dtype=torch.float64)
    grid = torch.linspace(-6, 6, 400_001, dtype=torch.float64)
    prior_mean, prior_var = s.alpha_bars[t - 1].sqrt() * x0, 1 - s.alpha_bars[t - 1]
    log_density = (-(grid - prior_mean) ** 2 / (2 * prior_var)
                   - (xt - s.alphas[t].sqrt() * grid) ** 2 / (2 * s.betas[t]))
    weights = torch.softmax(log_density, 0)
    numeric_mean = (weights * grid).sum()
    numeric_var = (weights * (grid - numeric_mean) ** 2).sum()
    mean, var = s.q_posterior(x0, xt, torch.tensor([t]))
    assert mean.item() == pytest.approx(numeric_mean.item(), abs=1e-7)
    assert var.item() == pytest.approx(numeric_var.item(), rel=1e-4)


def test_the_optimal_predictor_leaves_a_residual_uncorrelated_with_its_input():
    """Orthogonality principle: ε − E[ε | x_t] is uncorrelated with any function of x_t."""
    s = NoiseSchedule.cosine(1000)
    g = torch.Generator().manual_seed(1)
    n = 400_000
    x0 = 0.1 + 0.3 * torch.randn(n, dtype=torch.float64, generator=g)
    noise = torch.randn(n, dtype=torch.float64, generator=g)
    t = torch.full((n,), 300)
    xt = s.q_sample(x0, t, noise)
    residual = noise - gaussian_optimal_eps(s, 0.1, 0.09)(xt, t)
    for feature in (xt, xt**2 - 1):
        assert abs((residual * feature).mean().item()) < 4 * (residual * feature).std().item() / math.sqrt(n)


# -- sampling with the optimal predictor ----------------------------------------------------------

MEAN, STD = 0.1, 0.3


def _standard_normal(n: int, seed: int = 0) -> torch.Tensor:
    z = torch.randn(n, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return (z - z.mean()) / z.std()  # exact first two moments: only the sampler's error remains


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_ddpm_with_the_optimal_predictor_reproduces_the_data_distribution(schedule, variance):
    s = NoiseSchedule.named(schedule, 1000)
    n = 20_000
    x = ddpm_sample(s, gaussian_optimal_eps(s, MEAN, STD**2), _standard_normal(n),
                    torch.Generator().manual_seed(1), variance=variance, clip=False)
    assert x.mean().item() == pytest.approx(MEAN, abs=4 * STD / math.sqrt(n))
    assert x.var().item() == pytest.approx(STD**2, rel=4 * math.sqrt(2 / n) + 0.01)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_ddim_converges_to_the_data_distribution_as_steps_grow(schedule):
    """DDIM's η = 0 ODE moves the mean exactly; each coarse step loses a little variance
    (Cauchy–Schwarz on the linear map of a Gaussian), a loss that vanishes as steps → T."""
    s = NoiseSchedule.named(schedule, 1000)
    eps_fn = gaussian_optimal_eps(s, MEAN, STD**2)
    x_T = _standard_normal(20_000)
    variances = []
    for steps in (10, 50, 1000):
        x = ddim_sample(s, eps_fn, x_T, steps, clip=False)
        # A coarse grid starts lower (t = 900 for 10 steps), where x_T ~ N(0, I) misses a
        # little of the signal; from 50 steps on the mean is exact.
        assert x.mean().item() == pytest.approx(MEAN, abs=0.01 if steps == 10 else 3e-3)
        variances.append(x.var().item())
    assert variances[0] < variances[1] < variances[2] <= STD**2
    assert variances[2] == pytest.approx(STD**2, rel=0.01)
    # η = 1 is ancestral sampling on the sub-sequence: right marginals, fresh noise.
    x = ddim_sample(s, eps_fn, x_T, 1000, eta=1.0, generator=torch.Generator().manual_seed(2), clip=False)
    assert x.mean().item() == pytest.approx(MEAN, abs=4 * STD / math.sqrt(20_000))
    assert x.var().item() == pytest.approx(STD**2, rel=0.05)


def _ode_solution(schedule: NoiseSchedule, x_start: torch.Tensor, t: int) -> torch.Tensor:
    """Where the probability-flow ODE takes x at timestep t when the data are N(MEAN, STD²) and
    the predictor is optimal: it keeps (x − √ᾱ·MEAN) / √(ᾱ·STD² + 1 − ᾱ) fixed, so x_0 is exact."""
    alpha_bar = schedule.alpha_bars.double()[t]
    return MEAN + STD * (x_start - alpha_bar.sqrt() * MEAN) / (alpha_bar * STD**2 + 1 - alpha_bar).sqrt()


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_dpm_solver_pp_is_second_order_and_far_closer_than_ddim_at_the_same_evaluations(schedule):
    s = NoiseSchedule.named(schedule, 1000)
    eps_fn = gaussian_optimal_eps(s, MEAN, STD**2)
    x_T = _standard_normal(5000)
    errors = {}
    for steps in (10, 20, 50):
        dpm = dpm_solver_pp_sample(s, eps_fn, x_T, steps, clip=False)
        ddim = ddim_sample(s, eps_fn, x_T, steps, clip=False)
        errors[steps] = ((dpm - _ode_solution(s, x_T, log_snr_timesteps(s, steps)[0])).abs().max().item(),
                         (ddim - _ode_solution(s, x_T, ddim_timesteps(1000, steps)[0])).abs().max().item())
        assert errors[steps][0] < errors[steps][1] / 4  # each against its own start's exact answer
    # Second order: 2.5× the steps cut the error about 2.5² = 6×; DDIM's (first order) about 2.5×.
    assert errors[20][0] / errors[50][0] > 4.5
    assert errors[20][1] / errors[50][1] < 3.5


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_the_stochastic_dpm_solver_pp_reproduces_the_data_distribution(schedule):
    s = NoiseSchedule.named(schedule, 1000)
    n = 20_000
    x = dpm_solver_pp_sample(s, gaussian_optimal_eps(s, MEAN, STD**2), _standard_normal(n), 200, stochastic=True,
                             generator=torch.Generator().manual_seed(1), clip=False)
    assert x.mean().item() == pytest.approx(MEAN, abs=4 * STD / math.sqrt(n))
    assert x.var().item() == pytest.approx(STD**2, rel=0.03)
    again = dpm_solver_pp_sample(s, gaussian_optimal_eps(s, MEAN, STD**2), _standard_normal(n), 200, stochastic=True,
                                 generator=torch.Generator().manual_seed(1), clip=False)
    assert torch.equal(x, again)
    with pytest.raises(ValueError, match="needs a generator"):
        dpm_solver_pp_sample(s, gaussian_optimal_eps(s, MEAN, STD**2), _standard_normal(4), 5, stochastic=True)


def test_log_snr_timesteps_are_distinct_descending_and_end_at_the_data():
    for total in (20, 1000):
        for name in ("cosine", "linear"):
            s = NoiseSchedule.named(name, total)
            for steps in (2, 3, 10, 50, total):
                timesteps = log_snr_timesteps(s, steps)
                assert len(timesteps) == min(steps, total) and timesteps[-1] == 0
                assert all(a > b for a, b in zip(timesteps, timesteps[1:], strict=False))
    s = NoiseSchedule.named("cosine", 1000)
    lam = 0.5 * (s.alpha_bars.double().log() - torch.log1p(-s.alpha_bars.double()))
    gaps = torch.diff(lam[log_snr_timesteps(s, 20)])
    assert gaps.max() / gaps.min() < 1.5  # even in λ, as whole timesteps allow


def test_ddim_inversion_round_trips_with_the_optimal_predictor():
    s = NoiseSchedule.cosine(1000)
    eps_fn = gaussian_optimal_eps(s, MEAN, STD**2)
    x0 = MEAN + STD * _standard_normal(2000, seed=3)
    x_T = ddim_invert(s, eps_fn, x0, steps=50)
    assert (ddim_sample(s, eps_fn, x_T, 50, clip=False) - x0).abs().max() < 5e-3
    z = _standard_normal(2000, seed=4)
    assert (ddim_invert(s, eps_fn, ddim_sample(s, eps_fn, z, 50, clip=False), steps=50) - z).abs().max() < 0.05
    # Without refinement the plain inversion is only first-order accurate.
    plain = ddim_sample(s, eps_fn, ddim_invert(s, eps_fn, x0, 50, refinements=0), 50, clip=False)
    assert (plain - x0).abs().max() > 10 * (ddim_sample(s, eps_fn, x_T, 50, clip=False) - x0).abs().max()


# -- the variational bound -----------------------------------------------------------------------


@pytest.mark.parametrize("mean,std", [(0.0, 0.01), (0.5, 0.1), (-0.98, 0.05), (1.2, 0.3)])
def test_discretized_gaussian_is_a_distribution_over_256_values(mean, std):
    logp = discretized_gaussian_log_prob(PIXEL_VALUES, torch.tensor(mean, dtype=torch.float64),
                                         torch.tensor(std, dtype=torch.float64))
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    k = 140
    x = PIXEL_VALUES[k].item()
    expected = 0.5 * (math.erf((x + 1 / 255 - mean) / (std * math.sqrt(2)))
                      - math.erf((x - 1 / 255 - mean) / (std * math.sqrt(2))))
    if expected > 1e-12:
        assert logp[k].item() == pytest.approx(math.log(expected), rel=1e-6)


def _discretized_gaussian_data(n: int, dims: int, mean: float, std: float):
    """n images of 8-bit data whose pixels are N(mean, std²) rounded to the 256 bins, with
    the exact log-probability of each image under that distribution."""
    probs = discretized_gaussian_log_prob(PIXEL_VALUES, torch.tensor(mean, dtype=torch.float64),
                                          torch.tensor(std, dtype=torch.float64)).exp()
    bins = torch.multinomial(probs, n * dims, replacement=True, generator=torch.Generator().manual_seed(0))
    x0 = PIXEL_VALUES[bins].view(n, 1, 1, dims)
    true_log_prob = probs.log()[bins].view(n, dims).sum(1)
    data_mean = (probs * PIXEL_VALUES).sum().item()
    data_var = (probs * (PIXEL_VALUES - data_mean) ** 2).sum().item()
    return x0, true_log_prob, data_mean, data_var


def test_the_bound_on_gaussian_data_is_just_above_the_true_nll():
    """With the optimal predictor the only slack is the fixed reverse variance (Ho et al.
    §3.2: β_t is the right choice for wide data like this); the bound is never below the
    entropy of the data, and close to it."""
    s = NoiseSchedule.cosine(1000)
    n, dims = 600, 16
    x0, true_log_prob, data_mean, data_var = _discretized_gaussian_data(n, dims, MEAN, STD)
    bound = variational_bound(s, gaussian_optimal_eps(s, data_mean, data_var), x0,
                              torch.Generator().manual_seed(1), variance="beta", clip=False,
                              batch_limit=60_000)
    gap_per_dim = (bound["total"] - (-true_log_prob)).mean().item() / dims
    stderr = (bound["total"] + true_log_prob).std().item() / math.sqrt(n) / dims
    true_nll_per_dim = -true_log_prob.mean().item() / dims  # ≈ 5.06 nats
    assert gap_per_dim > 3 * stderr and gap_per_dim < 0.1
    assert gap_per_dim / true_nll_per_dim < 0.02
    assert bound["prior"].max() < 1e-6  # the cosine schedule ends at pure noise


def test_with_a_perfect_predictor_every_kl_term_vanishes():
    """For a dataset of one image the optimal predictor recovers x_0 exactly, so with the
    posterior variance p(x_{t−1} | x_t) = q(x_{t−1} | x_t, x_0): all of L_1..L_{T−1} are 0,
    and the bound is the prior term plus a decoder N(x_0, σ_1²) centred on the right bins."""
    s = NoiseSchedule.cosine(200)
    pixels = torch.tensor([0, 3, 100, 128, 200, 254, 255, 17] * 2).view(1, 1, 4, 4)
    image = PIXEL_VALUES[pixels]
    x0 = image.repeat(8, 1, 1, 1)
    bound = variational_bound(s, point_mixture_optimal_eps(s, image), x0,
                              torch.Generator().manual_seed(2), variance="posterior", clip=False)
    assert bound["diffusion"].abs().max() < 1e-6
    # By hand: the mass of a bin of half-width 1/255 around the mean, one-sided at the ends.
    std = s.posterior_variance[1].sqrt().item()
    inner = math.erf(1 / 255 / (std * math.sqrt(2)))
    edge = 0.5 * (1 + inner)
    expected_decoder = -(12 * math.log(inner) + 4 * math.log(edge))  # pixels 0 and 255: 2 each
    assert torch.allclose(bound["decoder"], torch.tensor(expected_decoder, dtype=torch.float64), rtol=1e-6)
    alpha_bar = s.alpha_bars[-1]
    expected_prior = 0.5 * (alpha_bar * image.pow(2) - alpha_bar - torch.log1p(-alpha_bar)).sum()
    assert torch.allclose(bound["prior"], expected_prior.expand(8), rtol=1e-6)


def test_a_learned_decoder_replaces_the_decoder_term_alone():
    """decoder_log_prob takes the place of the fixed Gaussian in L_0 and nowhere else: one that
    is certain of every right answer (log p = 0) zeroes the decoder term, the rest is unchanged."""
    s = NoiseSchedule.cosine(200)
    x0, _, data_mean, data_var = _discretized_gaussian_data(20, 4, MEAN, STD)
    eps_fn = gaussian_optimal_eps(s, data_mean, data_var)
    fixed = variational_bound(s, eps_fn, x0, torch.Generator().manual_seed(3), terms=20)
    certain = variational_bound(s, eps_fn, x0, torch.Generator().manual_seed(3), terms=20,
                                decoder_log_prob=lambda x0, x1: torch.zeros_like(x0))
    assert (fixed["decoder"] > 0).all() and (certain["decoder"] == 0).all()
    for term in ("prior", "diffusion"):
        assert torch.equal(fixed[term], certain[term])


def test_the_learned_decoder_is_a_distribution_over_the_256_values_and_starts_at_the_noise_level():
    """Untrained, it is a logistic at x_1/√ᾱ_1 as wide as the last step's noise; any weights
    give each subpixel probabilities over its 256 values that sum to one."""
    s = NoiseSchedule.cosine(1000)
    decoder = PixelDecoder(3, s.alpha_bars[0].item())
    x1 = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    location, log_scale = decoder(x1)
    assert torch.allclose(location, x1 / decoder.signal)
    assert torch.allclose(log_scale.exp(), torch.full_like(x1, math.sqrt(3) / math.pi * decoder.noise))
    with torch.no_grad():
        for p in decoder.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    grid = PIXEL_VALUES.float().view(256, 1, 1, 1).expand(256, 3, 6, 6)
    total = torch.stack([decoder.log_prob(grid[k].expand(2, 3, 6, 6), x1) for k in range(256)]).exp().sum(0)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-4)


def test_the_learned_decoder_takes_the_noise_out_of_flat_images():
    """On flat images (one random level each) at the cosine schedule's first noise level, 0.8 of
    a pixel level, the fixed decoder pays ~1.8 bits per subpixel around the noisy value (0.74
    even around the true one); the learned one, trained on L_0 alone, finds the level from the
    neighbours and pays less than the fixed one's best case."""
    torch.manual_seed(0)
    s = NoiseSchedule.cosine(1000)
    alpha_bar = s.alpha_bars[0].item()
    decoder = PixelDecoder(1, alpha_bar)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)

    def flat_batch(n):
        levels = torch.randint(0, 256, (n, 1, 1, 1), generator=g)
        x0 = PIXEL_VALUES.float()[levels].expand(n, 1, 8, 8)
        return x0, math.sqrt(alpha_bar) * x0 + math.sqrt(1 - alpha_bar) * torch.randn(x0.shape, generator=g)

    for _ in range(300):
        x0, x1 = flat_batch(32)
        loss = -decoder.log_prob(x0, x1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x0, x1 = flat_batch(200)
    with torch.no_grad():
        learned_bits = -decoder.log_prob(x0, x1).mean().item() / math.log(2)
    std = s.posterior_variance[1].sqrt().item()
    fixed_bits = -discretized_gaussian_log_prob(x0.double(), x1.double() / math.sqrt(alpha_bar),
                                                torch.full_like(x0, std).double()).mean().item() / math.log(2)
    assert fixed_bits > 1.5
    assert learned_bits < 0.4


def test_the_stratified_estimate_is_unbiased_for_the_full_sum():
    s = NoiseSchedule.cosine(200)
    x0, _, data_mean, data_var = _discretized_gaussian_data(50, 4, MEAN, STD)
    eps_fn = gaussian_optimal_eps(s, data_mean, data_var)

    def bounds(seeds, terms):
        return torch.stack([
            variational_bound(s, eps_fn, x0, torch.Generator().manual_seed(seed), variance="beta",
                              clip=False, terms=terms)["total"].mean()
            for seed in seeds
        ])

    exact, estimates = bounds(range(100, 110), 0), bounds(range(40), 50)
    stderr = math.hypot(exact.std().item() / math.sqrt(10), estimates.std().item() / math.sqrt(40))
    assert estimates.mean().item() == pytest.approx(exact.mean().item(), abs=4 * stderr)
    assert stderr < 0.02 * exact.mean().item()  # the comparison has teeth


# -- RePaint ---------------------------------------------------------------------------------------


def test_repaint_walk_goes_down_with_jumps_back():
    walk = repaint_positions(20, jump_length=5, resamples=2)
    assert walk[0] == 20 and walk[-1] == 0
    moves = [b - a for a, b in zip(walk, walk[1:], strict=False)]
    assert set(moves) == {-1, 5}
    assert moves.count(5) == 2 * 3  # two jumps back at each of positions 15, 10 and 5
    assert moves.count(-1) == 20 + 2 * 3 * 5
    assert repaint_positions(10, jump_length=3, resamples=0) == list(range(10, -1, -1))


def test_repaint_fills_the_hole_consistently_with_the_known_region():
    """Data: one of two images. Shown the left half of image A, a perfect model must paint
    A's right half; shown nothing, it paints A or B."""
    s = NoiseSchedule.cosine(1000)
    a = torch.tensor([[0.8, -0.6, 0.2, 0.5]] * 4, dtype=torch.float64).view(1, 1, 4, 4)
    b = -a.flip(-1)
    images = torch.cat([a, b])
    eps_fn = point_mixture_optimal_eps(s, images)
    keep = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    keep[..., :2] = True
    known = a.repeat(16, 1, 1, 1)
    out = repaint(s, eps_fn, known, keep, torch.Generator().manual_seed(0), steps=50,
                  jump_length=5, resamples=2)
    assert (out - a).abs().max() < 0.05
    free = repaint(s, eps_fn, known, torch.zeros_like(keep), torch.Generator().manual_seed(0),
                   steps=50, jump_length=5, resamples=0)
    is_a = ((free - a).flatten(1).abs().max(1).values < 0.05).float()
    is_b = ((free - b).flatten(1).abs().max(1).values < 0.05).float()
    assert (is_a + is_b).min() == 1 and 0 < is_a.mean() < 1


# -- the family ------------------------------------------------------------------------------------


def tiny(channels: int = 1, size: int = 8, classes: int = 0, **config) -> Diffusion:
    return create_family("diffusion", ImageSpec(channels, size, classes), {**Diffusion.TINY, **config})


def randomise_zero_layers(family: Diffusion, seed: int = 0) -> Diffusion:
    """Zero-initialised output layers make a fresh ε-network output 0; give them small random
    weights so the network is a non-trivial function for the tests."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in family.ema.parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return family


@pytest.mark.parametrize("size", [8, 9, 28, 30])
def test_the_unet_handles_any_size(size):
    family = tiny(size=size)
    assert family.unet.padded % 2**unet_levels(size) == 0
    x = torch.randn(2, 1, size, size)
    assert family.unet(x, torch.tensor([0, 19])).shape == x.shape


def test_encode_decode_round_trip_with_a_random_network():
    family = randomise_zero_layers(tiny(channels=3, timesteps=100))
    family.eval_mode()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    z = family.encode(x)
    assert z.shape == (3, family.latent_dim) == (3, 3 * 8 * 8)
    assert (family.decode(z) - x).abs().max() < 0.02


def test_guidance_one_is_the_conditional_model_and_zero_the_unconditional():
    family = randomise_zero_layers(tiny(classes=3))
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([0, 5, 10, 19])
    labels = torch.tensor([0, 1, 2, 1])
    null = torch.full_like(labels, 3)
    conditional, unconditional = family.ema(x, t, labels), family.ema(x, t, null)
    assert not torch.allclose(conditional, unconditional)
    assert torch.allclose(family.eps_fn(labels, 1.0)(x, t), conditional)
    assert torch.allclose(family.eps_fn(labels, 0.0)(x, t), unconditional, atol=1e-6)
    guided = family.eps_fn(labels, 3.0)(x, t)
    assert torch.allclose(guided, unconditional + 3.0 * (conditional - unconditional), atol=1e-5)


def test_training_drops_labels_to_the_null_class_at_the_set_rate():
    from genstudio.core.families.base import BatchShard
    from genstudio.core.families.unet import drop_labels

    labels = torch.arange(20_000) % 4
    dropped = drop_labels(labels, 4, 0.3, BatchShard(), torch.Generator().manual_seed(0), torch.device("cpu"))
    is_null = dropped == 4
    assert is_null.float().mean().item() == pytest.approx(0.3, abs=0.015)
    assert torch.equal(dropped[~is_null], labels[~is_null])


def test_samplers_report_every_step_and_can_be_cancelled():
    family = tiny(timesteps=30)
    family.eval_mode()
    for options, total in (({"sampler": "ddpm"}, 30), ({"steps": 7}, 7), ({"sampler": "dpm++2m", "steps": 6}, 6),
                             ({"sampler": "dpm++2m-sde", "steps": 5}, 5)):
        seen = []
        family.sample(2, seed=0, options=family.sample_options(options),
                      progress=lambda s, t, imgs: seen.append((s, t, imgs)))  # noqa: B023
        assert [(s, t) for s, t, _ in seen] == [(i, total) for i in range(1, total + 1)]
        assert all(imgs.shape == (2, 1, 8, 8) and imgs.min() >= 0 and imgs.max() <= 1 for _, _, imgs in seen)

    def cancel(step, total, images):
        if step == 3:
            raise SamplingCancelled

    with pytest.raises(SamplingCancelled):
        family.sample(2, seed=0, progress=cancel)
    assert torch.equal(family.sample(2, seed=4, options=family.sample_options({"sampler": "ddpm"})),
                       family.sample(2, seed=4, options=family.sample_options({"sampler": "ddpm"})))


def test_inpainting_keeps_known_pixels_bit_for_bit_and_depends_only_on_the_seed():
    family = randomise_zero_layers(tiny(channels=3))
    family.eval_mode()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    keep = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.5
    out = family.inpaint(x, keep, seed=5)
    assert torch.equal(out[keep.expand_as(x)], x[keep.expand_as(x)])
    assert torch.equal(out, family.inpaint(x, keep, seed=5))
    assert not torch.equal(out, family.inpaint(x, keep, seed=6))


def test_log_prob_is_reproducible_and_a_bound_in_nats():
    family = tiny(timesteps=50)
    family.eval_mode()
    x = torch.randint(0, 256, (3, 1, 8, 8), generator=torch.Generator().manual_seed(0)).float() / 255
    lp = family.log_prob(x, seed=3)
    assert torch.equal(lp, family.log_prob(x, seed=3))
    assert torch.equal(family.likelihood_bounds(x)["vlb"], family.log_prob(x))
    # An untrained model (ε ≡ 0) is worse than uniform noise over 256 values.
    assert (lp < -64 * math.log(256)).all()


def test_a_tiny_model_learns_and_resumes_exactly():
    """Training lowers the ε-loss on a simple dataset; a copy restored from the state dict
    mid-run continues with identical numbers (the EMA's step count included)."""
    torch.manual_seed(0)
    family = tiny(size=8, lr=3e-3, warmup_steps=10)
    g = torch.Generator().manual_seed(0)
    stripes = (torch.arange(8) % 2).float().view(1, 1, 1, 8).expand(32, 1, 8, 8)
    losses = [family.train_step(stripes, None, g)["loss"] for _ in range(150)]
    assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:20]) / 20
    copy = tiny(size=8, lr=3e-3, warmup_steps=10)
    copy.load_state_dict(family.state_dict())
    g_copy = torch.Generator()
    g_copy.set_state(g.get_state())
    assert family.train_step(stripes, None, g) == copy.train_step(stripes, None, g_copy)
    assert torch.equal(family.ema.updates, copy.ema.updates)


def test_the_learned_decoder_trains_on_its_own_term_and_leaves_the_unet_as_it_was():
    """The decoder's loss shares no parameter with the UNet's, so the UNet's gradients, its
    loss and the generator's draws are those of a model with the fixed decoder; the decoder
    gets a gradient of its own, and the bound uses it."""
    learned, fixed = tiny(decoder="learned", lr=0.0), tiny(decoder="fixed", lr=0.0)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    g_learned, g_fixed = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    metrics, metrics_fixed = learned.train_step(x, None, g_learned), fixed.train_step(x, None, g_fixed)
    assert metrics["loss"] == metrics_fixed["loss"] and "decoder_bpd" not in metrics_fixed
    assert metrics["decoder_bpd"] > 0
    for mine, theirs in zip(learned.unet.parameters(), fixed.unet.parameters(), strict=True):
        assert torch.equal(mine.grad, theirs.grad)
    assert any(p.grad.abs().sum() > 0 for p in fixed.unet.parameters())
    assert torch.equal(g_learned.get_state(), g_fixed.get_state())
    assert any(p.grad.abs().sum() > 0 for p in learned.decoder.parameters())
    assert not torch.equal(learned.log_prob(x, seed=0), fixed.log_prob(x, seed=0))


def test_a_run_saved_before_the_learned_decoder_existed_keeps_the_fixed_one():
    """Its stored knobs lack `decoder`; the new default would add weights it does not have."""
    assert stored_family_config("diffusion", {"base_channels": 8})["decoder"] == "fixed"
    assert stored_family_config("diffusion", {"decoder": "learned"})["decoder"] == "learned"
    assert tiny(decoder="fixed").decoder is None and "decoder" not in tiny(decoder="fixed").networks()
    assert Diffusion.Config().decoder == "learned"  # what a new run gets


def test_min_snr_weighting_is_min_snr_gamma_over_snr_of_each_drawn_timestep():
    """The weighted loss is the mean over images of min(SNR_t, γ)/SNR_t times each image's ε
    error: computed here by hand from the same draws, on the same (untrained) network."""
    family = randomise_zero_layers(tiny(size=8, min_snr_gamma=5.0, timesteps=50))
    x = torch.rand(6, 1, 8, 8)
    state = torch.Generator().manual_seed(3).get_state()
    g = torch.Generator()
    g.set_state(state)
    t = torch.randint(0, 50, (6,), generator=g)
    noise = torch.randn((6, 1, 8, 8), generator=g)
    with torch.no_grad():
        errors = (family.unet(family.schedule.q_sample(x * 2 - 1, t, noise), t, None) - noise).pow(2).mean((1, 2, 3))
    alpha_bar = family.schedule.alpha_bars[t]
    snr = alpha_bar / (1 - alpha_bar)
    expected = (errors * torch.minimum(snr, torch.tensor(5.0)) / snr).mean()
    assert (snr > 5).any() and (snr < 5).any()  # both regimes drawn
    g.set_state(state)
    assert family.train_step(x, None, g)["loss"] == pytest.approx(expected.item(), rel=1e-5)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="schedule"):
        tiny(schedule="quadratic")
    with pytest.raises(ValueError, match="variance"):
        tiny(reverse_variance="learned")
    family = tiny()
    with pytest.raises(ValueError):
        family.sample_options({"sampler": "euler"})
    with pytest.raises(ValueError, match="latents"):
        family.decode(torch.zeros(2, 10))


def test_quick_bound_for_live_plots_is_named_as_an_estimate():
    from genstudio.core.families import ImageSpec, create_family
    from genstudio.core.families.diffusion import QUICK_BOUND_TERMS

    spec = ImageSpec(channels=1, size=8)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)).mul(255).round().div(255)
    small = create_family("diffusion", spec, {"base_channels": 8, "channel_mults": (1,), "timesteps": 20})
    # With T ≤ QUICK_BOUND_TERMS the quick figure needs no estimate: it is the bound itself.
    assert set(small.likelihood_bounds(x, quick=True)) == {"vlb"}
    large = create_family("diffusion", spec, {"base_channels": 8, "channel_mults": (1,), "timesteps": 4 * QUICK_BOUND_TERMS})
    quick = large.likelihood_bounds(x, quick=True)
    assert set(quick) == {"vlb_est"} and torch.isfinite(quick["vlb_est"]).all()
    assert set(large.likelihood_bounds(x)) == {"vlb"}


def test_an_evaluation_from_the_quick_estimate_says_so_in_its_kind():
    """Training's evaluations use the quick figure; the record (and the Compare table built
    from it) must call it an estimate of the bound, not the bound."""
    from genstudio.core.families.diffusion import QUICK_BOUND_TERMS
    from genstudio.core.metrics.evaluate import _likelihood

    spec = ImageSpec(channels=1, size=8)
    family = create_family("diffusion", spec, {"base_channels": 8, "channel_mults": (1,),
                                               "timesteps": 2 * QUICK_BOUND_TERMS})
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    labels = np.zeros(4, dtype=np.int64)
    quick = _likelihood(family, images, labels, images, quick=True)
    assert quick["bpd_kind"] == "bound estimate" and quick["eval_bpd"] == quick["vlb_est_bpd"]
    full = _likelihood(family, images, labels, images)
    assert full["bpd_kind"] == "bound" and full["eval_bpd"] == full["vlb_bpd"]


def test_a_run_saved_before_the_families_shared_their_average_still_loads():
    """The EMA used to keep the averaged UNet under "model."; a checkpoint of then loads."""
    saved = create_family("diffusion", ImageSpec(1, 8), Diffusion.TINY, "cpu", seed=3)
    old_keys = {("model." + k.removeprefix("average.") if k.startswith("average.") else k): v
                for k, v in saved.ema.state_dict().items()}
    assert any(k.startswith("model.") for k in old_keys)
    fresh = create_family("diffusion", ImageSpec(1, 8), Diffusion.TINY, "cpu", seed=4)
    fresh.ema.load_state_dict(old_keys)
    for mine, theirs in zip(fresh.ema.parameters(), saved.ema.parameters(), strict=True):
        assert torch.equal(mine, theirs)
