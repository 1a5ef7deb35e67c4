"""The GAN's mathematics: each loss and the gradient penalty against hand-computed values, the
training step's bookkeeping (n_critic, EMA, spectral norm), latent inversion and inpainting,
and that a tiny class-conditional GAN draws the class it is asked for."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from genstudio.core.families import ImageSpec, create_family
from genstudio.core.families.gan import (
    EMA_STATISTICS_EVERY,
    EMA_STATISTICS_EVERY_STEP_UNTIL,
    GAN,
    ExponentialMovingAverage,
    discriminator_loss,
    ema_statistics_due,
    generator_loss,
    gradient_penalty,
    r1_penalty,
)
from genstudio.core.runs.checkpoint import load_checkpoint, save_checkpoint

REAL = torch.tensor([2.0, -1.0, 0.5])   # hand-made discriminator scores
FAKE = torch.tensor([0.5, -3.0, 1.0])


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_gan(size=16, channels=1, classes=0, seed=0, **config):
    spec = ImageSpec(channels, size, num_classes=classes)
    return create_family("gan", spec, {**GAN.TINY, **config}, device="cpu", seed=seed)


def mean(values):
    return sum(values) / len(values)


# -- losses -----------------------------------------------------------------------------------


def test_non_saturating_losses_by_hand():
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
    d_expected = mean([softplus(-r) for r in REAL.tolist()]) + mean([softplus(f) for f in FAKE.tolist()])
    g_expected = mean([-math.log(1 / (1 + math.exp(-f))) for f in FAKE.tolist()])  # −log σ(s)
    assert discriminator_loss("non-saturating", REAL, FAKE).item() == pytest.approx(d_expected, rel=1e-6)
    assert generator_loss("non-saturating", FAKE).item() == pytest.approx(g_expected, rel=1e-6)
    # A discriminator that cannot tell (all scores 0, D = ½) pays log 4 (Goodfellow 2014).
    zeros = torch.zeros(3)
    assert discriminator_loss("non-saturating", zeros, zeros).item() == pytest.approx(math.log(4.0))


def test_least_squares_losses_by_hand():
    d_expected = 0.5 * mean([(r - 1) ** 2 for r in REAL.tolist()]) + 0.5 * mean([f**2 for f in FAKE.tolist()])
    g_expected = 0.5 * mean([(f - 1) ** 2 for f in FAKE.tolist()])
    assert discriminator_loss("least-squares", REAL, FAKE).item() == pytest.approx(d_expected, rel=1e-6)
    assert generator_loss("least-squares", FAKE).item() == pytest.approx(g_expected, rel=1e-6)
    assert discriminator_loss("least-squares", torch.ones(3), torch.zeros(3)).item() == 0.0


def test_wasserstein_losses_by_hand():
    expected = mean(FAKE.tolist()) - mean(REAL.tolist())
    assert discriminator_loss("wgan-gp", REAL, FAKE).item() == pytest.approx(expected, rel=1e-6)
    assert generator_loss("wgan-gp", FAKE).item() == pytest.approx(-mean(FAKE.tolist()), rel=1e-6)


@pytest.mark.parametrize("loss", ["non-saturating", "least-squares", "wgan-gp"])
def test_each_loss_rewards_the_right_player(loss):
    """Signs: D's loss falls when real scores rise or fake scores fall; G's when fakes rise
    (for LSGAN, inside its targets: real scores below 1, fake scores above 0)."""
    real = torch.tensor([-0.5, 0.2, 0.8], requires_grad=True)
    fake = torch.tensor([0.3, 0.6, 0.9], requires_grad=True)
    discriminator_loss(loss, real, fake).backward()
    assert (real.grad < 0).all() and (fake.grad > 0).all()
    fake_for_g = torch.tensor([-0.5, 0.3, 0.1], requires_grad=True)  # LSGAN's G wants s → 1
    generator_loss(loss, fake_for_g).backward()
    assert (fake_for_g.grad < 0).all()


def test_unknown_loss_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="wgan-gp"):
        tiny_gan(loss="hinge")


# -- gradient penalty -------------------------------------------------------------------------


def test_gradient_penalty_of_a_linear_critic_is_its_closed_form():
    """D(x) = w·x has ∇D = w everywhere, so the penalty is (‖w‖ − 1)² whatever the images, and
    its gradient with respect to w is 2(‖w‖ − 1) w/‖w‖: the penalty really trains the critic."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 3, 8, 8, generator=g).requires_grad_(True)
    real, fake = torch.rand(4, 3, 8, 8, generator=g), torch.rand(4, 3, 8, 8, generator=g)
    eps = torch.rand(4, 1, 1, 1, generator=g)
    penalty = gradient_penalty(lambda v: (w * v).flatten(1).sum(1), real, fake, eps)
    norm = w.detach().norm()
    assert penalty.item() == pytest.approx((norm.item() - 1) ** 2, rel=1e-5)
    penalty.backward()
    torch.testing.assert_close(w.grad, 2 * (norm - 1) * w.detach() / norm)


