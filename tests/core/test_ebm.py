"""The energy-based model's mathematics: SGLD against Gaussians whose answer is known (the
stationary mean and covariance, the O(step) bias, the conditional with clamped coordinates),
the contrastive-divergence loss and its regulariser, the replay buffer's reinit rate, order and
checkpoint round trip, the sign conventions of energy, log_prob, sampling and inpainting, and
that a tiny model learns to give data a lower energy than noise."""

import math

import pytest
import torch
from torch import nn

from genstudio.core.families import ImageSpec, SamplingCancelled, create_family
from genstudio.core.families.ebm import (
    EBM,
    ReplayBuffer,
    contrastive_divergence_loss,
    sgld,
)
from genstudio.core.runs.checkpoint import load_checkpoint, save_checkpoint

MU = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
# A correlated covariance with eigenvalues in about [0.4, 2.2] (so λ_max of the precision ≈ 2.5).
_ROOT = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.6, 0.9, 0.0, 0.0], [-0.3, 0.4, 1.0, 0.0],
                      [0.2, -0.1, 0.3, 0.8]], dtype=torch.float64)
SIGMA = _ROOT @ _ROOT.T
PRECISION = torch.linalg.inv(SIGMA)


pytestmark = pytest.mark.usefixtures("one_thread")


def quadratic_energy(x):
    """E(x) = ½ (x − μ)ᵀ Σ⁻¹ (x − μ), one value per row."""
    centred = x - MU
    return 0.5 * ((centred @ PRECISION) * centred).sum(1)


def run_chains(chains, steps, step_size, keep_mask=None, start=None, seed=0):
    x = torch.zeros(chains, 4, dtype=torch.float64) if start is None else start.expand(chains, 4).clone()
    return sgld(quadratic_energy, x, torch.Generator().manual_seed(seed), steps=steps, step_size=step_size,
                noise=math.sqrt(2 * step_size), keep_mask=keep_mask)


def covariance(samples):
    centred = samples - samples.mean(0)
    return centred.T @ centred / (samples.shape[0] - 1)


def tiny_ebm(size=8, channels=1, classes=0, seed=0, **config):
    spec = ImageSpec(channels, size, num_classes=classes)
    return create_family("ebm", spec, {**EBM.TINY, **config}, device="cpu", seed=seed)


# -- Langevin dynamics ------------------------------------------------------------------------------


def test_sgld_with_langevin_noise_samples_the_gaussian():
    """x ← x − h ∇E + √(2h) ξ targets exp(−E) = N(μ, Σ). The unadjusted chain's stationary
    covariance is (Λ − hΛ²/2)⁻¹ (Λ = Σ⁻¹), within a factor 1/(1 − hλ_max/2) of Σ, and its mean
    is μ exactly; the tolerance adds that bias to 5 Monte-Carlo standard errors. 800 steps
    shrink the start's distance to μ by (1 − hλ_min)^800 < 1e-4."""
    chains, step = 20000, 0.02
    samples = run_chains(chains, 800, step)
    lam_max = torch.linalg.eigvalsh(PRECISION).max().item()
    bias = (1 / (1 - step * lam_max / 2) - 1) * SIGMA.abs().max().item()
    mean_se = (SIGMA.diagonal().max().item() / chains) ** 0.5
    cov_se = ((SIGMA.diagonal()[:, None] * SIGMA.diagonal()[None] + SIGMA**2) / chains).sqrt()
    torch.testing.assert_close(samples.mean(0), MU, rtol=0, atol=5 * mean_se)
    assert ((covariance(samples) - SIGMA).abs() <= 5 * cov_se + bias).all()


def test_sgld_bias_is_the_unadjusted_langevin_closed_form():
    """With a large step the O(h) bias dominates: the sample covariance matches (Λ − hΛ²/2)⁻¹,
    the stationary solution of S = (I − hΛ) S (I − hΛ) + 2h I, and visibly not Σ."""
    chains, step = 20000, 0.4
    samples = run_chains(chains, 300, step, seed=1)
    expected = torch.linalg.inv(PRECISION - step * PRECISION @ PRECISION / 2)
    cov_se = ((expected.diagonal()[:, None] * expected.diagonal()[None] + expected**2) / chains).sqrt()
    assert ((expected - SIGMA).abs() > 20 * cov_se).any()  # the bias is there to be seen
    assert ((covariance(samples) - expected).abs() <= 5 * cov_se).all()


