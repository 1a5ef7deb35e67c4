"""Variational autoencoder (Kingma & Welling 2014) with a discretized logistic decoder.

The decoder models 8-bit pixels with a discretized logistic whose mean is predicted per pixel
and whose scale is one learned value per channel (a "σ-VAE", Rybkin et al. 2021): a learned
shared variance balances reconstruction against the KL term automatically, which gives sharper
samples than a fixed-variance Gaussian, and the likelihood is a proper distribution over pixel
values, so the ELBO is a true bound in bits/dim. `log_prob` returns the importance-weighted
bound (IWAE, Burda et al. 2016), which is at least as tight as the ELBO.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

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


@dataclass(frozen=True)
class VAEConfig:
    latent_dim: int = 32        # size of z; 2 gives a latent that is its own 2-D map
    base_channels: int = 32     # conv width at the first level; doubles per level (cap 256)
    lr: float = 1e-3            # Adam learning rate
    beta: float = 1.0           # KL weight; 1 trains the true ELBO, >1 a β-VAE
    iw_samples: int = 32        # importance samples in log_prob (1 = plain ELBO)
    min_log_scale: float = -6.0 # floor of the decoder's log-scale, keeps the likelihood finite
    per_pixel_scale: bool = False  # decoder predicts each pixel's scale (better bits/dim) vs one per channel
    prior_components: int = 16  # 0: p(z) = N(0, I); K > 0: a learned mixture of K diagonal Gaussians
    grad_clip: float = 5.0      # max gradient norm of the per-dimension loss (0: off); stops rare spikes derailing training
    inpaint_steps: int = 200    # Adam steps on z when inpainting (a MAP fit to the known pixels)

    # Runs saved before the mixture prior existed have a N(0, I) prior.
    EARLIER_VALUES: ClassVar[dict[str, Any]] = {"prior_components": 0}

    def __post_init__(self) -> None:
        at_least(self, 1, "latent_dim", "base_channels", "iw_samples")
        at_least(self, 0, "prior_components")
        at_least(self, 0, "lr", "beta", "grad_clip")


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

    def forward(self, z: Tensor, y_onehot: Tensor | None) -> Tensor:
        if y_onehot is not None:
            z = torch.cat([z, y_onehot], dim=1)
        h = F.silu(self.fc(z)).view(-1, *self.start_shape)  # (B, C, s, s)
        return self.out(self.blocks(h))                      # (B, C or 2C, H, W)


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

    def __init__(self, spec: ImageSpec, config: VAEConfig, device: torch.device, seed: int = 0):
        super().__init__(spec, config, device, seed)
        self.encoder = Encoder(spec, config).to(self.device)
        self.decoder = Decoder(spec, config).to(self.device)
        # One log-scale per channel, shared by all pixels (σ-VAE); starts at σ ≈ 0.1.
        self.likelihood = nn.ParameterDict(
            {"log_scale": nn.Parameter(torch.full((spec.channels,), math.log(0.1), device=self.device))}
        )
        self.prior = (MixturePrior(config.prior_components, config.latent_dim).to(self.device)
                      if config.prior_components else None)
        groups = [{"params": [p for name, net in self.networks().items() if name != "prior"
                              for p in net.parameters()]}]
        if self.prior is not None:
            # The mixture's means must travel several units to where the encodings are; at the
            # networks' rate they lag far behind them (docs/families/vae.md has the figures).
            groups.append({"params": list(self.prior.parameters()), "lr": config.lr * PRIOR_LR_FACTOR})
        self.optimizer = torch.optim.Adam(groups, lr=config.lr)

    def networks(self) -> dict[str, nn.Module]:
        nets = {"encoder": self.encoder, "decoder": self.decoder, "likelihood": self.likelihood}
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

    def _split_output(self, out: Tensor) -> tuple[Tensor, Tensor]:
        """Decoder output → (mean, log-scale), each (B, C, H, W) in [−1, 1] pixel units."""
        c = self.spec.channels
        shared = self.likelihood["log_scale"].view(1, -1, 1, 1)
        if self.config.per_pixel_scale:
            # The shared per-channel value stays as an offset, so training starts where the
            # per-channel model starts (σ ≈ 0.1) and the network learns the deviations.
            mean, log_scale = out[:, :c], out[:, c:] + shared
        else:
            mean, log_scale = out, shared.expand_as(out)
        return mean, log_scale.clamp_min(self.config.min_log_scale)

    def reconstruction_log_prob(self, x01: Tensor, decoder_out: Tensor) -> Tensor:
        """log p(x | z) in nats per image, from the decoder's output."""
        mean, log_scale = self._split_output(decoder_out)
        return discretized_logistic_log_prob(to_symmetric(x01), mean, log_scale).flatten(1).sum(1)

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
        recon = self.reconstruction_log_prob(x01, self.decoder(z, y))
        if self.prior is None:
            kl = self.kl_to_standard_normal(mu, logvar)
        else:
            log_q = (_std_normal_log_density(eps) - 0.5 * logvar).sum(1)
            kl = log_q - self.prior.log_prob(z)
        return {"recon": recon, "kl": kl, "elbo": recon - kl}

    def train_step(self, x: Tensor, labels: Tensor | None, generator: torch.Generator) -> dict[str, float]:
        eps = self.batch_shard.draw(x.shape[0], lambda n: torch.randn(
            (n, self.latent_dim), generator=generator, device=self.device))
        terms = self.elbo_terms(x, labels, eps)
        loss = -(terms["recon"] - self.config.beta * terms["kl"]).mean()
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
        mean, _ = self._split_output(self.decoder(z.to(self.device), self._onehot(labels)))
        return to_unit(mean).cpu()

    def inpaint_objective(self, z: Tensor, x01: Tensor, known: Tensor, y_onehot: Tensor | None) -> Tensor:
        """−log p(x_known | z) − log p(z) (up to a constant) per image, in nats: what the fill
        minimises. `known` is 1 where the pixel is known, 0 in the hole."""
        mean, log_scale = self._split_output(self.decoder(z, y_onehot))
        per_pixel = discretized_logistic_log_prob(to_symmetric(x01), mean, log_scale)
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
            log_weights.append(self.reconstruction_log_prob(x, self.decoder(z, y)) + log_p_z - log_q)
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
