"""The normalizing flow's mathematics: every layer and the whole flow invert exactly and report
the log-determinant autograd measures; the likelihood of the identity-initialised flow against
an independent computation; the closed-form bits/dim of uniform noise; the image of the
latent's mode; exact encode/decode; actnorm's data-dependent start and its checkpointed flag;
likelihood-ascent inpainting against a closed-form optimum; and that tiny flows learn."""

import copy
import math

import pytest
import torch

from genstudio.core.families import ImageSpec, bits_per_dim, create_family
from genstudio.core.families.flow import ActNorm, Flow, levels_for_size, to_pixels
from genstudio.core.runs.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_flow(size=8, channels=1, classes=0, seed=0, **config):
    spec = ImageSpec(channels, size, num_classes=classes)
    return create_family("flow", spec, {**Flow.TINY, **config}, device="cpu", seed=seed)


def pixels(n, channels=1, size=8, seed=0, low=0, high=256):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (n, channels, size, size), generator=g).float() / 255


def trained_flow(channels=1, classes=0):
    """A tiny flow after a training step (actnorm initialised), its weights then jittered so
    that no layer is near the identity (the zero-initialised layers start there)."""
    flow = tiny_flow(8, channels, classes)
    labels = torch.arange(16) % classes if classes else None
    flow.train_step(pixels(16, channels), labels, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in flow.flow.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    flow.eval_mode()
    return flow


def layer_maps(flow, kind):
    """forward x → (y, log-det) and inverse y → x of one layer of a trained flow, and the shape
    of its input (1-channel 8 px images: 4 channels of 4×4 after the first squeeze)."""
    net = flow.flow
    if kind == "split":
        prior = net.split_priors[0]

        def forward(x):
            kept, factored = x.chunk(2, dim=1)
            eps, log_det = prior(kept, factored)
            return torch.cat([kept, eps], dim=1), log_det

        def inverse(y):
            kept, eps = y.chunk(2, dim=1)
            return torch.cat([kept, prior.inverse(kept, eps)], dim=1)

        return forward, inverse, (1, 4, 4, 4)
    if kind == "squeeze":
        return net.squeeze, net.squeeze.inverse, (1, 1, 4, 4)
    layer = net.levels[0][1].layers[["actnorm", "conv1x1", "coupling"].index(kind)]
    return layer, layer.inverse, (1, 4, 4, 4)


LAYERS = ["actnorm", "conv1x1", "coupling", "squeeze", "split"]


# -- invertibility and log-determinants ------------------------------------------------------


@pytest.mark.parametrize("kind", LAYERS)
def test_each_layer_inverts_its_forward(kind):
    forward, inverse, shape = layer_maps(trained_flow(), kind)
    x = torch.randn((3, *shape[1:]), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y, _ = forward(x)
        assert not torch.allclose(y.flatten(), x.flatten(), atol=1e-2)  # the layer is not the identity
        assert (inverse(y) - x).abs().max() < 1e-4


@pytest.mark.parametrize("kind", LAYERS)
def test_each_layer_log_det_is_the_log_abs_det_of_its_jacobian(kind):
    flow = trained_flow()
    flow.flow = copy.deepcopy(flow.flow).double()
    forward, _, shape = layer_maps(flow, kind)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda t: forward(t.view(shape))[0].flatten(), x.flatten())
    sign, log_abs_det = torch.linalg.slogdet(jacobian)
    assert sign != 0
    assert forward(x)[1].item() == pytest.approx(log_abs_det.item(), abs=1e-8)


@pytest.mark.parametrize("channels,classes", [(1, 0), (3, 2)])
def test_the_whole_flow_inverts_and_its_log_det_matches_the_jacobian(channels, classes):
    flow = trained_flow(channels, classes)
    labels = torch.tensor([1]) if classes else None
    net = copy.deepcopy(flow.flow).double()
    v = torch.randn((1, channels, 8, 8), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    eps, log_det = net(v, labels)
    assert eps.shape == (1, channels * 64)
    assert (net.inverse(eps, labels) - v).abs().max() < 1e-10
    jacobian = torch.autograd.functional.jacobian(lambda t: net(t.view(v.shape), labels)[0].flatten(), v.flatten())
    assert log_det.item() == pytest.approx(torch.linalg.slogdet(jacobian)[1].item(), abs=1e-8)
    # And in the family's own float32: the inverse within 1e-4.
    v32 = v.float()
    with torch.no_grad():
        assert (flow.flow.inverse(flow.flow(v32, labels)[0], labels) - v32).abs().max() < 1e-4


def test_encode_and_decode_are_exact_inverses_on_8_bit_images():
    flow = trained_flow(channels=3)
    x = pixels(4, 3, seed=5)
    z = flow.encode(x)
    assert z.shape == (4, flow.latent_dim) == (4, 192)
    back = flow.decode(z)
    assert (back - x).abs().max() < 1e-4
    assert torch.equal((back * 255).round(), (x * 255).round())  # exact after quantisation


# -- the likelihood ---------------------------------------------------------------------------


def gaussian_in_logit_space_log_prob(x, noise, alpha):
    """log p(x + u) (nats/image) when the logits v of y = (k + u)/256 are N(0, I): the density of
    v, the Jacobian of y → v, and −log 256 per dimension from [0, 1) to [0, 256)."""
    k = (x.double() * 255).round()
    y = (k + noise.double()) / 256
    p = alpha + (1 - 2 * alpha) * y
    v = torch.log(p / (1 - p))
    log_gaussian = -0.5 * v**2 - 0.5 * math.log(2 * math.pi)
    log_jacobian = math.log(1 - 2 * alpha) - torch.log(p * (1 - p))
    return (log_gaussian + log_jacobian - math.log(256)).flatten(1).sum(1)


@pytest.mark.parametrize("seed,draws", [(0, 1), (5, 3)])
def test_log_prob_of_the_identity_initialised_flow_is_a_standard_gaussian_in_logit_space(seed, draws):
    """Fresh: actnorm not yet initialised (identity), couplings and split priors zero
    (identity, N(0, I)); the 1×1 convs are random rotations, which leave N(0, I) unchanged."""
    flow = tiny_flow(8, 3)
    flow.eval_mode()
    x = pixels(4, 3, seed=6)
    noise = torch.rand((draws, 3, 8, 8), generator=torch.Generator().manual_seed(seed))
    expected = sum(gaussian_in_logit_space_log_prob(x, u, flow.config.logit_alpha) for u in noise) / draws
    got = flow.log_prob(x, seed=seed, draws=draws)
    assert torch.allclose(got.double(), expected, rtol=1e-5, atol=0)


def test_an_image_log_prob_does_not_depend_on_its_batch():
    flow = trained_flow(channels=3)
    x = pixels(5, 3, seed=7)
    together = flow.log_prob(x)
    alone = torch.cat([flow.log_prob(x[i:i + 1]) for i in range(5)])
    assert torch.allclose(together, alone, rtol=1e-6, atol=1e-3)
    assert torch.equal(together, flow.log_prob(x))  # deterministic


def test_bits_per_dim_of_uniform_noise_under_the_identity_flow_has_its_closed_form():
    """Per dimension, −E[log p] for uniform 8-bit noise is 8 bits minus E_y[log p_Y(y)] / log 2,
    y ~ U[0, 1), p_Y the model's density of y: a Gaussian in logit space. By Gibbs' inequality
    it exceeds 8 bits, the entropy of the noise."""
    flow = tiny_flow(16, 3)
    flow.eval_mode()
    measured = bits_per_dim(flow.log_prob(pixels(64, 3, 16, seed=8)).double().mean().item(), flow.spec.dims)
    alpha, n = flow.config.logit_alpha, 1_000_000
    y = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # midpoint rule on [0, 1)
    p = alpha + (1 - 2 * alpha) * y
    v = torch.log(p / (1 - p))
    log_p_y = -0.5 * v**2 - 0.5 * math.log(2 * math.pi) + math.log(1 - 2 * alpha) - torch.log(p * (1 - p))
    expected = 8 - log_p_y.mean().item() / math.log(2)
    assert expected > 8.0
    assert measured == pytest.approx(expected, abs=0.01)


def test_the_logged_bpd_is_the_log_prob_in_bits_per_dim():
    """Training (fresh uniform noise) and log_prob (a fixed noise pattern) estimate the same
    quantity; with lr = 0 they differ only by the dequantization draw."""
    flow = tiny_flow(8, 1, lr=0.0)
    x = pixels(256, 1, seed=9)
    logged = flow.train_step(x, None, torch.Generator().manual_seed(1))["bpd"]
    flow.eval_mode()
    assert logged == pytest.approx(bits_per_dim(flow.log_prob(x).mean().item(), 64), abs=0.01)


# -- sampling ---------------------------------------------------------------------------------


def test_temperature_zero_samples_the_image_of_the_latent_mode():
    flow = trained_flow()
    zero = flow.sample_options({"temperature": 0.0})
    mode_image = flow.sample(3, seed=1, options=zero)
    assert torch.equal(mode_image, flow.sample(3, seed=2, options=zero))
    assert torch.equal(mode_image, flow.decode(torch.zeros(3, flow.latent_dim)))
    assert not torch.equal(mode_image, flow.sample(3, seed=1))
    # The identity-initialised flow maps z = 0 to v = 0: y = ½, the middle of the pixel range.
    fresh = tiny_flow()
    assert torch.allclose(fresh.sample(2, seed=0, options=zero), torch.full((2, 1, 8, 8), 0.5), atol=1e-6)
    with pytest.raises(ValueError):
        flow.sample_options({"temperature": -1.0})


# -- actnorm ----------------------------------------------------------------------------------


def test_actnorm_starts_from_the_first_batch_and_its_flag_is_checkpointed(tmp_path):
    flow = tiny_flow(8, 3)
    actnorms = [m for m in flow.flow.modules() if isinstance(m, ActNorm)]
    assert not flow.flow.initialised
    outputs = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out[0].detach())) for m in actnorms]
    flow.train_step(pixels(32, 3, seed=10), None, torch.Generator().manual_seed(0))
    for hook in hooks:
        hook.remove()
    assert flow.flow.initialised
    for out in outputs[:len(actnorms)]:  # the initialising pass: every actnorm standardises its input
        assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(out.shape[1]), atol=1e-4)
        assert torch.allclose(out.std(dim=(0, 2, 3), unbiased=False), torch.ones(out.shape[1]), atol=1e-3)
    save_checkpoint(tmp_path / "c.safetensors", flow.state_dict(), {"family": "flow"})
    state, _ = load_checkpoint(tmp_path / "c.safetensors")
    assert any(key.endswith("initialised") for key in state["networks"]["flow"])
    other = tiny_flow(8, 3, seed=5)
    other.load_state_dict(state)
    assert other.flow.initialised
    # A re-initialised actnorm would change the next step; the restored model continues exactly.
    batch = pixels(8, 3, seed=11)
    assert flow.train_step(batch, None, torch.Generator().manual_seed(2)) == \
        other.train_step(batch, None, torch.Generator().manual_seed(2))