def test_gradient_penalty_of_a_quadratic_critic_is_its_closed_form():
    """D(x) = ½‖x‖² has ∇D(x̂) = x̂ at the interpolate x̂ = ε·real + (1 − ε)·fake."""
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(5, 1, 4, 4, generator=g), torch.randn(5, 1, 4, 4, generator=g)
    eps = torch.rand(5, 1, 1, 1, generator=g)
    penalty = gradient_penalty(lambda v: 0.5 * v.flatten(1).pow(2).sum(1), real, fake, eps)
    mixed = eps * real + (1 - eps) * fake
    expected = mean([(m.norm().item() - 1) ** 2 for m in mixed])
    assert penalty.item() == pytest.approx(expected, rel=1e-5)


def test_r1_penalty_of_a_quadratic_critic_is_its_closed_form():
    """D(x) = ½‖Ax‖² has ∇D(x) = AᵀAx, so R1 is the mean of ‖AᵀAx‖² over the real images; its
    gradient reaches A, so the penalty trains the critic."""
    g = torch.Generator().manual_seed(2)
    a = torch.randn(16, 16, generator=g).requires_grad_(True)
    real = torch.randn(5, 1, 4, 4, generator=g).requires_grad_(True)
    scores = 0.5 * (real.flatten(1) @ a.T).pow(2).sum(1)
    penalty = r1_penalty(scores, real)
    expected = mean([(a.T @ a @ x.flatten()).pow(2).sum().item() for x in real.detach()])
    assert penalty.item() == pytest.approx(expected, rel=1e-5)
    penalty.backward()
    assert a.grad is not None and a.grad.abs().sum() > 0


def test_r1_adds_its_weighted_penalty_to_the_discriminator_loss():
    """Same weights, same batch, same noise: the loss with R1 is the loss without it plus γ/2
    times the logged penalty, and the penalty is positive for a critic that is not flat."""
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    plain = tiny_gan().train_step(x, None, torch.Generator().manual_seed(1))
    penalised = tiny_gan(r1_weight=4.0).train_step(x, None, torch.Generator().manual_seed(1))
    assert "r1" not in plain and penalised["r1"] > 0
    assert penalised["d_loss"] == pytest.approx(plain["d_loss"] + 2.0 * penalised["r1"], rel=1e-4)


def test_r1_with_classes_penalises_the_projection_discriminator():
    gan = tiny_gan(classes=3, r1_weight=1.0)
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    metrics = gan.train_step(x, torch.tensor([0, 1, 2, 0, 1, 2]), torch.Generator().manual_seed(1))
    assert metrics["r1"] > 0 and math.isfinite(metrics["d_loss"])


# -- the training step ------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["non-saturating", "least-squares", "wgan-gp"])
def test_train_step_logs_what_each_loss_promises(loss):
    gan = tiny_gan(loss=loss, n_critic=2)
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    metrics = gan.train_step(x, None, torch.Generator().manual_seed(1))
    expected = {"d_loss", "g_loss", "d_real", "d_fake"} | ({"gp", "w_distance"} if loss == "wgan-gp" else set())
    assert set(metrics) == expected
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    if loss == "non-saturating":
        assert 0 < metrics["d_real"] < 1 and 0 < metrics["d_fake"] < 1  # probabilities
    if loss == "wgan-gp":  # every logged figure is a mean over the D updates, so they add up
        assert metrics["w_distance"] == pytest.approx(metrics["d_real"] - metrics["d_fake"], abs=1e-5)
        assert metrics["d_loss"] == pytest.approx(-metrics["w_distance"] + 10.0 * metrics["gp"], abs=1e-4)


@pytest.mark.parametrize("loss,n_critic,expected", [("non-saturating", 0, 1), ("wgan-gp", 0, 5),
                                                    ("least-squares", 3, 3)])