def test_clamped_sgld_keeps_known_coordinates_and_samples_the_gaussian_conditional():
    """Holding x_b fixed, the free coordinates follow N(μ_a + Σ_ab Σ_bb⁻¹ (x_b − μ_b),
    Σ_aa − Σ_ab Σ_bb⁻¹ Σ_ba), computed here from Σ (the chain only ever sees Σ⁻¹)."""
    free, kept = [0, 2], [1, 3]
    known = torch.tensor([0.0, -1.0, 0.0, 0.7], dtype=torch.float64)
    keep = torch.tensor([False, True, False, True])
    chains = 20000
    samples = run_chains(chains, 800, 0.02, keep_mask=keep, start=known, seed=2)
    assert torch.equal(samples[:, kept], known[kept].expand(chains, 2))  # bit for bit
    s_ab, s_bb = SIGMA[free][:, kept], SIGMA[kept][:, kept]
    cond_mean = MU[free] + s_ab @ torch.linalg.solve(s_bb, known[kept] - MU[kept])
    cond_cov = SIGMA[free][:, free] - s_ab @ torch.linalg.solve(s_bb, s_ab.T)
    torch.testing.assert_close(samples[:, free].mean(0), cond_mean, rtol=0, atol=0.03)
    torch.testing.assert_close(covariance(samples[:, free]), cond_cov, rtol=0, atol=0.04)


def test_sgld_clips_each_gradient_coordinate_and_stays_in_bounds():
    """One noiseless step on E = 10·Σx moves every coordinate by exactly step·clip."""
    x = torch.zeros(3, 5)
    out = sgld(lambda v: 10 * v.sum(1), x, torch.Generator(), steps=1, step_size=2.0, noise=0.0,
               grad_clip=0.03)
    torch.testing.assert_close(out, torch.full_like(x, -0.06))
    out = sgld(lambda v: 10 * v.sum(1), x, torch.Generator(), steps=5, step_size=2.0, noise=0.0,
               bounds=(-1.0, 1.0))
    assert out.min() == -1.0 and out.max() <= 1.0


# -- the loss ---------------------------------------------------------------------------------------


def test_contrastive_divergence_loss_and_regulariser_by_hand():
    e_pos, e_neg, alpha = torch.tensor([-1.0, 0.5, 0.2]), torch.tensor([2.0, 0.0]), 0.3
    e_pos.requires_grad_(True)
    e_neg.requires_grad_(True)
    loss, regulariser = contrastive_divergence_loss(e_pos, e_neg, alpha)
    expected_reg = alpha * ((1.0 + 0.25 + 0.04) / 3 + (4.0 + 0.0) / 2)
    assert regulariser.item() == pytest.approx(expected_reg, rel=1e-6)
    assert loss.item() == pytest.approx((-0.3 / 3) - 1.0 + expected_reg, rel=1e-6)
    loss.backward()
    # ∂L/∂E(x+) = (1 + 2α E)/N+ (pushed down), ∂L/∂E(x−) = (−1 + 2α E)/N− (pushed up).
    torch.testing.assert_close(e_pos.grad, (1 + 2 * alpha * e_pos.detach()) / 3)
    torch.testing.assert_close(e_neg.grad, (-1 + 2 * alpha * e_neg.detach()) / 2)


def test_one_cd_step_lowers_positive_energies_relative_to_negatives():
    ebm = tiny_ebm(alpha=0.0, lr=1e-3)
    g = torch.Generator().manual_seed(0)
    positives = torch.zeros(16, 1, 8, 8)
    positives[:, :, 2:6, 2:6] = 0.8  # a bright square on black
    negatives = torch.rand(16, 1, 8, 8, generator=g) * 2 - 1

    def gap():
        with torch.no_grad():
            return (ebm.energy(positives).mean() - ebm.energy(negatives).mean()).item()

    before = gap()
    loss, _ = contrastive_divergence_loss(ebm.energy(positives), ebm.energy(negatives), 0.0)
    ebm.optimizer.zero_grad()
    loss.backward()
    ebm.optimizer.step()
    assert gap() < before - 1e-4


