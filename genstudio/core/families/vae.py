"""Variational autoencoder (Kingma & Welling 2014) with a discretized logistic decoder.

The decoder models 8-bit pixels with a discretized logistic whose mean is predicted per pixel
and whose scale is one learned value per channel (a "σ-VAE", Rybkin et al. 2021): a learned
shared variance balances reconstruction against the KL term automatically, which gives sharper
samples than a fixed-variance Gaussian. A small likelihood head then sharpens each pixel's
distribution where the decoder is sure (a flat background) without touching the means, which
keep learning under the shared scale. The likelihood is a proper distribution over pixel
values, so the ELBO is a true bound in bits/dim. `log_prob` returns the importance-weighted
bound (IWAE, Burda et al. 2016), which is at least as tight as the ELBO."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Capability, Family, ImageSpec, LogProbKind, SampleProgress, at_least
from .layers import (
    DownBlock,
    UpBlock,
    discretized_logistic_log_prob,
    level_widths,
    pyramid_sizes,
    to_symmetric,
    to_unit,
)

PRIOR_LR_FACTOR = 10.0  # the mixture prior's learning rate, as a multiple of config.lr
HEAD_LR_FACTOR = 10.0   # the likelihood head's, likewise


@dataclass(frozen=True)
class VAEConfig:
    latent_dim: int = 32        # size of z; 2 gives a latent that is its own 2-D map
    base_channels: int = 32     # conv width at the first level; doubles per level (cap 256)
    lr: float = 1e-3            # Adam learning rate
    beta: float = 1.0           # KL weight; 1 trains the true ELBO, >1 a β-VAE
    iw_samples: int = 32        # importance samples in log_prob (1 = plain ELBO)
    min_log_scale: float = -8.0 # floor of the decoder's log-scale, keeps the likelihood finite
    per_pixel_scale: bool = False  # the decoder predicts each pixel's scale with its mean (the means then blur)
    likelihood_head: bool = True  # a head refines each pixel's distribution for the likelihood (its scale, its location by ≤ 4 levels); the means shown still learn under the shared scale
    prior_components: int = 16  # 0: p(z) = N(0, I); K > 0: a learned mixture of K diagonal Gaussians
    grad_clip: float = 5.0      # max gradient norm of the per-dimension loss (0: off); stops rare spikes derailing training
    inpaint_steps: int = 200    # Adam steps on z when inpainting (a MAP fit to the known pixels)

    # Runs saved before the mixture prior and the likelihood head existed have neither.
    EARLIER_VALUES: ClassVar[dict[str, Any]] = {"prior_components": 0, "likelihood_head": False}

    def __post_init__(self) -> None:
        at_least(self, 1, "latent_dim", "base_channels", "iw_samples")
        at_least(self, 0, "prior_components")
        at_least(self, 0, "lr", "beta", "grad_clip")
        if self.per_pixel_scale and self.likelihood_head:
            raise ValueError("per_pixel_scale and likelihood_head are two ways to a per-pixel scale; choose one")


@dataclass(frozen=True)
class VAESampleOptions:
    temperature: float = 1.0     # std of z: 1 the model's own prior, lower = the prior's dense middle, 0 = its mode

    def __post_init__(self) -> None:
        at_least(self, 0, "temperature")


class MixturePrior(nn.Module):
    """p(z) = Σ_k π_k N(z; m_k, diag s_k²) with the weights, means and scales learned with the
    rest of the model (Tomczak, Deep Generative Modeling, §4.4): the prior moves to where the
    encoder puts the data, so samples drawn from it decode to images like the data instead of
    from the gaps a fixed N(0, I) leaves between the encodings."""

    def __init__(self, components: int, dim: int):
        super().__init__()
        self.means = nn.Parameter(torch.randn(components, dim))  # start spread like N(0, I)
        self.log_vars = nn.Parameter(torch.zeros(components, dim))
        self.logits = nn.Parameter(torch.zeros(components))

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) in nats per row of z (B, D)."""
        per_component = _normal_log_density(z[:, None, :], self.means, self.log_vars).sum(-1)  # (B, K)
        return torch.logsumexp(per_component + F.log_softmax(self.logits, 0), dim=1)

    def sample(self, n: int, generator: torch.Generator, temperature: float = 1.0) -> Tensor:
        """n draws on the CPU from `generator`: a component by its weight, then its Gaussian with
        the scale times `temperature`."""
        weights = F.softmax(self.logits.detach().cpu().float(), 0)
        k = torch.multinomial(weights, n, replacement=True, generator=generator)
        eps = torch.randn((n, self.means.shape[1]), generator=generator)
        means, log_vars = self.means.detach().cpu().float(), self.log_vars.detach().cpu().float()
        return means[k] + temperature * torch.exp(0.5 * log_vars[k]) * eps