def test_n_critic_discriminator_updates_per_generator_update(loss, n_critic, expected):
    gan = tiny_gan(loss=loss, n_critic=n_critic)
    gan.train_step(torch.rand(4, 1, 16, 16), None, torch.Generator().manual_seed(0))
    d_steps = {int(s["step"]) for s in gan.optimizer_d.state.values()}
    g_steps = {int(s["step"]) for s in gan.optimizer_g.state.values()}
    assert d_steps == {expected} and g_steps == {1}


def test_adam_betas_follow_the_loss_unless_set():
    assert tiny_gan().optimizer_g.defaults["betas"] == (0.5, 0.999)
    assert tiny_gan(loss="wgan-gp").optimizer_d.defaults["betas"] == (0.0, 0.9)
    assert tiny_gan(adam_betas=(0.1, 0.99)).optimizer_d.defaults["betas"] == (0.1, 0.99)
    gan = tiny_gan(lr_generator=1e-4, lr_discriminator=4e-4)
    assert gan.optimizer_g.defaults["lr"] == 1e-4 and gan.optimizer_d.defaults["lr"] == 4e-4


def test_a_conditional_gan_refuses_a_batch_without_labels():
    with pytest.raises(ValueError, match="labels"):
        tiny_gan(classes=2).train_step(torch.rand(4, 1, 16, 16), None, torch.Generator())


# -- EMA --------------------------------------------------------------------------------------


def test_ema_is_the_hand_computed_average_with_its_warmup_schedule():
    live = torch.nn.Linear(3, 2)
    ema = ExponentialMovingAverage(live, decay=0.5, warmup=True)
    expected = [p.detach().clone() for p in live.parameters()]
    g = torch.Generator().manual_seed(0)
    for t in range(12):  # warmup (1+t)/(10+t) is below 0.5 until t = 8, then the decay rules
        with torch.no_grad():
            for p in live.parameters():
                p.add_(torch.randn(p.shape, generator=g))
        ema.update(live)
        beta = min(0.5, (1 + t) / (10 + t))
        expected = [beta * e + (1 - beta) * p.detach() for e, p in zip(expected, live.parameters(), strict=True)]
    for e, p in zip(expected, ema.average.parameters(), strict=True):
        torch.testing.assert_close(p, e)
    assert int(ema.updates) == 12


def test_the_ema_generators_batchnorm_statistics_are_its_own_weights():
    """With decay 1 the average keeps the initial weights; its running statistics must then be
    those of the initial generator run on the latents of the steps that refresh them (every
    step at first, then every EMA_STATISTICS_EVERY-th), not the live G's."""
    gan = tiny_gan(ema_decay=1.0, ema_warmup=False)
    initial = copy.deepcopy(gan.generator).train()
    x = torch.rand(2, 1, 16, 16)
    steps = EMA_STATISTICS_EVERY_STEP_UNTIL + 2 * EMA_STATISTICS_EVERY + 1
    refreshed = [step for step in range(steps) if ema_statistics_due(step)]
    assert refreshed[-3:] == [steps - 1 - 2 * EMA_STATISTICS_EVERY, steps - 1 - EMA_STATISTICS_EVERY, steps - 1]
    assert len(refreshed) == EMA_STATISTICS_EVERY_STEP_UNTIL + 3
    for step in range(steps):
        noise = torch.Generator().manual_seed(step)
        z = torch.randn(2, gan.latent_dim, generator=torch.Generator().set_state(noise.get_state()))
        gan.train_step(x, None, noise)  # draws the same z first
        if step in refreshed:
            with torch.no_grad():
                initial(z, None)
    averaged, live = gan.generator_ema.average.state_dict(), gan.generator.state_dict()
    expected = initial.state_dict()
    stats = [key for key in expected if key.endswith(("running_mean", "running_var"))]
    assert stats
    for key in stats:
        torch.testing.assert_close(averaged[key], expected[key])
        assert not torch.allclose(averaged[key], live[key])


def test_ema_decay_zero_is_the_live_generator_and_one_keeps_the_initial_weights():
    x = torch.rand(4, 1, 16, 16)
    follows = tiny_gan(ema_decay=0.0)
    frozen = tiny_gan(ema_decay=1.0, ema_warmup=False)
    initial = [p.clone() for p in frozen.generator.parameters()]
    for gan in (follows, frozen):
        for step in range(2):
            gan.train_step(x, None, torch.Generator().manual_seed(step))
    for average, live in zip(follows.generator_ema.average.parameters(), follows.generator.parameters(), strict=True):
        assert torch.equal(average, live)
    for average, start, live in zip(frozen.generator_ema.average.parameters(), initial,
                                    frozen.generator.parameters(), strict=True):
        assert torch.equal(average, start) and not torch.equal(average, live)