def test_train_step_loss_adds_up_and_a_tiny_model_learns_data_from_noise():
    """Logged figures add up; after 60 steps on one bright-square image, data has a higher
    log_prob (lower energy) than uniform noise: the energy ranks outliers."""
    ebm = tiny_ebm(lr=2e-3, sgld_steps=10, buffer_size=128)
    data = torch.zeros(16, 1, 8, 8)
    data[:, :, 2:6, 2:6] = 0.8
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        metrics = ebm.train_step(data, None, g)
    assert metrics["loss"] == pytest.approx(metrics["e_pos"] - metrics["e_neg"] + metrics["regulariser"], abs=1e-5)
    ebm.eval_mode()
    noise = torch.rand(16, 1, 8, 8, generator=g)
    assert ebm.log_prob(data).min() > ebm.log_prob(noise).max()


def test_conditional_training_adds_the_classifier_cross_entropy():
    ebm = tiny_ebm(classes=3)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    metrics = ebm.train_step(x, torch.tensor([0, 1, 2, 0, 1, 2]), torch.Generator().manual_seed(1))
    assert metrics["loss"] == pytest.approx(
        metrics["e_pos"] - metrics["e_neg"] + metrics["regulariser"] + metrics["cross_entropy"], abs=1e-5)
    assert 0.0 <= metrics["accuracy"] <= 1.0


# -- energy, log_prob, sampling and inpainting --------------------------------------------------------


def test_log_prob_is_minus_the_energy_and_the_marginal_is_a_logsumexp():
    """JEM: E(x, y) = −f(x)[y], E(x) = −logsumexp_y f(x)[y], so log p(x,y) − log p(x) is the
    classifier's log-softmax."""
    ebm = tiny_ebm(classes=3)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        logits = ebm.net(x * 2 - 1)
    torch.testing.assert_close(ebm.log_prob(x), torch.logsumexp(logits, 1))
    torch.testing.assert_close(ebm.log_prob(x, labels), logits.gather(1, labels[:, None]).squeeze(1))
    torch.testing.assert_close(ebm.log_prob(x, labels) - ebm.log_prob(x),
                               torch.log_softmax(logits, 1).gather(1, labels[:, None]).squeeze(1))
    plain = tiny_ebm()
    with torch.no_grad():
        torch.testing.assert_close(plain.log_prob(x), plain.net(x * 2 - 1)[:, 0])


class _Quadratic(nn.Module):
    """f(x) = −0.05‖x − target‖², so E = −f has its minimum at the target image."""

    def __init__(self, target):
        super().__init__()
        self.target = target

    def forward(self, x):
        return -0.05 * (x - self.target).pow(2).flatten(1).sum(1, keepdim=True)


def test_sampling_and_inpainting_descend_the_energy():
    """With a known energy the family's chains end at its minimum: the sign conventions of
    energy, SGLD and the [0, 1] ↔ [−1, 1] mapping hold together."""
    ebm = tiny_ebm()
    target = torch.linspace(-0.8, 0.8, 64).view(1, 1, 8, 8)
    ebm.net = _Quadratic(target)
    samples = ebm.sample(4, seed=0)
    torch.testing.assert_close(samples, ((target + 1) / 2).expand(4, 1, 8, 8), rtol=0, atol=0.03)
    x = torch.zeros(2, 1, 8, 8)
    keep = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    keep[:, :, :4] = True
    out = ebm.inpaint(x, keep, seed=0)
    assert torch.equal(out[keep], x[keep])
    torch.testing.assert_close(out[~keep], ((target + 1) / 2).expand(2, 1, 8, 8)[~keep], rtol=0, atol=0.03)


def test_sampling_reports_the_chain_and_can_be_cancelled():
    ebm = tiny_ebm()
    ebm.eval_mode()
    seen = []
    options = ebm.sample_options({"steps": 7})
    ebm.sample(2, seed=0, options=options, progress=lambda s, t, imgs: seen.append((s, t, imgs)))
    assert [(s, t) for s, t, _ in seen] == [(i, 7) for i in range(1, 8)]
    assert all(imgs.shape == (2, 1, 8, 8) and imgs.min() >= 0 and imgs.max() <= 1 for *_, imgs in seen)

    def cancel(step, total, images):
        if step == 3:
            raise SamplingCancelled

    with pytest.raises(SamplingCancelled):
        ebm.sample(2, seed=0, options=options, progress=cancel)


