"""The PixelCNN's mathematics: exact causality with no blind spot (every earlier subpixel seen,
none at or after), the exact likelihood against log-softmax terms gathered by hand, a sampler
that follows the model (point masses, temperature, the argmax chain, reproducibility, progress
per row), and inpainting whose Metropolis–Hastings sweeps use the pixels below the hole and
keep the posterior invariant."""

import math

import pytest
import torch
import torch.nn.functional as F

from genstudio.core.families import (
    ImageSpec,
    SamplingCancelled,
    bits_per_dim,
    create_family,
    pixelcnn,
)

SIZE = 8
# Kernel 5 and 5 layers reach ≥ 10 px up and sideways: every earlier pixel of an 8×8 image.
COVERING = {"width": 12, "layers": 5, "kernel": 5, "head_width": 12}
# The PixelCNN++ output in place of the softmax: the same network up to the last layer.
MIXTURE = {"output": "logistic-mixture", "mixture_components": 3}


pytestmark = pytest.mark.usefixtures("one_thread")


def make(channels=1, classes=0, seed=0, **config):
    spec = ImageSpec(channels, SIZE, num_classes=classes)
    family = create_family("pixelcnn", spec, {**COVERING, **config}, device="cpu", seed=seed)
    family.eval_mode()
    return family


def random_images(n, channels, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, SIZE, SIZE), generator=g).float() / 255


def raster_order(channels):
    """(C, H, W) position of each subpixel in the order rows → pixels → R, G, B."""
    return torch.arange(channels * SIZE * SIZE).view(SIZE, SIZE, channels).permute(2, 0, 1)


def set_output_distribution(family, log_probs_per_colour):
    """Make every conditional the same fixed distribution: zero the last layer's weights and
    put the wanted log-probabilities (one 256-vector per colour) in its bias."""
    head = family.network.head_logits
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.cat(log_probs_per_colour))


# -- causality ------------------------------------------------------------------------------


@pytest.mark.parametrize("channels, config", [(1, {}), (3, {}), (3, MIXTURE)])
def test_each_logit_depends_on_every_earlier_subpixel_and_on_nothing_else(channels, config):
    """The full Jacobian d logits(c, i, j) / d input(c′, i′, j′) on an 8×8 image, every position
    (edges and corners included): exactly zero at and after (c, i, j) in the raster order,
    non-zero everywhere before it, so there is no blind spot."""
    family = make(channels, seed=1, **config)
    x = (random_images(1, channels) * 2 - 1).requires_grad_(True)
    logits = family.network(x)                                    # (1, C, 256, H, W)
    projection = torch.randn(256, generator=torch.Generator().manual_seed(0))
    order = raster_order(channels)
    for c in range(channels):
        for i in range(SIZE):
            for j in range(SIZE):
                (grad,) = torch.autograd.grad(logits[0, c, :, i, j] @ projection, x, retain_graph=True)
                earlier = order < order[c, i, j]
                assert (grad[0][~earlier] == 0).all(), f"({c}, {i}, {j}) sees itself or a later subpixel"
                assert (grad[0][earlier] != 0).all(), f"({c}, {i}, {j}) misses an earlier subpixel"


def test_class_embedding_enters_without_breaking_causality():
    family = make(3, classes=2, seed=2)
    x = random_images(1, 3)
    a, b = (family.network(x * 2 - 1, torch.tensor([k])) for k in (0, 1))
    assert not torch.allclose(a, b)
    # The first subpixel has no predecessors: its logits are a function of the class alone.
    other = random_images(1, 3, seed=5)
    assert torch.equal(a[:, 0, :, 0, 0], family.network(other * 2 - 1, torch.tensor([0]))[:, 0, :, 0, 0])


# -- the likelihood -------------------------------------------------------------------------