class Encoder(nn.Module):
    """x → (μ, log σ²) of q(z | x, y)."""

    def __init__(self, spec: ImageSpec, cfg: VAEConfig):
        super().__init__()
        sizes = pyramid_sizes(spec.size)
        widths = level_widths(len(sizes) - 1, cfg.base_channels)
        self.stem = nn.Conv2d(spec.channels, widths[0], 3, padding=1)
        self.blocks = nn.Sequential(
            *[DownBlock(c_in, c_out) for c_in, c_out in zip([widths[0], *widths[:-1]], widths, strict=False)]
        )
        flat = widths[-1] * sizes[-1] ** 2
        self.num_classes = spec.num_classes
        self.head = nn.Linear(flat + spec.num_classes, 2 * cfg.latent_dim)

    def forward(self, x: Tensor, y_onehot: Tensor | None) -> tuple[Tensor, Tensor]:
        h = self.blocks(F.silu(self.stem(x))).flatten(1)  # (B, C·s·s)
        if y_onehot is not None:
            h = torch.cat([h, y_onehot], dim=1)
        mu, logvar = self.head(h).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)


class Decoder(nn.Module):
    """z → per-pixel mean of p(x | z, y) in [−1, 1] units (unconstrained)."""

    def __init__(self, spec: ImageSpec, cfg: VAEConfig):
        super().__init__()
        sizes = pyramid_sizes(spec.size)
        widths = level_widths(len(sizes) - 1, cfg.base_channels)
        self.start_shape = (widths[-1], sizes[-1], sizes[-1])
        self.fc = nn.Linear(cfg.latent_dim + spec.num_classes, widths[-1] * sizes[-1] ** 2)
        ups = []
        for level in range(len(widths) - 1, -1, -1):
            c_out = widths[level - 1] if level > 0 else widths[0]
            ups.append(UpBlock(widths[level], c_out, sizes[level]))
        self.blocks = nn.Sequential(*ups)
        # Per pixel: a mean, and with per_pixel_scale a log-scale too (2C output channels).
        self.out = nn.Conv2d(widths[0], spec.channels * (2 if cfg.per_pixel_scale else 1), 3, padding=1)

    def features(self, z: Tensor, y_onehot: Tensor | None) -> Tensor:
        """The last feature map, before the output convolution: (B, widths[0], H, W)."""
        if y_onehot is not None:
            z = torch.cat([z, y_onehot], dim=1)
        h = F.silu(self.fc(z)).view(-1, *self.start_shape)  # (B, C, s, s)
        return self.blocks(h)

    def forward(self, z: Tensor, y_onehot: Tensor | None) -> Tensor:
        return self.out(self.features(z, y_onehot))  # (B, C or 2C, H, W)


# How far the likelihood head may move a pixel's location from the decoder's mean: 4 grey
# levels, enough to put a nearly known pixel on its exact value, too little to redraw the image.
MAX_LOCATION_SHIFT = 4 * 2 / 255  # in [−1, 1] pixel units


class DecoderOutput(NamedTuple):
    """What the decoder says about each pixel, (B, C, H, W) in [−1, 1] units."""
    mean: Tensor         # the image shown (decode, samples)
    fit_scale: Tensor    # the log-scale the mean learns under: the shared one per channel
    location: Tensor     # p(x | z) is a discretized logistic with this location …
    log_scale: Tensor    # … and this log-scale