# -- sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size,max_levels,levels", [(28, 3, 2), (32, 3, 3), (30, 3, 1), (8, 3, 3), (64, 2, 2)])
def test_levels_come_from_the_image_side(size, max_levels, levels):
    assert levels_for_size(size, max_levels) == levels
    flow = create_family("flow", ImageSpec(1, size), {**Flow.TINY, "max_levels": max_levels})
    assert len(flow.flow.levels) == levels and flow.latent_dim == size * size
    assert flow.flow.top_shape[1] == size // 2**levels


def test_odd_sizes_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="even"):
        create_family("flow", ImageSpec(1, 27), Flow.TINY)


# -- inpainting -------------------------------------------------------------------------------


def pixel_space_mode(mean):
    """argmax over v of log N(v; mean, 1) + log|dv/dy| (the density of the pixel y): its
    derivative −(v − mean) + tanh(v/2) vanishes once, found by bisection."""
    low, high = mean - 2.0, mean + 2.0
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if -(mid - mean) + math.tanh(mid / 2) > 0 else (low, mid)
    return (low + high) / 2


def test_inpainting_an_independent_gaussian_flow_finds_the_mode_in_logit_space():
    """With the first actnorm's bias at −m the fresh flow is N(v; m, I) in logit space, so the
    logits are independent and each unknown one should go to m, the mode of its own density
    of v; not to the mode of the pixel's density, which the logit Jacobian pulls elsewhere."""
    flow = tiny_flow(8, 1, inpaint_steps=300)
    mean = 1.5
    with torch.no_grad():
        flow.flow.levels[0][0].layers[0].bias.fill_(-mean)
    flow.eval_mode()
    x = pixels(2, 1, seed=12)
    keep = torch.ones(2, 1, 8, 8, dtype=torch.bool)
    keep[:, :, 2:6, 1:7] = False
    out = flow.inpaint(x, keep, seed=0)
    expected = to_pixels((torch.sigmoid(torch.tensor(mean)) - 0.05) / 0.9).item()
    pixel_mode = to_pixels((torch.sigmoid(torch.tensor(pixel_space_mode(mean))) - 0.05) / 0.9).item()
    assert abs(expected - pixel_mode) > 0.05  # the two objectives disagree here
    assert torch.allclose(out[~keep], torch.full_like(out[~keep], expected), atol=2e-3)
    assert torch.equal(out[keep], x[keep])