@pytest.mark.parametrize("channels, config", [(1, {}), (3, {}), (3, MIXTURE)])
def test_log_prob_is_the_sum_of_log_softmax_at_the_data(channels, config):
    """For the mixture, the full pass's 256 log-probabilities against the training path,
    which scores the taken value alone."""
    family = make(channels, classes=3, seed=3, **config)
    x, labels = random_images(4, channels), torch.tensor([0, 1, 2, 1])
    logits = family.network(x * 2 - 1, labels).double()           # (B, C, 256, H, W)
    values = (x * 255).round().long()
    expected = logits.log_softmax(dim=2).gather(2, values.unsqueeze(2)).sum(dim=(1, 2, 3, 4))
    assert torch.allclose(family.log_prob(x, labels).double(), expected, rtol=1e-5)


def test_log_probs_in_head_chunks_equal_one_pass(monkeypatch):
    """The head and its softmax run a few images at a time (blocks the C heap can reuse); the
    chunks must not show in the figures, nor in the gradients."""
    family = make(3, seed=5)
    x = random_images(7, 3, seed=1)
    levels = (x * 255).round().long()

    def log_probs_and_grads():
        family.network.zero_grad()
        terms = family.network(x * 2 - 1, None, levels)
        terms.sum().backward()
        return terms.detach(), [p.grad.clone() for p in family.network.parameters()]

    whole, whole_grads = log_probs_and_grads()
    per_image = 3 * pixelcnn.LEVELS * SIZE * SIZE * 4
    monkeypatch.setattr(pixelcnn, "HEAD_CHUNK_BYTES", 2 * per_image)  # chunks of 2, 2, 2, 1
    assert pixelcnn.head_chunk(3, SIZE) == 2
    chunked, chunked_grads = log_probs_and_grads()
    assert torch.allclose(chunked, whole, rtol=1e-6, atol=1e-6)
    for a, b in zip(chunked_grads, whole_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_head_chunk_stays_under_the_heaps_reuse_limit():
    from genstudio.core.families.pixelcnn import HEAD_CHUNK_BYTES, LEVELS, head_chunk
    from genstudio.core.runtime.memory import MMAP_THRESHOLD

    assert HEAD_CHUNK_BYTES < MMAP_THRESHOLD
    for colours, size in [(3, 32), (1, 28), (1, 64), (1, 8)]:
        chunk = head_chunk(colours, size)
        assert chunk * colours * LEVELS * size * size * 4 <= HEAD_CHUNK_BYTES
        assert (chunk + 1) * colours * LEVELS * size * size * 4 > HEAD_CHUNK_BYTES  # no smaller than needed
    assert head_chunk(3, 32) == 2
    assert head_chunk(3, 64) == 1 and head_chunk(3, 256) == 1  # one image even when it alone is bigger


# -- the discretized logistic mixture (output = logistic-mixture) ---------------------------


def mixture_parameters(shape, components, seed, log_scale_range=(-9.0, 2.0)):
    """Random mixture parameters (..., 3K), scales from far narrower than a bin to wide."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, components, generator=g) * 2
    means = torch.rand(*shape, components, generator=g) * 2.4 - 1.2
    low, high = log_scale_range
    log_scales = torch.rand(*shape, components, generator=g) * (high - low) + low
    return torch.cat([logits, means, log_scales], dim=-1).double()


def test_a_mixtures_256_probabilities_sum_to_one_and_score_each_value_as_the_training_path_does():
    parameters = mixture_parameters((500,), 4, seed=0)
    everything = pixelcnn.mixture_value_log_probs(parameters, 4)                # (500, 256)
    # A bin with under 1e-5 of a logistic's mass is scored by the density at its centre (no
    # float32 cancellation), so the total may miss 1 by that approximation's few 1e-6.
    torch.testing.assert_close(everything.logsumexp(dim=-1), torch.zeros(500, dtype=torch.float64),
                               atol=2e-5, rtol=0)
    values = torch.randint(0, 256, (500,), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(pixelcnn.mixture_log_prob_at(parameters, 4, values),
                               everything.gather(1, values[:, None]).squeeze(1))


def test_one_logistic_by_hand():
    """K = 1: P(k) = σ((x_k + 1/255 − μ)/s) − σ((x_k − 1/255 − μ)/s), x_k = 2k/255 − 1; the
    end bins take the tails. (The values x_k are float32, as the network's input is.)"""
    mean, scale = 0.1, 0.2
    parameters = torch.tensor([[0.0, mean, math.log(scale)]], dtype=torch.float64)
    log_probs = pixelcnn.mixture_value_log_probs(parameters, 1)[0]

    def cdf(edge):
        return 1 / (1 + math.exp(-(edge - mean) / scale))

    for k in (1, 100, 140, 254):
        x = 2 * k / 255 - 1
        assert log_probs[k].item() == pytest.approx(math.log(cdf(x + 1 / 255) - cdf(x - 1 / 255)), rel=1e-6)
    assert log_probs[0].item() == pytest.approx(math.log(cdf(-1 + 1 / 255)), rel=1e-6)
    assert log_probs[255].item() == pytest.approx(math.log(1 - cdf(1 - 1 / 255)), rel=1e-6)


def test_a_mixture_at_its_narrowest_puts_the_logistics_bin_mass_on_the_mean_and_argmax_samples_it():
    """Every component at the scale floor e^MIN_LOG_SCALE, centred on a value: the mean's bin
    holds σ(h/s) − σ(−h/s) (h = 1/255, half a bin), an end bin σ(h/s), and the likeliest value,
    which temperature 0 draws, is the mean's."""
    family = make(3, **MIXTURE)
    wanted = [0, 77, 255]
    with torch.no_grad():
        family.network.head_logits.weight.zero_()
        bias = family.network.head_logits.bias.view(3, 3, 3)                    # (C, parts, K)
        bias.zero_()
        bias[:, 1] = torch.tensor([2 * v / 255 - 1 for v in wanted])[:, None]   # every component's mean
        bias[:, 2] = -20.0                                                      # below the floor
        log_probs = family.network(torch.zeros(1, 3, SIZE, SIZE))[0, :, :, 0, 0]  # (C, 256)
    ratio = (1 / 255) / math.exp(pixelcnn.MIN_LOG_SCALE)
    inner = 1 / (1 + math.exp(-ratio)) - 1 / (1 + math.exp(ratio))
    end = 1 / (1 + math.exp(-ratio))
    for c, (value, mass) in enumerate(zip(wanted, (end, inner, end), strict=True)):
        assert log_probs[c, value].exp().item() == pytest.approx(mass, rel=1e-4)
    images = family.sample(2, seed=0, options=family.sample_options({"temperature": 0.0}))
    for c, value in enumerate(wanted):
        assert (images[:, c] == value / 255).all()


def test_a_mixture_pixelcnn_learns_a_two_valued_image():
    family = make(1, seed=4, lr=1e-2, **MIXTURE)
    family.train_mode()
    x = random_images(8, 1)
    x[:, :, :, :4] = 0.0
    before = family.train_step(x, None, torch.Generator())["bpd"]
    for _ in range(30):
        last = family.train_step(x, None, torch.Generator())
    assert last["bpd"] < before - 1.0


@pytest.mark.parametrize("channels", [1, 3])
def test_equal_logits_give_minus_d_log_256(channels):
    """A uniform categorical over 256 unit bins is the uniform density on [0, 256)^D."""
    family = make(channels)
    set_output_distribution(family, [torch.zeros(256)] * channels)
    lp = family.log_prob(random_images(3, channels))
    dims = channels * SIZE * SIZE
    assert torch.allclose(lp.double(), torch.full((3,), -dims * math.log(256.0), dtype=torch.float64), rtol=1e-6)
    assert bits_per_dim(lp, dims) == pytest.approx(torch.full((3,), 8.0), rel=1e-6)


def test_train_step_reports_the_bits_per_dim_of_its_batch_and_lowers_it():
    family = make(1, seed=4, lr=1e-2)
    family.train_mode()
    x = random_images(8, 1)
    x[:, :, :, :4] = 0.0  # half of every image is black: easy to learn
    before = bits_per_dim(family.log_prob(x).mean().item(), family.spec.dims)
    metrics = family.train_step(x, None, torch.Generator())
    assert metrics["bpd"] == pytest.approx(before, rel=1e-5)
    assert metrics["loss"] == pytest.approx(before * math.log(2.0), rel=1e-5)  # nats per subpixel
    for _ in range(20):
        last = family.train_step(x, None, torch.Generator())
    assert last["bpd"] < before - 1.0


# -- sampling ---------------------------------------------------------------------------------


def test_a_model_with_all_mass_on_one_value_samples_that_value():
    family = make(3)
    wanted = [17, 200, 93]
    set_output_distribution(family, [F.one_hot(torch.tensor(v), 256).float() * 50 for v in wanted])
    images = family.sample(2, seed=0)
    for c, value in enumerate(wanted):
        assert (images[:, c] == value / 255).all()


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_temperature_draws_from_the_softmax_of_logits_over_t(temperature):
    """Every subpixel ~ P(10) = 0.75, P(240) = 0.25; at temperature T the frequency of 10 must
    be 0.75^(1/T) / (0.75^(1/T) + 0.25^(1/T)) (2048 draws: standard error ≤ 0.011)."""
    family = make(1)
    log_probs = torch.full((256,), -1e4)
    log_probs[10], log_probs[240] = math.log(0.75), math.log(0.25)
    set_output_distribution(family, [log_probs])
    images = family.sample(32, seed=1, options=family.sample_options({"temperature": temperature}))
    values = (images * 255).round()
    assert ((values == 10) | (values == 240)).all()
    expected = 0.75 ** (1 / temperature) / (0.75 ** (1 / temperature) + 0.25 ** (1 / temperature))
    assert (values == 10).float().mean().item() == pytest.approx(expected, abs=0.045)


def greedy_chain(family, n, channels):
    """The argmax chain by brute force: a full network pass per subpixel, in raster order."""
    levels = torch.zeros(n, channels, SIZE, SIZE)
    for i in range(SIZE):
        for j in range(SIZE):
            for c in range(channels):
                with torch.no_grad():
                    logits = family.network(levels / 255 * 2 - 1)
                levels[:, c, i, j] = logits[:, c, :, i, j].argmax(1).float()
    return levels / 255


@pytest.mark.parametrize("channels", [1, 3])
def test_zero_and_small_temperatures_give_the_argmax_chain(channels):
    """Also checks the sampler's row-cached computation against full network passes."""
    family = make(channels, seed=6)
    # Spread the logits so that the random net's top two values are not nearly tied.
    with torch.no_grad():
        family.network.head_logits.weight.mul_(20)
    expected = greedy_chain(family, 2, channels)
    for seed, temperature in ((0, 0.0), (1, 1e-4)):
        options = family.sample_options({"temperature": temperature})
        assert torch.equal(family.sample(2, seed=seed, options=options), expected)


# Kernel 3 and 2 layers reach 2 px: the sampler's row and column windows start inside the image.
NARROW = {"width": 6, "layers": 2, "kernel": 3, "head_width": 8}


@pytest.mark.parametrize("channels, classes, config", [
    (1, 0, {}), (3, 0, {}), (3, 2, {}), (1, 0, NARROW), (3, 3, NARROW), (3, 2, MIXTURE)])
def test_the_samplers_incremental_logits_equal_a_full_pass(channels, classes, config):
    """The raster evaluator computes each layer once per pixel from buffers of the rows and
    columns before it; its logits at every subpixel must be the full network's. The image is
    complete from the start, so any sight of the current or a later subpixel would show."""
    from genstudio.core.families.pixelcnn import RasterEvaluator

    family = make(channels, classes=classes, seed=7, **config)
    levels = (random_images(3, channels, seed=2) * 255).round().long()
    labels = torch.tensor([0, 1, 1]) % classes if classes else None
    with torch.no_grad():
        full = family.network(levels.float() / 255 * 2 - 1, labels)            # (B, C, 256, H, W)
        evaluator = RasterEvaluator(family.network, levels, labels)
        for i in range(SIZE):
            evaluator.start_row(i)
            for j in range(SIZE):
                for c in range(channels):
                    features = evaluator.features_at(i, j)
                    assert torch.allclose(evaluator.logits(features, c), full[:, c, :, i, j], atol=1e-5, rtol=1e-5), \
                        f"subpixel ({c}, {i}, {j})"
                evaluator.finish_pixel(i, j)


@pytest.mark.parametrize("config", [{}, NARROW, MIXTURE])
def test_the_fill_around_kept_pixels_draws_from_the_full_passs_logits(config, monkeypatch):
    """Inpainting's first fill skips what every image keeps: whole rows, whole pixels, single
    colours; rows kept in full never pass through the horizontal stack. Every draw it does make
    must use the logits a full pass gives at that subpixel of the finished image (causality
    makes those the logits of the moment of the draw)."""
    family = make(3, seed=8, **config)
    g = torch.Generator().manual_seed(3)
    keep = torch.rand(2, 3, SIZE, SIZE, generator=g) < 0.5
    keep[:, :, 1] = True                        # a whole row
    keep[:, :, 4, 2] = True                     # a whole pixel
    keep[:, 2, 5, 5], keep[:, :2, 5, 5] = True, False  # the last colour of a pixel only
    keep[0, 1, 6, 1], keep[1, 1, 6, 1] = True, False  # one image keeps it, the other does not
    levels = torch.where(keep, (random_images(2, 3, seed=4) * 255).round().long(), 0)
    drawn_from = []
    draw = pixelcnn.gumbel_argmax
    monkeypatch.setattr(pixelcnn, "gumbel_argmax", lambda logits, *a: drawn_from.append(logits) or draw(logits, *a))
    with torch.no_grad():
        family._fill_in_raster_order(levels, keep, None, 1.0, torch.Generator().manual_seed(0))
        full = family.network(levels.float() / 255 * 2 - 1)
    open_subpixels = [(c, i, j) for i in range(SIZE) for j in range(SIZE) for c in range(3)
                      if not keep[:, c, i, j].all()]
    assert len(drawn_from) == len(open_subpixels)
    for logits, (c, i, j) in zip(drawn_from, open_subpixels, strict=True):
        assert torch.allclose(logits, full[:, c, :, i, j], atol=1e-5, rtol=1e-5), f"subpixel ({c}, {i}, {j})"


@pytest.mark.parametrize("config", [{}, NARROW, MIXTURE])
def test_a_candidates_rows_from_the_cached_vertical_stack_equal_a_full_pass(config):
    """Metropolis–Hastings passes a candidate that changed one row through the network from
    that row down only, on the vertical stack's cached rows above it; its logits must be a full
    pass's of the candidate, and once taken, the cache must be the candidate's."""
    from genstudio.core.families.pixelcnn import VerticalStackCache

    family = make(3, classes=2, seed=9, **config)
    network = family.network
    x, labels = random_images(3, 3, seed=6) * 2 - 1, torch.tensor([1, 0, 1])
    images = torch.tensor([0, 2])  # the movers; image 1 keeps its rows
    with torch.no_grad():
        cache = VerticalStackCache(network, x, labels)
        for first in (0, 1, 3, SIZE - 1):
            changed = x.clone()
            changed[images, :, first] = random_images(2, 3, seed=first)[:, :, 0] * 2 - 1
            rows = network.rows_that_see(first, SIZE)
            links, inputs, pres = cache.links_from_row(images, changed[images][:, :, rows], first)
            logits = network.head(network.horizontal(changed[images][:, :, rows], links, labels[images]))
            full = network(changed, labels)
            assert torch.allclose(logits, full[images][..., rows, :], atol=1e-5, rtol=1e-5), f"row {first}"
            cache.take(images, first, inputs, pres)
            x = changed
            fresh = VerticalStackCache(network, x, labels)
            for cached, expected in zip(cache.pres + cache.inputs, fresh.pres + fresh.inputs, strict=True):
                assert torch.allclose(cached, expected, atol=1e-5, rtol=1e-5), f"cache after row {first}"


def test_samples_are_reproducible_by_seed_and_differ_between_seeds():
    family = make(3)
    a = family.sample(2, seed=4)
    assert torch.equal(a, family.sample(2, seed=4)) and not torch.equal(a, family.sample(2, seed=5))


def test_progress_shows_the_image_filling_in_row_by_row_and_can_cancel():
    family = make(1)
    seen = []
    final = family.sample(2, seed=0, progress=lambda step, total, images: seen.append((step, total, images)))
    assert [(s, t) for s, t, _ in seen] == [(row + 1, SIZE) for row in range(SIZE)]
    for step, _, images in seen:
        assert torch.equal(images[:, :, :step], final[:, :, :step]) and (images[:, :, step:] == 0).all()

    def cancel(step, total, images):
        raise SamplingCancelled

    with pytest.raises(SamplingCancelled):
        family.sample(2, seed=0, progress=cancel)


# -- inpainting --------------------------------------------------------------------------------


def column_images(n, seed):
    """Each column black or white at random, constant down the column: the top pixel of a
    column is a fair coin a priori, but the pixels below it determine it."""
    g = torch.Generator().manual_seed(seed)
    columns = torch.randint(0, 2, (n, 1, 1, SIZE), generator=g).float()
    return columns.expand(n, 1, SIZE, SIZE).clone()


@pytest.fixture(scope="module")
def column_model():
    family = make(1, seed=0, width=8, layers=2, kernel=3, head_width=16, lr=1e-2)
    family.train_mode()
    for step in range(80):
        family.train_step(column_images(64, seed=step), None, torch.Generator())
    family.eval_mode()
    return family


def test_inpainting_uses_the_pixels_below_the_hole(column_model):
    """Hole: the top row. The ancestral fill sees none of the known pixels (all below it), so
    it gets each column right with probability ½. A sweep proposes from the same fair coin
    and the rows below decide: a right proposal replaces a wrong value, a wrong one is
    rejected. So after s sweeps a column is wrong with probability ½^(s+1): 25 % after one
    sweep, 3 % after four (512 columns: standard errors 0.02 and 0.008)."""
    held_out = column_images(64, seed=10_000)
    # The model learned the data: a fair coin per column, then copies (8 bits per image).
    assert bits_per_dim(column_model.log_prob(held_out).mean().item(), SIZE * SIZE) < 0.2
    keep = torch.ones(64, 1, SIZE, SIZE, dtype=torch.bool)
    keep[:, :, 0] = False

    def accuracy(sweeps):
        filled = column_model.inpaint(held_out, keep, seed=1, sweeps=sweeps)
        assert torch.equal(filled[keep], held_out[keep])
        return (filled[:, :, 0] == held_out[:, :, 0]).float().mean().item()

    for sweeps in (0, 1, 4):
        assert accuracy(sweeps) == pytest.approx(1 - 0.5 ** (sweeps + 1), abs=0.07 if sweeps < 4 else 0.03)
    assert torch.equal(column_model.inpaint(held_out[:4], keep[:4], seed=2),
                       column_model.inpaint(held_out[:4], keep[:4], seed=2))


def test_metropolis_hastings_keeps_the_posterior_it_starts_from():
    """With independent pixels (each P(10) = 0.75, P(240) = 0.25) the posterior of the hole is
    the prior, which the ancestral fill already draws exactly; the sweeps must leave it so.
    A chain that kept the proposal's own term in its acceptance ratio would drift to the
    stationary law ∝ P² (P(10) = 0.9, and 0.896 after two sweeps). 1024 unknown pixels: standard
    error 0.014."""
    family = make(1)
    log_probs = torch.full((256,), -1e4)
    log_probs[10], log_probs[240] = math.log(0.75), math.log(0.25)
    set_output_distribution(family, [log_probs])
    x = torch.full((16, 1, SIZE, SIZE), 10 / 255)
    keep = torch.zeros(16, 1, SIZE, SIZE, dtype=torch.bool)
    values = (family.inpaint(x, keep, seed=3, sweeps=2) * 255).round()
    assert ((values == 10) | (values == 240)).all()
    assert (values == 10).float().mean().item() == pytest.approx(0.75, abs=0.04)


@pytest.mark.parametrize("config", [{}, NARROW])
def test_the_rows_that_see_a_row_are_those_its_change_reaches(config):
    """Metropolis–Hastings recomputes the terms of rows_that_see(i) after a change in row i;
    they must be exactly the rows whose logits depend on row i (none missed, none to spare
    within the image)."""
    family = make(3, seed=12, **config)
    x = (random_images(1, 3, seed=8) * 2 - 1).requires_grad_(True)
    logits = family.network(x)
    for row in (0, 3, SIZE - 1):
        reached = set()
        for out_row in range(SIZE):
            (grad,) = torch.autograd.grad(logits[..., out_row, :].sum(), x, retain_graph=True)
            if grad[0, :, row].abs().sum() > 0:
                reached.add(out_row)
        rows = family.network.rows_that_see(row, SIZE)
        assert reached == set(range(rows.start, rows.stop)), (row, sorted(reached), rows)


def reference_sweep(family, levels, keep, labels, generator):
    """Metropolis–Hastings as its definition reads: a full network pass of the whole batch for
    every proposal and for every ratio, the same random numbers drawn in the same order.
    Returns how many steps moved some images but not all."""
    net, partial = family.network, 0
    for i in range(SIZE):
        for j in range(SIZE):
            for c in range(levels.shape[1]):
                unknown = ~keep[:, c, i, j]
                if not unknown.any():
                    continue
                current = net(levels.float() / 255 * 2 - 1, labels)
                proposal = pixelcnn.gumbel_argmax(current[:, c, :, i, j], 1.0, generator)
                log_uniform = torch.rand(levels.shape[0], generator=generator).log()
                moved = unknown & (proposal != levels[:, c, i, j])
                if not moved.any():
                    continue
                partial += int(not moved.all())
                candidate = levels.clone()
                candidate[:, c, i, j] = torch.where(moved, proposal, levels[:, c, i, j])
                later = (raster_order(levels.shape[1]) > raster_order(levels.shape[1])[c, i, j]).float()
                terms = [pixelcnn.subpixel_terms(net(v.float() / 255 * 2 - 1, labels), v) for v in (candidate, levels)]
                log_ratio = ((terms[0] - terms[1]) * later).flatten(1).sum(1)
                levels = torch.where((moved & (log_uniform < log_ratio)).view(-1, 1, 1, 1), candidate, levels)
    return levels, partial


@pytest.mark.parametrize("config", [{}, NARROW])
def test_metropolis_hastings_sweeps_are_their_definition(config):
    """The sweep passes only the images whose subpixel would change, and only the rows that
    see it, through the network; a class-conditional batch, where some images keep a subpixel
    that others fill, must still come out as the definition's chain, value for value."""
    family = make(3, classes=3, seed=11, **config)
    with torch.no_grad():
        family.network.head_logits.weight.mul_(8)  # peaked: images often re-propose their value
    g = torch.Generator().manual_seed(5)
    keep = torch.rand(4, 3, SIZE, SIZE, generator=g) < 0.3
    levels = (random_images(4, 3, seed=7) * 255).round().long()
    labels = torch.tensor([0, 1, 2, 1])
    expected, partial = levels.clone(), 0
    with torch.no_grad():
        mine, theirs = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
        for _ in range(2):
            family._metropolis_hastings_sweep(levels, keep, labels, mine)
            expected, moved_some = reference_sweep(family, expected, keep, labels, theirs)
            partial += moved_some
    assert partial > 20  # the subsets were exercised
    assert torch.equal(levels, expected)


def test_config_refuses_what_the_architecture_cannot_take():
    with pytest.raises(ValueError, match="kernel"):
        make(1, kernel=4)
    with pytest.raises(ValueError, match="width"):
        make(3, width=2)