class LikelihoodHead(nn.Module):
    """Decoder features → a shift of each pixel's location (at most MAX_LOCATION_SHIFT) and an
    offset of its log-scale from the shared one. Both start at zero (the σ-VAE's likelihood).
    In training it learns from the likelihood alone, on detached features and a detached mean
    (Nichol & Dhariwal 2021 stop the gradient to the mean in the same way when they learn
    diffusion variances), so the means keep learning under one shared scale, which keeps them
    sharp, while the likelihood gets sharp where the decoder is sure: a shared scale wide enough
    for the edges costs bits on every pixel of a flat background."""

    def __init__(self, width: int, channels: int):
        super().__init__()
        # Pixelwise: the features already see a neighbourhood, and a 3×3 head slowed a step markedly.
        self.net = nn.Sequential(nn.Conv2d(width, width, 1), nn.SiLU(), nn.Conv2d(width, 2 * channels, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(location shift, log-scale offset)."""
        shift, log_scale = self.net(features).chunk(2, dim=1)
        return MAX_LOCATION_SHIFT * torch.tanh(shift), log_scale


class VAE(Family):
    name = "vae"
    title = "Variational autoencoder"
    summary = "Encoder + decoder trained on the ELBO; smooth latent space, fast sampling."
    capabilities = frozenset(
        {Capability.SAMPLE, Capability.DECODE, Capability.ENCODE, Capability.LOG_PROB,
         Capability.INPAINT, Capability.CONDITIONAL}
    )
    inpaint_method = ("Latent optimisation: from the encoder's guess for the image with its hole filled by a "
                      "seeded sample, find the z that best explains the known pixels under the decoder's own "
                      "likelihood and the prior (a MAP fit), then fill the hole from the decoder.")
    log_prob_kind = LogProbKind.BOUND
    Config = VAEConfig
    SampleOptions = VAESampleOptions
    TINY: ClassVar[dict[str, Any]] = {"base_channels": 4, "latent_dim": 4, "iw_samples": 4, "inpaint_steps": 10}
    width_knobs: ClassVar[tuple[str, ...]] = ("base_channels",)

    def __init__(self, spec: ImageSpec, config: VAEConfig, device: torch.device, seed: int = 0):
        super().__init__(spec, config, device, seed)
        self.encoder = Encoder(spec, config).to(self.device)
        self.decoder = Decoder(spec, config).to(self.device)
        # One log-scale per channel, shared by all pixels (σ-VAE); starts at σ ≈ 0.1.
        self.likelihood = nn.ParameterDict(
            {"log_scale": nn.Parameter(torch.full((spec.channels,), math.log(0.1), device=self.device))}
        )
        self.likelihood_head = (LikelihoodHead(self.decoder.out.in_channels, spec.channels).to(self.device)
                                if config.likelihood_head else None)
        self.prior = (MixturePrior(config.prior_components, config.latent_dim).to(self.device)
                      if config.prior_components else None)
        groups = [{"params": [p for name, net in self.networks().items() if name not in ("prior", "likelihood_head")
                              for p in net.parameters()]}]
        if self.prior is not None:
            # The mixture's means must travel several units to where the encodings are; at the
            # networks' rate they lag far behind them (docs/families/vae.md has the figures).
            groups.append({"params": list(self.prior.parameters()), "lr": config.lr * PRIOR_LR_FACTOR})
        if self.likelihood_head is not None:
            # It must follow means that keep moving; at the networks' rate it lags behind them.
            groups.append({"params": list(self.likelihood_head.parameters()), "lr": config.lr * HEAD_LR_FACTOR})
        self.optimizer = torch.optim.Adam(groups, lr=config.lr)

    def networks(self) -> dict[str, nn.Module]:
        nets: dict[str, nn.Module] = {"encoder": self.encoder, "decoder": self.decoder, "likelihood": self.likelihood}
        if self.likelihood_head is not None:
            nets["likelihood_head"] = self.likelihood_head
        return nets if self.prior is None else {**nets, "prior": self.prior}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.optimizer}

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    # -- the mathematics --------------------------------------------------------------------
    def _onehot(self, labels: Tensor | None) -> Tensor | None:
        if labels is None or self.spec.num_classes == 0:
            return None
        return F.one_hot(labels.to(self.device), self.spec.num_classes).float()

    def decoder_distribution(self, z: Tensor, y_onehot: Tensor | None, *,
                             head_alone: bool = False) -> DecoderOutput:
        """p(x | z, y) and the mean shown. Without the likelihood head the location is the mean
        and the log-scale the one it learns under. head_alone (training): the head sees
        detached features, mean and shared scale, so the likelihood's gradient reaches it only."""
        c = self.spec.channels
        floor = self.config.min_log_scale
        shared = self.likelihood["log_scale"].view(1, -1, 1, 1)
        if self.likelihood_head is not None:
            features = self.decoder.features(z, y_onehot)
            mean = self.decoder.out(features)
            fit_scale = shared.expand_as(mean).clamp_min(floor)
            if head_alone:
                features, base, base_scale = features.detach(), mean.detach(), shared.detach()
            else:
                base, base_scale = mean, shared
            shift, offset = self.likelihood_head(features)
            return DecoderOutput(mean, fit_scale, base + shift, (base_scale + offset).clamp_min(floor))
        out = self.decoder(z, y_onehot)
        if self.config.per_pixel_scale:
            # The shared per-channel value stays as an offset, so training starts where the
            # per-channel model starts (σ ≈ 0.1) and the network learns the deviations.
            mean, log_scale = out[:, :c], out[:, c:] + shared
        else:
            mean, log_scale = out, shared.expand_as(out)
        log_scale = log_scale.clamp_min(floor)
        return DecoderOutput(mean, log_scale, mean, log_scale)

    def fit_and_model_log_prob(self, x01: Tensor, z: Tensor, y_onehot: Tensor | None) -> tuple[Tensor, Tensor]:
        """(what the means and the shared scale learn from, log p(x | z)), nats per image, for
        training. The two are one tensor without the likelihood head; with it the first scores
        the means under the shared scale and the second trains the head alone, so the gradient
        of their sum is each part's own."""
        x = to_symmetric(x01)
        out = self.decoder_distribution(z, y_onehot, head_alone=True)
        model = discretized_logistic_log_prob(x, out.location, out.log_scale).flatten(1).sum(1)
        if self.likelihood_head is None:
            return model, model
        return discretized_logistic_log_prob(x, out.mean, out.fit_scale).flatten(1).sum(1), model

    def reconstruction_log_prob(self, x01: Tensor, z: Tensor, y_onehot: Tensor | None) -> Tensor:
        """log p(x | z, y) in nats per image."""
        out = self.decoder_distribution(z, y_onehot)
        return discretized_logistic_log_prob(to_symmetric(x01), out.location, out.log_scale).flatten(1).sum(1)

    @staticmethod
    def kl_to_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
        """KL(N(μ, σ²) ‖ N(0, I)) in nats, summed over latent dimensions: closed form."""
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log p(z) in nats per row."""
        if self.prior is None:
            return _std_normal_log_density(z).sum(1)
        return self.prior.log_prob(z)

    def elbo_terms(self, x01: Tensor, labels: Tensor | None, eps: Tensor) -> dict[str, Tensor]:
        """Per-image reconstruction log-likelihood, KL and ELBO (nats) for given noise ε. The KL
        is in closed form under N(0, I); under a mixture prior it is log q(z|x) − log p(z) at the
        drawn z, an unbiased one-sample estimate."""
        y = self._onehot(labels)
        mu, logvar = self.encoder(x01, y)
        z = mu + torch.exp(0.5 * logvar) * eps  # reparameterisation
        fit, recon = self.fit_and_model_log_prob(x01, z, y)
        if self.prior is None:
            kl = self.kl_to_standard_normal(mu, logvar)
        else:
            log_q = (_std_normal_log_density(eps) - 0.5 * logvar).sum(1)
            kl = log_q - self.prior.log_prob(z)
        return {"recon": recon, "kl": kl, "elbo": recon - kl, "fit": fit}

    def train_step(self, x: Tensor, labels: Tensor | None, generator: torch.Generator) -> dict[str, float]:
        eps = self.batch_shard.draw(x.shape[0], lambda n: torch.randn(
            (n, self.latent_dim), generator=generator, device=self.device))
        terms = self.elbo_terms(x, labels, eps)
        objective = terms["fit"] - self.config.beta * terms["kl"]
        if self.likelihood_head is not None:
            objective = objective + terms["recon"]  # trains the head alone (its inputs are detached)
        loss = -objective.mean()
        self.optimizer.zero_grad(set_to_none=True)
        # Per dimension, so one clipping threshold suits every image size. Without clipping a
        # 32 px shapes run trained smoothly to 4.0 bits/dim and then jumped to 25 in ten steps.
        self.backward(loss / self.spec.dims, self.optimizer)
        grad_norm = self._clip_gradients()
        self.optimizer_step(self.optimizer)
        elbo = terms["elbo"].detach().mean().item()
        return {
            "loss": loss.item(),
            "grad_norm": grad_norm,
            "bpd": -elbo / (self.spec.dims * math.log(2.0)),
            "recon": -terms["recon"].detach().mean().item(),
            "kl": terms["kl"].detach().mean().item(),
        }

    def _clip_gradients(self) -> float:
        """Clip the global gradient norm to config.grad_clip; returns the norm before clipping."""
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        limit = self.config.grad_clip if self.config.grad_clip > 0 else float("inf")
        return float(nn.utils.clip_grad_norm_(params, limit))

    # -- capabilities -----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, seed: int, labels: Tensor | None = None, *, options: Any = None,
               progress: SampleProgress | None = None) -> Tensor:
        """Decoder means at z drawn from the prior with its scale times the temperature T (T = 1:
        the model's prior). z is drawn on the CPU from `seed`, so the same seed gives the same
        images on every device."""
        options = options or self.SampleOptions()
        return self.decode(self.draw_prior(n, torch.Generator().manual_seed(seed), options.temperature), labels)

    def draw_prior(self, n: int, generator: torch.Generator, temperature: float = 1.0) -> Tensor:
        """n latents from p(z) on the CPU, its scale times `temperature`."""
        if self.prior is not None:
            return self.prior.sample(n, generator, temperature)
        return torch.randn((n, self.latent_dim), generator=generator) * temperature

    @torch.no_grad()
    def encode(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Posterior mean μ(x)."""
        labels = self._check_labels(labels, x.shape[0])
        mu, _ = self.encoder(x.to(self.device), self._onehot(labels))
        return mu.cpu()

    @torch.no_grad()
    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        labels = self._check_labels(labels, z.shape[0])
        return to_unit(self.decoder_distribution(z.to(self.device), self._onehot(labels)).mean).cpu()

    def inpaint_objective(self, z: Tensor, x01: Tensor, known: Tensor, y_onehot: Tensor | None) -> Tensor:
        """−log p(x_known | z) − log p(z) (up to a constant) per image, in nats: what the fill
        minimises. `known` is 1 where the pixel is known, 0 in the hole."""
        out = self.decoder_distribution(z, y_onehot)
        per_pixel = discretized_logistic_log_prob(to_symmetric(x01), out.location, out.log_scale)
        return -(known * per_pixel).flatten(1).sum(1) - self.prior_log_prob(z)

    def inpaint(self, x: Tensor, keep_mask: Tensor, seed: int, labels: Tensor | None = None, *,
                progress: SampleProgress | None = None) -> Tensor:
        """Fill the pixels where keep_mask is False; known pixels are returned unchanged. The
        seed draws the sample that first fills the hole and the encoder's noise, so different
        seeds start (and usually end) at different completions. progress counts the steps."""
        keep = self._keep_mask(keep_mask, x)
        labels = self._check_labels(labels, x.shape[0])
        y = self._onehot(labels)
        target = x.to(self.device, torch.float32)
        known = keep.to(self.device).float()
        generator = torch.Generator().manual_seed(seed)
        n = x.shape[0]
        with torch.no_grad():
            first_fill = self.decode(self.draw_prior(n, generator), labels)
            guess = torch.where(keep, x.cpu().float(), first_fill).to(self.device)
            mu, logvar = self.encoder(guess, y)
            noise = torch.randn(n, self.latent_dim, generator=generator).to(self.device)
            z = (mu + torch.exp(0.5 * logvar) * noise).detach()
        z.requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=0.05)
        with torch.enable_grad():
            steps = self.config.inpaint_steps
            for step in range(steps):
                loss = self.inpaint_objective(z, target, known, y).sum()
                # Gradients for z alone: the weights' .grad stay untouched.
                (z.grad,) = torch.autograd.grad(loss, [z])
                optimizer.step()
                if progress is not None:
                    progress(step + 1, steps, None)
        filled = self.decode(z.detach(), labels)
        return torch.where(keep, x.cpu(), filled.to(x.dtype))

    @torch.no_grad()
    def log_prob(self, x: Tensor, labels: Tensor | None = None, samples: int | None = None,
                 seed: int = 0) -> Tensor:
        """Importance-weighted lower bound on log p(x) (nats/image); samples=1 is the ELBO."""
        k = samples or self.config.iw_samples
        labels = self._check_labels(labels, x.shape[0])
        x = x.to(self.device)
        y = self._onehot(labels)
        generator = torch.Generator().manual_seed(seed)
        mu, logvar = self.encoder(x, y)
        std = torch.exp(0.5 * logvar)
        log_weights = []
        for _ in range(k):
            eps = torch.randn(mu.shape, generator=generator).to(self.device)
            z = mu + std * eps
            log_q = _std_normal_log_density(eps).sum(1) - 0.5 * logvar.sum(1)
            log_p_z = self.prior_log_prob(z)
            log_weights.append(self.reconstruction_log_prob(x, z, y) + log_p_z - log_q)
        stacked = torch.stack(log_weights, dim=0)  # (K, B)
        return (torch.logsumexp(stacked, dim=0) - math.log(k)).cpu()


    def likelihood_bounds(self, x: Tensor, labels: Tensor | None = None, *,
                          quick: bool = False) -> dict[str, Tensor]:
        """The ELBO and the importance-weighted bound with iw_samples samples (nats/image)."""
        return {"elbo": self.log_prob(x, labels, samples=1),
                "iwae": self.log_prob(x, labels, samples=self.config.iw_samples)}


def _std_normal_log_density(v: Tensor) -> Tensor:
    return -0.5 * (v.pow(2) + math.log(2 * math.pi))


def _normal_log_density(v: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    return -0.5 * ((v - mean).pow(2) * torch.exp(-log_var) + log_var + math.log(2 * math.pi))


FAMILY = VAE