def test_inpainting_raises_the_likelihood_keeps_known_pixels_and_is_seeded():
    flow = trained_flow(channels=3)
    x = pixels(2, 3, seed=13)
    keep = torch.ones(2, 1, 8, 8, dtype=torch.bool)
    keep[:, :, 2:6, 2:6] = False
    out = flow.inpaint(x, keep, seed=1)
    assert torch.equal(out * keep, x * keep)
    assert torch.equal(out, flow.inpaint(x, keep, seed=1))
    assert not torch.equal(out, flow.inpaint(x, keep, seed=2))
    # It ascends from the known pixels around the model's sample for the same seed.
    start = torch.where(keep, x, flow.sample(2, seed=1))
    assert (flow.log_prob((out * 255).round() / 255) > flow.log_prob(start) + 1.0).all()


# -- learning ---------------------------------------------------------------------------------


def test_a_tiny_flow_learns_and_a_conditional_one_learns_its_classes():
    """Class 0 is dark noise, class 1 bright noise: the class prior must tell them apart."""
    flow = tiny_flow(8, 1, classes=2, lr=1e-2, warmup_steps=1)
    dark, bright = pixels(64, seed=15, low=20, high=60), pixels(64, seed=16, low=190, high=230)
    labels = torch.tensor([0] * 32 + [1] * 32)
    held_out = torch.cat([pixels(8, seed=17, low=20, high=60), pixels(8, seed=18, low=190, high=230)])
    held_out_labels = torch.tensor([0] * 8 + [1] * 8)
    flow.eval_mode()
    before = bits_per_dim(flow.log_prob(held_out, held_out_labels).mean().item(), 64)
    flow.train_mode()
    generator = torch.Generator().manual_seed(0)
    for step in range(60):
        i = step % 2 * 32
        flow.train_step(torch.cat([dark[i:i + 32], bright[i:i + 32]]), labels, generator)
    flow.eval_mode()
    after = bits_per_dim(flow.log_prob(held_out, held_out_labels).mean().item(), 64)
    # The data has log2(40) ≈ 5.3 bits per pixel plus one bit per image for its class.
    assert before > 7.5 and after < 6.0
    zero = flow.sample_options({"temperature": 0.0})
    mode_images = flow.sample(2, seed=0, labels=torch.tensor([0, 1]), options=zero)
    assert mode_images[0].mean() < 0.3 < 0.7 < mode_images[1].mean()
    gain = flow.log_prob(held_out, held_out_labels) - flow.log_prob(held_out, 1 - held_out_labels)
    assert (gain > 0).all() and gain.mean() > 10  # nats: each image is likelier under its own class
