"""The VAE's mathematics: likelihood normalisation, KL closed form, a hand-computed ELBO, the
importance-weighted bound, and that a tiny model actually learns."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from genstudio.core.families import ImageSpec, bits_per_dim, create_family
from genstudio.core.families.layers import discretized_logistic_log_prob, pyramid_sizes
from genstudio.core.families.vae import HEAD_LR_FACTOR, PRIOR_LR_FACTOR, VAE

ALL_PIXEL_VALUES = torch.arange(256, dtype=torch.float64) / 255.0 * 2 - 1  # k → [−1, 1]


@pytest.mark.parametrize("mean,log_scale", [(0.0, -3.0), (0.7, -5.0), (-1.3, 0.5), (0.2, -6.0), (0.2, -8.0)])
def test_discretized_logistic_is_a_distribution_over_256_values(mean, log_scale):
    logp = discretized_logistic_log_prob(
        ALL_PIXEL_VALUES, torch.tensor(mean, dtype=torch.float64), torch.tensor(log_scale, dtype=torch.float64)
    )
    # Bins whose mass underflows (< 1e-5) use density × width at the bin centre, which undercounts
    # the logistic's convex tails and never overcounts: at the sharpest scale the VAE allows by
    # default (log-scale floor −8) the sum falls short of 1 by under 2e-5, a deficient distribution.
    total = torch.exp(logp).sum().item()
    assert 1.0 - 2e-5 < total < 1.0 + 1e-9


def test_discretized_logistic_matches_the_logistic_cdf_by_hand():
    mean, scale = 0.1, 0.05
    sigmoid = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    k = 140
    x = 2 * k / 255 - 1
    expected = sigmoid((x + 1 / 255 - mean) / scale) - sigmoid((x - 1 / 255 - mean) / scale)
    got = discretized_logistic_log_prob(torch.tensor(x), torch.tensor(mean), torch.tensor(math.log(scale)))
    assert got.item() == pytest.approx(math.log(expected), rel=1e-5)


def test_bits_per_dim_of_a_uniform_model_is_eight():
    dims = 3 * 32 * 32
    uniform_log_prob = -dims * math.log(256.0)  # nats per image of 8-bit data
    assert bits_per_dim(uniform_log_prob, dims) == pytest.approx(8.0)


def test_training_metric_bpd_agrees_with_log_prob():
    """The bpd logged during training and log_prob(samples=1) are the same ELBO, in one unit."""
    vae = create_family("vae", ImageSpec(1, 8), {"latent_dim": 2, "base_channels": 4, "lr": 0.0})
    x = (torch.rand(256, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 255).round() / 255
    logged = vae.train_step(x, None, torch.Generator().manual_seed(1))["bpd"]
    from_log_prob = bits_per_dim(vae.log_prob(x, samples=1).mean().item(), 64)
    assert logged == pytest.approx(from_log_prob, rel=2e-3)


def test_kl_closed_form_matches_monte_carlo():
    mu, logvar = torch.tensor([[0.5, -1.0, 2.0]]), torch.tensor([[-0.5, 0.3, -2.0]])
    std = torch.exp(0.5 * logvar)
    z = mu + std * torch.randn(400_000, 3, generator=torch.Generator().manual_seed(0))
    log_q = torch.distributions.Normal(mu, std).log_prob(z).sum(1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    assert VAE.kl_to_standard_normal(mu, logvar).item() == pytest.approx((log_q - log_p).mean().item(), abs=0.01)


def _constant_vae(mu, logvar, decoder_mean, scale):
    """A VAE whose encoder outputs fixed (μ, log σ²) and whose decoder outputs a constant mean:
    all weights zero, the answers put in the biases. Its prior is N(0, I), whose KL has a closed form."""
    vae = create_family("vae", ImageSpec(1, 8), {"latent_dim": 2, "base_channels": 4, "prior_components": 0})
    with torch.no_grad():
        for module in (vae.encoder, vae.decoder):
            for p in module.parameters():
                p.zero_()
        vae.encoder.head.bias.copy_(torch.tensor([*mu, *logvar]))
        vae.decoder.out.bias.fill_(decoder_mean)
        vae.likelihood["log_scale"].fill_(math.log(scale))
    return vae


def test_elbo_equals_a_value_computed_by_hand():
    mu, logvar, b, s = (0.5, -0.3), (math.log(0.25), 0.0), 0.2, 0.3
    vae = _constant_vae(mu, logvar, b, s)
    pixels = np.random.default_rng(0).integers(0, 256, size=(1, 1, 8, 8))
    x01 = torch.tensor(pixels / 255.0, dtype=torch.float32)

    def pixel_prob(k):
        sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
        x = 2 * k / 255 - 1
        upper = 1.0 if k == 255 else sig((x + 1 / 255 - b) / s)
        lower = 0.0 if k == 0 else sig((x - 1 / 255 - b) / s)
        return upper - lower

    recon = sum(math.log(pixel_prob(int(k))) for k in pixels.ravel())
    kl = 0.5 * sum(m * m + math.exp(lv) - 1 - lv for m, lv in zip(mu, logvar, strict=False))
    terms = vae.elbo_terms(x01, None, eps=torch.randn(1, 2))
    assert terms["kl"].item() == pytest.approx(kl, rel=1e-5)
    assert terms["recon"].item() == pytest.approx(recon, rel=1e-5)
    assert terms["elbo"].item() == pytest.approx(recon - kl, rel=1e-5)
    # log_prob with one importance sample is the ELBO; here the decoder ignores z, so the
    # importance weights are exact and every bound equals recon − KL + E[log p/q] terms.
    assert vae.log_prob(x01, samples=1).item() == pytest.approx(recon - kl, abs=0.05 + 0.02 * abs(recon - kl))


def test_the_likelihood_head_learns_from_the_likelihood_alone_and_the_means_from_the_shared_scale():
    """With likelihood_head, the encoder, decoder and shared scale get exactly the gradients of
    the same model without the head (the σ-VAE objective), while the head gets those of the
    ELBO under its own per-pixel locations and scales, which is the bound the model reports."""
    spec = ImageSpec(1, 8)
    knobs = {"latent_dim": 2, "base_channels": 4, "prior_components": 0, "grad_clip": 0.0, "lr": 0.0}
    with_head = create_family("vae", spec, {**knobs, "likelihood_head": True}, seed=3)
    without = create_family("vae", spec, {**knobs, "likelihood_head": False}, seed=3)
    with torch.no_grad():
        for p in with_head.likelihood_head.parameters():  # away from its zero start, so it matters
            p.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(4))
    x = (torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 255).round() / 255
    for vae in (with_head, without):
        vae.train_step(x, None, torch.Generator().manual_seed(1))  # lr 0: leaves the gradients
    for name in ("encoder", "decoder", "likelihood"):
        for (key, a), b in zip(with_head.networks()[name].named_parameters(),
                               without.networks()[name].parameters(), strict=True):
            assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-8), f"{name}.{key}"

    eps = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))  # what train_step drew
    head = list(with_head.likelihood_head.parameters())
    elbo = with_head.elbo_terms(x, None, eps)["elbo"]
    expected = torch.autograd.grad(-elbo.mean() / spec.dims, head)
    for got, want in zip((p.grad for p in head), expected, strict=True):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-8)
    # the reported bound is scored under the head's distribution, which stays near the mean shown
    out = with_head.decoder_distribution(with_head.encoder(x, None)[0], None)
    assert not torch.allclose(out.log_scale, out.fit_scale) and not torch.allclose(out.location, out.mean)
    assert (out.location - out.mean).abs().max() <= 4 * 2 / 255 + 1e-6


def test_the_likelihood_head_learns_at_its_own_rate():
    vae = create_family("vae", ImageSpec(1, 8), {"base_channels": 4, "latent_dim": 2, "lr": 1e-3})
    head = set(vae.likelihood_head.parameters())
    (group,) = [g for g in vae.optimizer.param_groups if head & set(g["params"])]
    assert set(group["params"]) == head and group["lr"] == pytest.approx(1e-3 * HEAD_LR_FACTOR)


def test_a_per_pixel_scale_is_asked_for_one_way_at_a_time():
    with pytest.raises(ValueError, match="choose one"):
        create_family("vae", ImageSpec(1, 8), {"per_pixel_scale": True, "likelihood_head": True})


def test_importance_weighted_bound_is_tighter_than_the_elbo():
    torch.manual_seed(0)
    vae = create_family("vae", ImageSpec(1, 8), {"latent_dim": 4, "base_channels": 4})
    x = (torch.rand(16, 1, 8, 8) * 255).round() / 255
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):  # a little training so q is not the prior
        vae.train_step(x, None, gen)
    elbo = vae.log_prob(x, samples=1, seed=1).mean()
    iwae = vae.log_prob(x, samples=64, seed=1).mean()
    assert iwae > elbo


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (64, 1), (45, 3)])
def test_networks_are_sized_from_the_image(size, channels):
    vae = create_family("vae", ImageSpec(channels, size), {"base_channels": 4, "latent_dim": 3})
    x = torch.rand(2, channels, size, size)
    z = vae.encode(x)
    assert z.shape == (2, 3)
    out = vae.decode(z)
    assert out.shape == (2, channels, size, size)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert pyramid_sizes(size)[-1] <= 4


def test_sampling_is_reproducible_by_seed():
    vae = create_family("vae", ImageSpec(3, 16), {"base_channels": 4})
    assert torch.equal(vae.sample(4, seed=7), vae.sample(4, seed=7))
    assert not torch.equal(vae.sample(4, seed=7), vae.sample(4, seed=8))


def test_conditional_vae_uses_the_label():
    vae = create_family("vae", ImageSpec(1, 16, num_classes=3), {"base_channels": 4})
    with torch.no_grad():
        vae.decoder.fc.weight.normal_()  # make the label's contribution visible
    a = vae.sample(2, seed=0, labels=torch.tensor([0, 0]))
    b = vae.sample(2, seed=0, labels=torch.tensor([2, 2]))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="labels must be in"):
        vae.sample(1, seed=0, labels=torch.tensor([3]))


def test_a_tiny_vae_learns_to_reconstruct():
    """Loss falling is not enough: reconstructions must get closer to their inputs."""
    torch.manual_seed(0)
    data = torch.zeros(64, 1, 16, 16)
    for i in range(64):  # bars at different positions: simple, varied structure
        data[i, 0, :, (i % 12) + 2] = 1.0
    vae = create_family("vae", ImageSpec(1, 16), {"base_channels": 8, "latent_dim": 4, "lr": 2e-3})
    gen = torch.Generator().manual_seed(0)

    def recon_error():
        return (vae.decode(vae.encode(data)) - data).abs().mean().item()

    before = recon_error()
    first = vae.train_step(data, None, gen)["bpd"]
    for _ in range(300):
        last = vae.train_step(data, None, gen)["bpd"]
    assert last < first - 1.0
    assert recon_error() < 0.5 * before


def test_gradients_are_clipped_to_the_configured_norm():
    spec = ImageSpec(channels=1, size=8)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    vae = create_family("vae", spec, {"base_channels": 4, "latent_dim": 2, "grad_clip": 1e-3})
    eps = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))
    (-vae.elbo_terms(x, None, eps)["elbo"].mean() / spec.dims).backward()
    before = vae._clip_gradients()
    params = [p for m in vae.networks().values() for p in m.parameters() if p.grad is not None]
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])).item()
    assert before > 1e-3 and after == pytest.approx(1e-3, rel=1e-3)
    metrics = vae.train_step(x, None, torch.Generator().manual_seed(2))
    assert metrics["grad_norm"] > 1e-3  # the logged norm is the one before clipping


def test_inpainting_fits_the_known_pixels_by_a_map_search_in_the_latent():
    torch.manual_seed(0)
    vae = create_family("vae", ImageSpec(channels=1, size=8), {"base_channels": 4, "latent_dim": 4,
                                                                "inpaint_steps": 60}, "cpu", seed=0)
    for _ in range(30):  # a little training, so the decoder depends on z
        vae.train_step(torch.rand(16, 1, 8, 8).round(), None, torch.Generator().manual_seed(1))
    vae.eval_mode()
    x = torch.rand(3, 1, 8, 8).round()
    keep = torch.ones(3, 1, 8, 8, dtype=torch.bool)
    keep[:, :, 2:6, 2:6] = False
    known = keep.float()
    out = vae.inpaint(x, keep, seed=1)
    assert torch.equal(out[keep], x[keep])
    # The optimised latent explains the known pixels better than the start does: rerun the
    # fit with no steps (the start) and compare the objective on the same images.
    steps = vae.config.inpaint_steps
    start_z, end_z = [], []
    for count, store in ((0, start_z), (steps, end_z)):
        object.__setattr__(vae.config, "inpaint_steps", count)
        original = vae.decode
        vae.decode = lambda z, labels=None, store=store, original=original: store.append(z) or original(z, labels)
        vae.inpaint(x, keep, seed=1)
        vae.decode = original
    object.__setattr__(vae.config, "inpaint_steps", steps)
    with torch.no_grad():
        before = vae.inpaint_objective(start_z[-1], x, known, None)
        after = vae.inpaint_objective(end_z[-1], x, known, None)
    assert (after < before).all() and (before - after).sum() > 1.0, (before, after)
    assert not torch.equal(vae.inpaint(x, keep, seed=1), vae.inpaint(x, keep, seed=2))


# -- the learned mixture prior (prior_components > 0) -------------------------------------------


def _mixture_vae(components=3, latent_dim=2):
    return create_family("vae", ImageSpec(1, 8), {"latent_dim": latent_dim, "base_channels": 4,
                                                  "prior_components": components})


def test_the_mixture_prior_density_is_the_mixture_by_hand():
    prior = _mixture_vae().prior
    with torch.no_grad():
        prior.means.copy_(torch.tensor([[0.0, 1.0], [2.0, -1.0], [-3.0, 0.5]]))
        prior.log_vars.copy_(torch.tensor([[0.0, -1.0], [0.5, 0.2], [-2.0, 0.0]]))
        prior.logits.copy_(torch.tensor([0.3, -1.0, 1.2]))
    z = torch.tensor([[0.1, 0.2], [1.5, -2.0], [-3.0, 0.4]])
    weights = torch.softmax(prior.logits.detach(), 0)
    expected = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(weights),
        torch.distributions.Independent(torch.distributions.Normal(prior.means.detach(),
                                                                   torch.exp(0.5 * prior.log_vars.detach())), 1),
    ).log_prob(z)
    assert torch.allclose(prior.log_prob(z).detach(), expected, atol=1e-5)


def test_one_standard_component_gives_the_standard_normal_elbo_in_expectation():
    """With K = 1, mean 0 and variance 1 the mixture is N(0, I): the one-sample KL estimate
    log q(z|x) − log p(z) averages to the closed form."""
    vae = _mixture_vae(components=1, latent_dim=3)
    with torch.no_grad():
        vae.prior.means.zero_()
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0)).expand(20_000, 1, 8, 8)
    eps = torch.randn(20_000, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        terms = vae.elbo_terms(x, None, eps)
        mu, logvar = vae.encoder(x[:1], None)
    closed = VAE.kl_to_standard_normal(mu, logvar).item()
    assert terms["kl"].mean().item() == pytest.approx(closed, abs=4 * terms["kl"].std().item() / 20_000**0.5)


def test_mixture_prior_samples_have_the_mixture_moments_and_temperature_zero_gives_the_means():
    vae = _mixture_vae()
    prior = vae.prior
    with torch.no_grad():
        prior.means.copy_(torch.tensor([[0.0, 4.0], [3.0, -1.0], [-3.0, 0.5]]))
        prior.log_vars.copy_(torch.tensor([[0.0, -1.0], [0.5, 0.2], [-2.0, 0.0]]))
        prior.logits.copy_(torch.tensor([0.3, -1.0, 1.2]))
    z = prior.sample(200_000, torch.Generator().manual_seed(0))
    w = torch.softmax(prior.logits.detach(), 0)[:, None]
    m, v = prior.means.detach(), prior.log_vars.detach().exp()
    mean = (w * m).sum(0)
    variance = (w * (v + m**2)).sum(0) - mean**2
    assert torch.allclose(z.mean(0), mean, atol=0.03)
    assert torch.allclose(z.var(0), variance, rtol=0.02)
    cold = prior.sample(50, torch.Generator().manual_seed(1), temperature=0.0)
    assert all(any(torch.equal(row, c) for c in m) for row in cold)


def test_the_mixture_prior_is_trained_and_checkpointed_and_sampling_uses_it():
    vae = _mixture_vae(components=4)
    assert "prior" in vae.networks()
    before = {k: p.detach().clone() for k, p in vae.prior.named_parameters()}
    x = (torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 255).round() / 255
    for step in range(5):
        vae.train_step(x, None, torch.Generator().manual_seed(step))
    assert all(not torch.equal(before[k], p) for k, p in vae.prior.named_parameters())
    # The prior learns at PRIOR_LR_FACTOR times the networks' rate: its own optimizer group.
    rates = sorted(group["lr"] for group in vae.optimizer.param_groups)
    assert rates[1] == pytest.approx(rates[0] * PRIOR_LR_FACTOR)
    with torch.no_grad():
        vae.prior.means.add_(5.0)  # move the prior: samples must follow it
    expected = vae.decode(vae.prior.sample(3, torch.Generator().manual_seed(9)))
    assert torch.equal(vae.sample(3, seed=9), expected)


def test_the_importance_weighted_bound_uses_the_mixture_prior():
    """log_prob(samples=1) is the ELBO under the model's own prior: the training bpd agrees."""
    vae = _mixture_vae(components=5)
    with torch.no_grad():
        vae.prior.means.normal_(generator=torch.Generator().manual_seed(3))
    for group in vae.optimizer.param_groups:
        group["lr"] = 0.0
    x = (torch.rand(512, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 255).round() / 255
    logged = vae.train_step(x, None, torch.Generator().manual_seed(1))["bpd"]
    from_log_prob = bits_per_dim(vae.log_prob(x, samples=1).mean().item(), 64)
    assert logged == pytest.approx(from_log_prob, rel=2e-3)


def test_vae_sample_temperature_scales_the_latent():
    vae = create_family("vae", ImageSpec(1, 8), {"base_channels": 4, "latent_dim": 3, "prior_components": 0})
    options = vae.sample_options({"temperature": 0.5})
    eps = torch.randn((2, 3), generator=torch.Generator().manual_seed(4))
    assert torch.equal(vae.sample(2, seed=4, options=options), vae.decode(eps * 0.5))
    with pytest.raises(ValueError, match="temperature"):
        vae.sample_options({"temperature": -1})


def test_a_run_saved_before_the_mixture_prior_existed_loads_and_resumes_with_its_normal_prior(tmp_path):
    """Its config.json and checkpoint lack prior_components and likelihood_head; the new defaults (a
    mixture, a head) would build a model its weights do not fit, so the knobs' EARLIER_VALUES
    (0, false) apply."""
    from genstudio.core.runs.checkpoint import load_checkpoint, save_checkpoint
    from genstudio.core.runs.run import RunDir, TrainSettings, load_run
    from genstudio.core.runtime.training import Trainer

    settings = TrainSettings(family="vae", data="builtin:tins", size=8, steps=2, batch=2, device="cpu",
                             family_config={"base_channels": 4, "latent_dim": 2, "prior_components": 0,
                                            "likelihood_head": False},
                             sample_every=0, checkpoint_every=1, grid_samples=1, eval_images=0)
    run = RunDir(tmp_path / "run")
    list(Trainer(settings, str(run.path)).run())
    config = json.loads(run.config_path.read_text())
    for stored in (config["family_config"], config["settings"]["family_config"]):
        del stored["prior_components"], stored["likelihood_head"]
    run.config_path.write_text(json.dumps(config))
    state, meta = load_checkpoint(run.checkpoint_path)
    del meta["family_config"]["prior_components"], meta["family_config"]["likelihood_head"]
    save_checkpoint(run.checkpoint_path, state, meta)

    loaded = load_run(run.path, device="cpu").family
    assert loaded.prior is None and loaded.likelihood_head is None
    list(Trainer(dataclasses.replace(settings, steps=3, family_config={}), str(run.path), resume=True).run())
    resumed = load_run(run.path, device="cpu")
    assert resumed.step == 3 and resumed.family.prior is None and resumed.family.likelihood_head is None
    assert VAE.Config().prior_components > 0 and VAE.Config().likelihood_head  # what a new run gets