def test_sampling_uses_the_ema_generator_and_the_ema_is_checkpointed():
    gan = tiny_gan(ema_decay=1.0, ema_warmup=False)
    gan.train_step(torch.rand(4, 1, 16, 16), None, torch.Generator().manual_seed(0))
    gan.eval_mode()
    z = torch.randn(3, gan.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        from_ema = (gan.generator_ema.average(z, None) + 1) / 2
        from_live = (gan.generator(z, None) + 1) / 2
    torch.testing.assert_close(gan.decode(z), from_ema.clamp(0, 1))
    assert not torch.allclose(from_ema, from_live)
    state = gan.state_dict()["networks"]["generator_ema"]
    assert "updates" in state and any(key.startswith("average.") for key in state)


def test_a_resumed_gan_continues_exactly(tmp_path):
    """Weights, both optimizers, spectral-norm vectors and the EMA's update count all travel in
    the checkpoint, so a restored model takes the very same next step."""
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    noise = torch.Generator().manual_seed(1)
    original = tiny_gan(seed=0)
    original.train_step(x, None, noise)
    save_checkpoint(tmp_path / "gan.safetensors", original.state_dict(), {"family": "gan"})
    noise_state = noise.get_state()
    expected = original.train_step(x, None, noise)
    state, _meta = load_checkpoint(tmp_path / "gan.safetensors")
    restored = tiny_gan(seed=9)
    restored.load_state_dict(state)
    assert restored.train_step(x, None, torch.Generator().set_state(noise_state)) == expected
    for a, b in zip(original.generator_ema.state_dict().values(),
                    restored.generator_ema.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_train_mode_leaves_the_ema_generator_in_eval_mode():
    gan = tiny_gan()
    gan.train_mode()
    assert gan.generator.training and not gan.generator_ema.average.training


# -- spectral norm ----------------------------------------------------------------------------


def test_spectral_norm_makes_every_discriminator_layer_1_lipschitz():
    """Each forward pass in training mode runs one power iteration per layer (Miyato 2018); its
    estimate of the largest singular value approaches from below, so the normalised weight's
    spectral norm is at least 1 and, after training steps moved the weights, within a few %."""
    gan = tiny_gan(classes=3, spectral_norm=True, base_channels=8)
    x = torch.rand(8, 1, 16, 16)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    for step in range(3):
        gan.train_step(x, labels, torch.Generator().manual_seed(step))
    with torch.no_grad():
        for _ in range(5):
            gan.discriminator(x, labels)
    weights = [m.weight for m in gan.discriminator.modules() if hasattr(m, "parametrizations")]
    assert len(weights) == 6  # 16 px → 8 → 4: two convs per level, the head, the class embedding
    for weight in weights:
        largest = torch.linalg.matrix_norm(weight.detach().flatten(1), ord=2).item()
        assert 1 - 1e-4 <= largest <= 1.03
    plain = tiny_gan(spectral_norm=False, base_channels=8)
    assert not any(hasattr(m, "parametrizations") for m in plain.discriminator.modules())


# -- sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size,channels", [(8, 1), (28, 1), (45, 3), (64, 3)])
def test_networks_are_sized_from_the_image(size, channels):
    gan = tiny_gan(size=size, channels=channels)
    images = gan.sample(2, seed=0)
    assert images.shape == (2, channels, size, size)
    assert gan.discriminator(torch.rand(2, channels, size, size), None).shape == (2,)


# -- inversion and inpainting -----------------------------------------------------------------


@pytest.fixture(scope="module")
def varied_gan():
    """A tiny untrained GAN whose images vary with z: the EMA generator's BatchNorm running
    statistics are calibrated on batches of latents, so every layer is normalised as in
    training rather than a near-constant function of z."""
    gan = tiny_gan(base_channels=8, seed=2, ema_decay=0.0, inversion_steps=100, inversion_restarts=4)
    noise = torch.Generator().manual_seed(0)
    for _ in range(30):
        gan.generator_ema.refresh_statistics(torch.randn(64, gan.latent_dim, generator=noise), None)
    gan.eval_mode()
    return gan


def test_inversion_reconstructs_a_generated_image(varied_gan):
    gan = varied_gan
    z0 = torch.randn(4, gan.latent_dim, generator=torch.Generator().manual_seed(5))
    target = gan.decode(z0)
    z, error = gan.invert(target, seed=0)
    assert z.shape == (4, gan.latent_dim) and error.shape == (4,)
    random_z = torch.randn(4, gan.latent_dim, generator=torch.Generator().manual_seed(6))
    random_error = (gan.decode(random_z) - target).pow(2).flatten(1).mean(1)
    assert (error < 0.05 * random_error).all()
    # the error reported is the error of the returned z, and z stays in the prior's shell
    torch.testing.assert_close(error, (gan.decode(z) - target).pow(2).flatten(1).mean(1), atol=1e-6, rtol=1e-4)
    assert (z.norm(dim=1) <= math.sqrt(gan.latent_dim) + 3 + 1e-4).all()


def test_more_restarts_never_fit_worse(varied_gan):
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(3))  # not in G's range
    _, one = varied_gan.invert(x, steps=30, restarts=1, seed=7)
    _, several = varied_gan.invert(x, steps=30, restarts=4, seed=7)
    assert (several <= one).all()
    assert torch.equal(varied_gan.encode(x), varied_gan.invert(x)[0])  # encode is invert's z


def test_inpainting_keeps_known_pixels_and_fills_the_hole_from_the_model(varied_gan):
    gan = varied_gan
    target = gan.decode(torch.randn(2, gan.latent_dim, generator=torch.Generator().manual_seed(8)))
    keep = torch.ones(2, 1, 16, 16, dtype=torch.bool)
    keep[:, :, 4:10, 4:10] = False
    hole = ~keep.expand_as(target)
    out = gan.inpaint(target, keep, seed=1)
    assert torch.equal(out[~hole], target[~hole])  # bit for bit
    assert torch.equal(out, gan.inpaint(target, keep, seed=1))
    # the fill comes from a z fitted to the border: far closer to the truth than a random image
    random_fill = gan.sample(2, seed=9)
    assert (out - target)[hole].pow(2).mean() < 0.2 * (random_fill - target)[hole].pow(2).mean()


def test_inpainting_takes_a_broadcast_mask_and_refuses_a_wrong_one(varied_gan):
    x = torch.rand(2, 1, 16, 16)
    keep = torch.zeros(16, 16, dtype=torch.bool)
    keep[:8] = True
    out = varied_gan.inpaint(x, keep, seed=0)
    assert torch.equal(out[:, :, :8], x[:, :, :8])
    with pytest.raises(ValueError, match="keep_mask"):
        varied_gan.inpaint(x, torch.ones(2, 1, 8, 8, dtype=torch.bool), seed=0)


# -- class-conditional samples ----------------------------------------------------------------


def _bar_images(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """8×8 grey images: class 0 a bright left half, 1 a bright right half, 2 a bright top half,
    at a random brightness, plus noise: trivially separable, and only by where the light is."""
    n = labels.numel()
    images = torch.full((n, 1, 8, 8), 0.1)
    brightness = 0.6 + 0.3 * torch.rand(n, generator=generator)
    for i, label in enumerate(labels.tolist()):
        region = [(slice(None), slice(0, 4)), (slice(None), slice(4, 8)), (slice(0, 4), slice(None))][label]
        images[i, 0][region] = brightness[i]
    return (images + 0.03 * torch.randn(images.shape, generator=generator)).clamp(0, 1)


def _train_classifier(x: torch.Tensor, labels: torch.Tensor) -> torch.nn.Module:
    torch.manual_seed(0)
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    optimizer = torch.optim.Adam(classifier.parameters(), lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        F.cross_entropy(classifier(x), labels).backward()
        optimizer.step()
    return classifier


@pytest.mark.parametrize("conditioning", ["batchnorm", "concat"])
def test_a_tiny_conditional_gan_draws_the_class_it_is_asked_for(conditioning):
    g = torch.Generator().manual_seed(0)
    train_labels = torch.arange(384) % 3
    data = _bar_images(train_labels, g)
    held_out_labels = torch.arange(96) % 3
    classifier = _train_classifier(data, train_labels)
    with torch.no_grad():
        assert (classifier(_bar_images(held_out_labels, g)).argmax(1) == held_out_labels).float().mean() > 0.98

    gan = tiny_gan(size=8, classes=3, base_channels=16, latent_dim=8, lr_generator=1e-3,
                   lr_discriminator=1e-3, ema_decay=0.99, conditioning=conditioning)
    noise = torch.Generator().manual_seed(1)
    for step in range(300):  # class-conditional BatchNorm needs some 250 steps here, concat 150
        batch = torch.arange(step * 32, (step + 1) * 32) % len(data)
        gan.train_step(data[batch], train_labels[batch], noise)
    gan.eval_mode()
    requested = torch.arange(90) % 3
    samples = gan.sample(90, seed=0, labels=requested)
    with torch.no_grad():
        agreement = (classifier(samples).argmax(1) == requested).float().mean().item()
    assert agreement > 0.9  # chance is 1/3


def test_class_batchnorm_gives_the_class_only_to_the_norms():
    """z alone enters G's first layer; every BatchNorm takes its scale and shift from the class,
    starting as a plain BatchNorm's (γ = 1, β = 0), so at initialisation the class changes
    nothing and a class's own shift moves only that class's images."""
    gan = tiny_gan(size=8, classes=3)
    g = gan.generator.eval()
    assert g.project.in_features == gan.latent_dim and g.class_embedding is None
    z = torch.randn(4, gan.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        by_class = [g(z, torch.full((4,), c)) for c in range(3)]
        assert torch.equal(by_class[0], by_class[1]) and torch.equal(by_class[0], by_class[2])
        g.blocks[-1].norm.shift.weight[1] += 0.5
        moved = [g(z, torch.full((4,), c)) for c in range(3)]
    assert torch.equal(moved[0], by_class[0]) and torch.equal(moved[2], by_class[2])
    assert not torch.allclose(moved[1], by_class[1])


def test_a_conditional_run_saved_before_class_batchnorm_loads_as_it_was_trained(tmp_path):
    from genstudio.core.families import stored_family_config

    old = tiny_gan(size=8, classes=3, conditioning="concat")
    saved = {k: v for k, v in old.config.__dict__.items() if k != "conditioning"}
    rebuilt = tiny_gan(size=8, classes=3, **stored_family_config("gan", saved))
    rebuilt.generator.load_state_dict(old.generator.state_dict())  # strict: every key fits
    z = torch.randn(2, old.latent_dim)
    labels = torch.tensor([0, 2])
    old.generator.eval(), rebuilt.generator.eval()
    with torch.no_grad():
        assert torch.equal(old.generator(z, labels), rebuilt.generator(z, labels))
    with pytest.raises(RuntimeError):
        tiny_gan(size=8, classes=3).generator.load_state_dict(old.generator.state_dict())


@pytest.mark.parametrize("projection", ["pooled", "flat"])
def test_the_projection_discriminator_adds_the_class_embedding_times_the_features(projection):
    """D(x, y) = ψ(φ(x)) + ⟨embed(y), φ(x)⟩ with φ the feature maps summed over positions
    (pooled) or flattened with them; so two classes' scores differ by ⟨e_a − e_b, φ(x)⟩."""
    d = tiny_gan(size=8, classes=3, projection=projection).discriminator.eval()  # no power iteration
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        maps = d.features(x)
        phi = maps.sum(dim=(2, 3)) if projection == "pooled" else maps.flatten(1)
        embed = d.class_embedding.weight
        assert embed.shape == (3, phi.shape[1])
        scores = [d(x, torch.full((4,), c)) for c in range(3)]
        torch.testing.assert_close(scores[0] - scores[2], phi @ (embed[0] - embed[2]))
        torch.testing.assert_close(scores[1], d.head(maps.flatten(1)).squeeze(1) + phi @ embed[1])


def test_a_conditional_run_saved_before_the_pooled_projection_loads_as_it_was_trained():
    from genstudio.core.families import stored_family_config

    old = tiny_gan(size=8, classes=3, projection="flat")
    saved = {k: v for k, v in old.config.__dict__.items() if k != "projection"}
    rebuilt = tiny_gan(size=8, classes=3, **stored_family_config("gan", saved))
    rebuilt.discriminator.load_state_dict(old.discriminator.state_dict())  # strict: every key fits
    x, labels = torch.rand(2, 1, 8, 8), torch.tensor([0, 2])
    with torch.no_grad():
        assert torch.equal(old.discriminator(x, labels), rebuilt.discriminator(x, labels))
    with pytest.raises(RuntimeError):
        tiny_gan(size=8, classes=3).discriminator.load_state_dict(old.discriminator.state_dict())


def test_an_unknown_conditioning_or_projection_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="batchnorm.*concat"):
        tiny_gan(conditioning="film")
    with pytest.raises(ValueError, match="pooled.*flat"):
        tiny_gan(projection="mean")