def test_sampling_from_the_buffer_continues_stored_chains():
    ebm = tiny_ebm()
    from_buffer = ebm.sample_options({"start": "buffer", "steps": 2})
    with pytest.raises(ValueError, match="buffer is empty"):
        ebm.sample(2, seed=0, options=from_buffer)
    auto, from_noise = ebm.sample_options({"steps": 2}), ebm.sample_options({"start": "noise", "steps": 2})
    assert torch.equal(ebm.sample(3, seed=1, options=auto), ebm.sample(3, seed=1, options=from_noise))
    ebm.train_step(torch.rand(4, 1, 8, 8), None, torch.Generator().manual_seed(0))
    a = ebm.sample(3, seed=1, options=from_buffer)
    assert torch.equal(a, ebm.sample(3, seed=1, options=auto))  # auto: the buffer, once it holds images
    # One step of negligible size and no noise returns stored images themselves.
    still = ebm.sample(3, seed=1, options=ebm.sample_options({"start": "buffer", "steps": 1,
                                                              "step_size": 1e-9, "noise": 0.0}))
    stored = ((ebm.buffer.images[: ebm.buffer.filled].float() + 1) / 2).flatten(1)  # (filled, D)
    distances = torch.cdist(still.flatten(1), stored)
    assert (distances.min(dim=1).values < 1e-5).all()
    with pytest.raises(ValueError, match="start"):
        ebm.sample_options({"start": "somewhere"})


# -- the replay buffer ------------------------------------------------------------------------------


def test_reinit_rate_is_respected_statistically():
    buffer = ReplayBuffer(50, (1, 2, 2))
    buffer.add(torch.full((50, 1, 2, 2), 0.5))
    n = 20000
    for rate in (0.05, 0.3):
        starts, from_buffer = buffer.starts(n, rate, torch.Generator().manual_seed(0))
        fraction = from_buffer.float().mean().item()
        assert abs(fraction - (1 - rate)) < 5 * math.sqrt(rate * (1 - rate) / n)
        assert (starts[from_buffer] == 0.5).all()
        fresh = starts[~from_buffer]
        assert fresh.min() >= -1 and fresh.max() <= 1 and abs(fresh.mean().item()) < 0.05  # uniform noise
    assert buffer.starts(100, 0.0, torch.Generator())[1].all()
    assert not buffer.starts(100, 1.0, torch.Generator())[1].any()
    assert not ReplayBuffer(50, (1, 2, 2)).starts(100, 0.0, torch.Generator())[1].any()  # empty: noise


def test_buffer_is_first_in_first_out_and_counts_its_fill():
    buffer = ReplayBuffer(5, (1, 1, 1))
    buffer.add(torch.arange(3.0).view(3, 1, 1, 1))
    assert buffer.filled == 3
    buffer.add(torch.arange(3.0, 7.0).view(4, 1, 1, 1))
    assert buffer.filled == 5 and int(buffer.added) == 7
    assert buffer.images.flatten().tolist() == [5.0, 6.0, 2.0, 3.0, 4.0]  # 0 and 1 were oldest
    buffer.add(torch.arange(10.0, 17.0).view(7, 1, 1, 1))  # more than fit: only the newest five
    assert sorted(buffer.images.flatten().tolist()) == [12.0, 13.0, 14.0, 15.0, 16.0]


def test_buffer_round_trips_through_a_checkpoint_and_training_resumes_exactly(tmp_path):
    ebm = tiny_ebm(seed=0)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        ebm.train_step(x, None, g)
    save_checkpoint(tmp_path / "c.safetensors", ebm.state_dict(), {"family": "ebm"})
    state, _ = load_checkpoint(tmp_path / "c.safetensors")
    other = tiny_ebm(seed=1)
    other.load_state_dict(state)
    assert int(other.buffer.added) == 12 and torch.equal(other.buffer.images, ebm.buffer.images)
    g_other = torch.Generator().set_state(g.get_state())
    assert ebm.train_step(x, None, g) == other.train_step(x, None, g_other)
    assert torch.equal(ebm.buffer.images, other.buffer.images)


def test_sampling_defaults_show_the_training_values_they_stand_for():
    ebm = tiny_ebm(step_size=3.0, noise=0.02)
    defaults = ebm.sampling_defaults()
    assert (defaults.step_size, defaults.noise) == (3.0, 0.02)  # not the 0 / −1 "training value" markers
    ebm.eval_mode()
    assert torch.equal(ebm.sample(2, seed=5, options=defaults), ebm.sample(2, seed=5))
