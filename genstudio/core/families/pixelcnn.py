"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders"): an autoregressive model with an exact likelihood over 8-bit pixels.

p(x) = ∏_i p(x_i | x_<i) over subpixels in raster order (rows top to bottom, pixels left to
right, and R → G → B within a pixel). Each factor is a 256-way softmax (van den Oord et al.
2016a, "Pixel Recurrent Neural Networks" §5.3) or, with output = "logistic-mixture", a
discretized mixture of logistics (Salimans et al. 2017, "PixelCNN++" §2.1): K weights, means and
scales instead of 256 logits, which ties the mass on neighbouring values together. (PixelCNN++ also ties a
pixel's colours through linear dependence of the means; here each colour is its own subpixel with
its own mixture, conditioned through the masks like the softmax.) Either puts probability P(k)
on the unit bin [k, k+1), so log p(x) is also the log-density of the dequantized data on
[0, 256)^D, the unit of the contract, with no change-of-units term.

The network has two stacks (the paper's Figure 2), which removes the blind spot of the
original PixelCNN:
  * the vertical stack sees a (kernel//2 + 1) × kernel window of rows at and above its own,
    and reaches the horizontal stack only shifted one row down, so through it a pixel sees
    every row above it within the receptive field;
  * the horizontal stack sees the pixels to the left in its own row (1 × (kernel//2 + 1)) and,
    through masked centre taps, the earlier colours of its own pixel, with residual
    connections between layers.
Feature channels are split into one group per colour; at the current pixel group g sees
colour groups < g in the first layer (mask A) and ≤ g after it (mask B), so the logits of G
depend on R of the same pixel, those of B on R and G, and nothing on itself or later.
Activations are gated, tanh(W_f ∗ x + V_f y) ⊙ σ(W_g ∗ x + V_g y), where y is a learned
class embedding added into every gate of both stacks for class-conditional models.

Sampling evaluates the network one subpixel at a time and computes nothing twice
(RasterEvaluator, the caching of Ramachandran et al. 2017, "Fast Generation for Convolutional
Autoregressive Models", fitted to this network). The vertical stack is causal in rows, so each
image row passes through it once, when the row below it begins; and the horizontal stack is
causal in columns, so a subpixel needs each layer at its own pixel only, from the few columns to
its left that the layer below already holds. Exact: the same logits as a full pass, which costs
H·W·C times more.

Inpainting conditions on every known pixel, not only those above and to the left: ancestral
sampling with the known subpixels clamped gives a first fill, then Metropolis–Hastings sweeps
resample each unknown subpixel with the model's own conditional p(x_i | x_<i) as the proposal.
Its acceptance ratio p(x′) q(x_i) / p(x) q(x′_i) leaves ∏_{j>i} p(x′_j | x′_<j) / p(x_j | x_<j),
the terms of every later subpixel, the known ones below and to the right included. The chain
leaves p(unknown | known) invariant, so the fill approaches an exact posterior sample as the
number of sweeps grows; a finite number of sweeps is the only approximation. Single-site moves
mix slowly where unknown pixels are tightly tied to each other (a stroke changes one pixel at a
time), so a few sweeps fix isolated disagreements with the pixels below rather than redraw
whole shapes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..runtime.cpu_threads import one_intra_op_thread
from .base import Capability, Family, ImageSpec, LogProbKind, SampleProgress, at_least
from .layers import MIN_LOG_SCALE, discretized_logistic_log_prob, to_symmetric

LEVELS = 256  # values of an 8-bit subpixel


@dataclass(frozen=True)
class PixelCNNConfig:
    width: int = 32              # feature channels of each stack (split in colour groups for RGB)
    layers: int = 6              # gated layers; each widens the receptive field by kernel//2 px
    kernel: int = 5              # odd kernel width of the stacks (the vertical one is kernel//2+1 rows tall)
    head_width: int = 64         # hidden channels of the 1×1 output head
    output: Literal["softmax", "logistic-mixture"] = "softmax"  # each subpixel's distribution over 0…255: a 256-way softmax, or a discretized mixture of logistics (PixelCNN++)
    mixture_components: int = 5  # logistics per subpixel when output is logistic-mixture
    lr: float = 3e-3             # Adam learning rate (3e-3 learnt clearly faster than 1e-3 in short CPU runs)
    grad_clip: float = 1.0       # max gradient norm of the per-dimension loss (0: off)
    inpaint_sweeps: int = 2      # Metropolis–Hastings sweeps after the first fill (0: none), each a pass per unknown subpixel

    def __post_init__(self) -> None:
        at_least(self, 1, "width", "layers", "head_width", "mixture_components")
        if self.kernel < 3 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd and at least 3, not {self.kernel}")
        at_least(self, 0, "lr", "grad_clip")


@dataclass(frozen=True)
class PixelCNNSampleOptions:
    temperature: float = 1.0     # divides the logits: <1 sharper and safer, >1 more varied, 0 always the likeliest value

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be ≥ 0, not {self.temperature}")


# -- masks -------------------------------------------------------------------------------------


def colour_groups(channels: int, colours: int) -> Tensor:
    """The colour group of each of `channels` channels: contiguous blocks, 0 (R) … colours−1.
    For image input (channels = colours) channel c is group c; for logits, C·256 channels,
    the 256 logits of colour c form group c."""
    return torch.arange(channels) * colours // channels


def centre_mask(out_groups: Tensor, in_groups: Tensor, include_own: bool) -> Tensor:
    """(out, in) mask of the taps at the current pixel: a group sees earlier groups, and
    itself too when include_own (mask B) rather than not (mask A)."""
    if include_own:
        return (out_groups[:, None] >= in_groups[None, :]).float()
    return (out_groups[:, None] > in_groups[None, :]).float()


class MaskedConv2d(nn.Conv2d):
    """A 1 × kernel_width convolution whose taps at the current pixel (the kernel's last
    column: the input is padded on the left only) are masked by colour group. Masking the
    weights in the forward pass makes every forbidden dependence exactly zero, gradients
    included."""

    def __init__(self, c_in: int, c_out: int, kernel_width: int, colours: int, include_own: bool,
                 out_groups: Tensor | None = None):
        super().__init__(c_in, c_out, (1, kernel_width))
        out_groups = colour_groups(c_out, colours) if out_groups is None else out_groups
        mask = torch.ones_like(self.weight)
        mask[:, :, 0, -1] = centre_mask(out_groups, colour_groups(c_in, colours), include_own)
        self.register_buffer("mask", mask, persistent=False)  # derived from the config

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias)


def gate_groups(width: int, colours: int) -> Tensor:
    """Colour groups of 2·width gate pre-activations: the tanh half, then the sigmoid half,
    each grouped like the width features they produce."""
    return colour_groups(width, colours).repeat(2)


def gate(pre: Tensor) -> Tensor:
    """tanh(a) ⊙ σ(b) over the two halves of the channels (van den Oord et al. 2016 eq. 2)."""
    a, b = pre.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def shift_down(x: Tensor) -> Tensor:
    """Move every row one down (zeros on top): row i then holds what row i−1 saw."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


# -- the network -------------------------------------------------------------------------------


class GatedLayer(nn.Module):
    """One layer of both stacks. The first (mask A) takes the image and has no residual."""

    def __init__(self, c_in: int, cfg: PixelCNNConfig, colours: int, num_classes: int, first: bool):
        super().__init__()
        width, reach = cfg.width, cfg.kernel // 2
        self.reach, self.residual = reach, not first
        self.vertical = nn.Conv2d(c_in, 2 * width, (reach + 1, cfg.kernel))
        self.horizontal = MaskedConv2d(c_in, 2 * width, reach + 1, colours, include_own=not first,
                                       out_groups=gate_groups(width, colours))
        self.link = nn.Conv2d(2 * width, 2 * width, 1)   # vertical → horizontal, rows above only
        self.out = MaskedConv2d(width, width, 1, colours, include_own=True)
        self.vertical_class = nn.Embedding(num_classes, 2 * width) if num_classes else None
        self.horizontal_class = nn.Embedding(num_classes, 2 * width) if num_classes else None

    @staticmethod
    def _class_bias(embedding: nn.Embedding | None, labels: Tensor | None) -> Tensor | float:
        if embedding is None:
            return 0.0
        if labels is None:
            raise ValueError("a class-conditional PixelCNN needs labels")
        return embedding(labels)[:, :, None, None]

    def vertical_step(self, v: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """v → (next v, the link into the horizontal stack). Output row i sees input rows
        i−reach … i; the link is shifted down, so at row i it has seen rows < i only."""
        r = self.reach
        pre = self.vertical_pre(F.pad(v, (r, r, r, 0)), labels)
        return gate(pre), self.link(shift_down(pre))

    def vertical_pre(self, window: Tensor, labels: Tensor | None) -> Tensor:
        """Gate pre-activations of the vertical stack from rows padded as vertical_step pads
        them (`reach` rows above, `reach` columns each side): one row fewer per `reach`."""
        return self.vertical(window) + self._class_bias(self.vertical_class, labels)

    def horizontal_step(self, h: Tensor, link: Tensor, labels: Tensor | None) -> Tensor:
        """Output column j sees columns j−reach … j of its row, the current pixel masked."""
        pre = (self.horizontal(F.pad(h, (self.reach, 0, 0, 0))) + link
               + self._class_bias(self.horizontal_class, labels))
        out = self.out(gate(pre))
        return h + out if self.residual else out


class GatedPixelCNN(nn.Module):
    """Logits (B, C, 256, H, W) of p(x_i | x_<i) for every subpixel of an image in [−1, 1]."""

    def __init__(self, spec: ImageSpec, cfg: PixelCNNConfig):
        super().__init__()
        colours = spec.channels
        self.colours = colours
        self.layers = nn.ModuleList(
            GatedLayer(colours if i == 0 else cfg.width, cfg, colours, spec.num_classes, first=i == 0)
            for i in range(cfg.layers))
        self.mixture = cfg.mixture_components if cfg.output == "logistic-mixture" else 0
        self.head_outputs = 3 * self.mixture if self.mixture else LEVELS   # per subpixel
        self.head_hidden = MaskedConv2d(cfg.width, cfg.head_width, 1, colours, include_own=True)
        # The 256 logits of each subpixel, or its mixture's parameters (named for the former).
        self.head_logits = MaskedConv2d(cfg.head_width, colours * self.head_outputs, 1, colours,
                                        include_own=True)

    def vertical_links(self, x: Tensor, labels: Tensor | None) -> list[Tensor]:
        """Each layer's vertical → horizontal link, (B, 2·width, H, W); row i depends on the
        image rows < i only."""
        links, v = [], x
        for layer in self.layers:
            v, link = layer.vertical_step(v, labels)
            links.append(link)
        return links

    def horizontal(self, x: Tensor, links: list[Tensor], labels: Tensor | None) -> Tensor:
        """Features of the horizontal stack for the rows of x, given those rows' links."""
        h = x
        for layer, link in zip(self.layers, links, strict=True):
            h = layer.horizontal_step(h, link, labels)
        return h

    @property
    def span(self) -> int:
        """Rows above a pixel that its logits see: one per layer's reach in the vertical stack,
        and the row of the link's shift. As many rows below a pixel see it."""
        return len(self.layers) * self.layers[0].reach + 1

    def rows_that_see(self, row: int, height: int) -> slice:
        """The rows whose logits depend on image row `row`: itself and `span` rows below."""
        return slice(row, min(height, row + self.span + 1))

    def head_parameters(self, h: Tensor) -> Tensor:
        """Features (B, width, H, W) → each subpixel's output parameters (B, C, P, H, W): 256
        logits, or a mixture's. SiLU rather than ReLU: no unit is ever dead, so no dependence the
        masks allow can vanish."""
        out = self.head_logits(F.silu(self.head_hidden(F.silu(h))))
        b, _, height, width = out.shape
        return out.view(b, self.colours, self.head_outputs, height, width)

    def value_logits(self, parameters: Tensor) -> Tensor:
        """Output parameters (..., P) → logits of the 256 values (..., 256); a mixture's are
        its exact log-probabilities."""
        if not self.mixture:
            return parameters
        return mixture_value_log_probs(parameters, self.mixture)

    def head(self, h: Tensor) -> Tensor:
        """Features (B, width, H, W) → logits (B, C, 256, H, W)."""
        parameters = self.head_parameters(h)
        if not self.mixture:
            return parameters
        return self.value_logits(parameters.movedim(2, -1)).movedim(-1, 2)

    def head_terms(self, h: Tensor, levels: Tensor) -> Tensor:
        """log p(x_i | x_<i) of the values `levels` (B, C, H, W) from features h. The mixture
        scores the value taken alone, without computing the other 255."""
        parameters = self.head_parameters(h)
        if not self.mixture:
            return subpixel_terms(parameters, levels)
        return mixture_log_prob_at(parameters.movedim(2, -1), self.mixture, levels)

    def forward(self, x: Tensor, labels: Tensor | None = None, levels: Tensor | None = None) -> Tensor:
        """Logits (B, C, 256, H, W); with `levels` (the image's values 0 … 255) instead
        log p(x_i | x_<i) of every subpixel, (B, C, H, W). Those are computed a few images at a
        time (head_chunk): the head and its 256-way softmax are the largest single operations of
        a step (50 M logits, 200 MB, for 64 images of 32 px); in chunks Pause and Stop find a
        layer boundary sooner (core/runtime/step_runtime.py), and each chunk's blocks are small enough for
        the C heap to reuse from step to step."""
        features = self.horizontal(x, self.vertical_links(x, labels), labels)
        if levels is None:
            return self.head(features)
        chunk = head_chunk(self.colours, x.shape[-1])
        return torch.cat([self.head_terms(f, lv) for f, lv in
                          zip(features.split(chunk), levels.split(chunk), strict=True)])


# -- sampling helpers --------------------------------------------------------------------------


def to_levels(x01: Tensor) -> Tensor:
    """Images in [0, 1] → integer subpixel values 0 … 255."""
    return (x01 * 255.0).round().clamp(0, LEVELS - 1).long()


# Bytes of float32 logits per pass of the head and its softmax when log-probabilities are asked
# for. Below glibc's 32 MiB mmap threshold (core/runtime/memory.py): a bigger block gets fresh pages from
# the kernel at every step outside keep_freed_memory, and 16 images of 32 px RGB (50 MB) made
# 280,000 page faults per step, 0.45 s of a 1.1 s CPU step. 8 MiB rather than 24: a step at
# 32 px RGB, batch 64, took 562-575 ms against 597-627 (2 images a pass against 8; 1 image,
# 4 MiB, 603-623 ms), and the gap between two looks for Pause is one pass.
HEAD_CHUNK_BYTES = 8 * 2**20


def head_chunk(colours: int, size: int) -> int:
    """Images per pass of the head: as many as fit HEAD_CHUNK_BYTES of logits, at least one."""
    return max(1, HEAD_CHUNK_BYTES // (colours * LEVELS * size * size * 4))


def network_input(levels: Tensor) -> Tensor:
    return to_symmetric(levels.float() / 255.0)


def subpixel_terms(logits: Tensor, levels: Tensor) -> Tensor:
    """log p(x_i | x_<i) of every subpixel, (B, C, H, W), from logits (B, C, 256, H, W).
    log_softmax over the levels where they lie (dim 2) rather than cross_entropy on a view with
    the levels moved to dim 1: the same figures, bit for bit on the CPU, but the view made
    torch copy the 50 M logits of a 64-image batch first (2× slower forward, 1.5× backward)."""
    return F.log_softmax(logits, dim=2).gather(2, levels.unsqueeze(2)).squeeze(2)


def mixture_parts(parameters: Tensor, components: int) -> tuple[Tensor, Tensor, Tensor]:
    """(..., 3K) → log mixture weights, means and log-scales (..., K) of K logistics on the
    [−1, 1] scale of network_input."""
    logits, means, log_scales = parameters.split(components, dim=-1)
    return F.log_softmax(logits, dim=-1), means, log_scales.clamp_min(MIN_LOG_SCALE)


def mixture_log_prob_at(parameters: Tensor, components: int, levels: Tensor) -> Tensor:
    """log P(levels) (...) under a discretized mixture of logistics with parameters (..., 3K):
    log Σ_k π_k P_k(bin), each bin's mass a difference of the logistic's CDF at its edges,
    the end bins stretched to ±∞ (layers.discretized_logistic_log_prob), so the 256 masses
    sum to 1."""
    log_weights, means, log_scales = mixture_parts(parameters, components)
    x = network_input(levels).unsqueeze(-1)                                   # (..., 1)
    return torch.logsumexp(log_weights + discretized_logistic_log_prob(x, means, log_scales), dim=-1)


def mixture_value_log_probs(parameters: Tensor, components: int) -> Tensor:
    """log P(v) of all 256 values v, (..., 256), from mixture parameters (..., 3K)."""
    log_weights, means, log_scales = mixture_parts(parameters, components)
    x = network_input(torch.arange(LEVELS, device=parameters.device))         # (256,)
    per_component = discretized_logistic_log_prob(x, means.unsqueeze(-1), log_scales.unsqueeze(-1))
    return torch.logsumexp(log_weights.unsqueeze(-1) + per_component, dim=-2)  # (..., 256)


def gumbel_argmax(logits: Tensor, temperature: float, generator: torch.Generator) -> Tensor:
    """A draw from softmax(logits / T) per row of (B, 256) logits by the Gumbel-max trick:
    argmax(logits / T + G) = argmax(logits + T·G). T = 0 is the argmax itself. The noise comes
    from `generator` on the CPU, so results do not depend on the device."""
    uniform = torch.rand(logits.shape, generator=generator).clamp_min(torch.finfo(torch.float32).tiny)
    noise = -torch.log(-torch.log(uniform))  # finite: u ≥ tiny keeps T = 0 from meeting 0·∞
    return (logits.float() + temperature * noise.to(logits.device)).argmax(dim=-1)


class RasterEvaluator:
    """The network's logits for one subpixel after another in raster order, over `levels`
    (B, C, H, W) as the sampler fills them in, exact and without recomputing anything.

    For each row i, start_row(i) passes image row i−1 (now final) through every layer of the
    vertical stack, each layer reading the `reach` rows above from its buffer of the rows so
    far, and keeps the links into row i. Then for each pixel j, features_at(i, j) runs every
    layer of the horizontal stack at column j only, each reading the `reach` columns to the left
    from its buffer of the row, and writes its output at column j into the next layer's buffer.
    Nothing at column j depends on the pixel's last colour (mask A, then mask B: group g sees
    colours < g), so features computed for that colour are final for later columns;
    finish_pixel(i, j) puts the pixel's final values into the first layer's buffer. A pixel's
    operations are matrix products on (B, ·) rows: one pixel is too small for convolutions to be
    worth their set-up.

    Buffers hold channels last, so that a window of columns flattens without a copy; their
    first `reach` rows and columns stay zero, as the network's own padding."""

    def __init__(self, network: GatedPixelCNN, levels: Tensor, labels: Tensor | None):
        self.network, self.levels, self.labels = network, levels, labels
        batch, colours, height, width = levels.shape
        self.reach = r = network.layers[0].reach
        device = levels.device

        def masked(conv: MaskedConv2d) -> Tensor:  # (out, kernel_width, in) with its mask applied
            return (conv.weight * conv.mask)[:, :, 0, :].permute(0, 2, 1)

        self.vertical_buffers, self.horizontal_buffers = [], []
        self.horizontal_weights, self.out_weights, self.out_biases = [], [], []
        self.horizontal_bias = []
        for layer in network.layers:
            c_in = layer.vertical.in_channels
            self.vertical_buffers.append(torch.zeros(batch, c_in, r + height, width + 2 * r, device=device))
            self.horizontal_buffers.append(torch.zeros(batch, r + width, c_in, device=device))
            self.horizontal_weights.append(masked(layer.horizontal).flatten(1).t())      # ((r+1)·in, 2w)
            self.out_weights.append(masked(layer.out)[:, 0, :].t())                       # (w, w)
            self.out_biases.append(layer.out.bias)
            self.horizontal_bias.append(layer._class_bias(layer.horizontal_class, labels))
        self.hidden_weight = masked(network.head_hidden)[:, 0, :].t()
        out_weight = masked(network.head_logits)[:, 0, :].t()                             # (head, C·P)
        p = network.head_outputs
        self.out_weights_by_colour = [out_weight[:, c * p:(c + 1) * p].contiguous() for c in range(colours)]
        self.out_biases_by_colour = network.head_logits.bias.view(colours, p)
        self.row_biases: list[Tensor] = []  # per layer (B, W, 2w): link + biases of the row

    def start_row(self, i: int) -> None:
        """Pass row i−1 through the vertical stack; keep each layer's link into row i."""
        r, network = self.reach, self.network
        if i == 0:  # the links see only the zeros shifted in above the image
            batch, width = self.levels.shape[0], self.levels.shape[-1]
            pre_rows = [torch.zeros(batch, layer.link.in_channels, 1, width, device=self.levels.device)
                        for layer in network.layers]
        else:
            t = i - 1
            self.vertical_buffers[0][:, :, r + t, r:-r] = network_input(self.levels[:, :, t])
            pre_rows = []
            for k, layer in enumerate(network.layers):
                pre = layer.vertical_pre(self.vertical_buffers[k][:, :, t:t + r + 1], self.labels)
                pre_rows.append(pre)                                                  # (B, 2w, 1, W)
                if k + 1 < len(network.layers):
                    self.vertical_buffers[k + 1][:, :, r + t, r:-r] = gate(pre)[:, :, 0]
        self.row_biases = [
            (layer.link(pre)[:, :, 0].transpose(1, 2) + layer.horizontal.bias
             + _row_vector(self.horizontal_bias[k])).contiguous()
            for k, (layer, pre) in enumerate(zip(network.layers, pre_rows, strict=True))]

    def features_at(self, i: int, j: int) -> Tensor:
        """The horizontal stack's output at pixel (i, j), (B, width), from the pixel's current
        values: exact for the logits of every colour not yet drawn there."""
        r, layers = self.reach, self.network.layers
        buffers = self.horizontal_buffers
        buffers[0][:, r + j] = network_input(self.levels[:, :, i, j])
        h = buffers[0][:, r + j]
        for k, layer in enumerate(layers):
            window = buffers[k][:, j:j + r + 1].flatten(1)                    # columns j−r … j
            pre = torch.addmm(self.row_biases[k][:, j], window, self.horizontal_weights[k])
            out = torch.addmm(self.out_biases[k], gate(pre), self.out_weights[k])
            h = h + out if layer.residual else out
            if k + 1 < len(layers):
                buffers[k + 1][:, r + j] = h
        return h

    def logits(self, features: Tensor, colour: int) -> Tensor:
        """(B, 256) logits of `colour` at the pixel whose features these are."""
        hidden = F.silu(torch.addmm(self.network.head_hidden.bias, F.silu(features), self.hidden_weight))
        parameters = torch.addmm(self.out_biases_by_colour[colour], hidden, self.out_weights_by_colour[colour])
        return self.network.value_logits(parameters)

    def finish_pixel(self, i: int, j: int) -> None:
        """The pixel's final values, for the windows of the columns after it."""
        self.horizontal_buffers[0][:, self.reach + j] = network_input(self.levels[:, :, i, j])


def _row_vector(bias: Tensor | float) -> Tensor | float:
    """A class bias (B, 2w, 1, 1) as (B, 1, 2w), to add along a row's columns; 0 stays 0."""
    return bias if isinstance(bias, float) else bias[:, None, :, 0, 0]


class VerticalStackCache:
    """The vertical stack of a batch of images, every layer's input and pre-activation, for
    Metropolis–Hastings: a proposal changes one row, and rows above it keep their vertical
    features, so the candidate's pass starts at that row from the cached rows above it
    (`links_from_row`); an accepted candidate's rows replace the cached ones (`take`)."""

    def __init__(self, network: GatedPixelCNN, x: Tensor, labels: Tensor | None):
        self.network, self.labels = network, labels
        self.inputs: list[Tensor] = []  # per layer (B, in, H, W)
        self.pres: list[Tensor] = []    # per layer (B, 2w, H, W)
        v = x
        for layer in network.layers:
            self.inputs.append(v)
            r = layer.reach
            pre = layer.vertical_pre(F.pad(v, (r, r, r, 0)), labels)
            self.pres.append(pre)
            v = gate(pre)

    def links_from_row(self, images: Tensor, x_rows: Tensor, first: int
                       ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """For `images` (indices into the batch) whose rows first … first + R − 1 are now
        `x_rows` (network input) and whose rows above are as cached: each layer's links into
        those rows, and the layer inputs and pre-activations of those rows (for `take`)."""
        labels = None if self.labels is None else self.labels[images]
        links, inputs, pres = [], [], []
        v = x_rows
        for k, layer in enumerate(self.network.layers):
            r = layer.reach
            above = self.inputs[k][images, :, max(0, first - r):first]
            window = F.pad(torch.cat([above, v], dim=2), (r, r, r - above.shape[2], 0))
            pre = layer.vertical_pre(window, labels)
            before = (self.pres[k][images, :, first - 1:first] if first > 0
                      else torch.zeros_like(pre[:, :, :1]))  # what shift_down puts above row 0
            links.append(layer.link(torch.cat([before, pre[:, :, :-1]], dim=2)))
            inputs.append(v)
            pres.append(pre)
            v = gate(pre)
        return links, inputs, pres

    def take(self, images: Tensor, first: int, inputs: list[Tensor], pres: list[Tensor]) -> None:
        """Rows first … of `images` become those of links_from_row's candidate."""
        rows = slice(first, first + pres[0].shape[2])
        for k in range(len(self.pres)):
            self.inputs[k][images, :, rows] = inputs[k]
            self.pres[k][images, :, rows] = pres[k]


# -- the family ------------------------------------------------------------------------------


class PixelCNN(Family):
    """Gated PixelCNN trained by maximum likelihood (the exact log-probability of each
    subpixel's value), sampled in raster order, inpainted by ancestral fill plus
    Metropolis–Hastings."""

    name = "pixelcnn"
    title = "PixelCNN"
    summary = "Predicts each pixel from the ones before it (Gated PixelCNN); exact likelihood, slow pixel-by-pixel sampling."
    capabilities = frozenset(
        {Capability.SAMPLE, Capability.LOG_PROB, Capability.INPAINT, Capability.CONDITIONAL})
    log_prob_kind = LogProbKind.EXACT
    why_no_latent = ("it writes an image one subpixel at a time, each drawn from a distribution over "
                     "the ones before it; no vector stands for the whole image.")
    inpaint_method = ("Ancestral fill with the known pixels clamped, then Metropolis–Hastings sweeps "
                      "(the model's own conditional as proposal) so the fill also agrees with the pixels "
                      "below and right of it; exact in the limit of many sweeps.")
    Config = PixelCNNConfig
    SampleOptions = PixelCNNSampleOptions
    plotted_metrics = ("bpd",)
    TINY: ClassVar[dict[str, Any]] = {"width": 6, "layers": 2, "kernel": 3, "head_width": 6, "inpaint_sweeps": 1}
    # No width_knobs: at 64 px on a CPU no narrower PixelCNN learnt more in the same minutes
    # (docs/families/pixelcnn.md), so it keeps its defaults at every size.

    def __init__(self, spec: ImageSpec, config: PixelCNNConfig, device: torch.device, seed: int = 0):
        super().__init__(spec, config, device, seed)
        if config.layers < 1 or min(config.width, config.head_width) < spec.channels:
            raise ValueError(f"need at least one layer and width, head_width ≥ {spec.channels} "
                             "(one channel group per colour)")
        if config.inpaint_sweeps < 0:
            raise ValueError("inpaint_sweeps must be ≥ 0")
        self.network = GatedPixelCNN(spec, config).to(self.device)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=config.lr)

    def networks(self) -> dict[str, nn.Module]:
        return {"pixelcnn": self.network}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.optimizer}

    # -- the likelihood ---------------------------------------------------------------------
    def subpixel_log_probs(self, levels: Tensor, labels: Tensor | None) -> Tensor:
        """log p(x_i | x_<i) of every subpixel, (B, C, H, W), for integer values 0 … 255."""
        return self.network(network_input(levels), labels, levels)

    def train_step(self, x: Tensor, labels: Tensor | None, generator: torch.Generator) -> dict[str, float]:
        """Maximum likelihood; the step draws no randomness, so `generator` is unused."""
        if self.spec.num_classes and labels is None:
            raise ValueError("a class-conditional model needs labels to train")
        labels = None if labels is None else labels.to(self.device, torch.long)
        log_prob = self.subpixel_log_probs(to_levels(x.to(self.device)), labels).flatten(1).sum(1)
        loss = -log_prob.mean() / self.spec.dims  # nats per subpixel, so one clip suits every size
        self.optimizer.zero_grad(set_to_none=True)
        self.backward(loss, self.optimizer)
        limit = self.config.grad_clip if self.config.grad_clip > 0 else float("inf")
        grad_norm = float(nn.utils.clip_grad_norm_(self.network.parameters(), limit))
        self.optimizer_step(self.optimizer)
        return {"loss": loss.item(), "bpd": loss.item() / math.log(2.0), "grad_norm": grad_norm}

    @torch.no_grad()
    def log_prob(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Exact log p(x) in nats per image: the sum over subpixels of log p(x_i | x_<i)."""
        labels = self._check_labels(labels, x.shape[0])
        return self.subpixel_log_probs(to_levels(x.to(self.device)), labels).flatten(1).sum(1).cpu()

    # -- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, seed: int, labels: Tensor | None = None, *, options: Any = None,
               progress: SampleProgress | None = None) -> Tensor:
        """Raster-order ancestral sampling at options.temperature, one subpixel at a time;
        progress(row, H, images so far) after every row (rows not yet drawn are black)."""
        options = options or self.SampleOptions()
        labels = self._check_labels(labels, n)
        levels = torch.zeros((n, *self.spec.shape), dtype=torch.long, device=self.device)
        generator = torch.Generator().manual_seed(seed)
        self._fill_in_raster_order(levels, None, labels, options.temperature, generator, progress)
        return (levels.float() / 255.0).cpu()

    def _fill_in_raster_order(self, levels: Tensor, keep: Tensor | None, labels: Tensor | None,
                              temperature: float, generator: torch.Generator,
                              progress: SampleProgress | None = None) -> None:
        """Draw every subpixel of `levels` (B, C, H, W) not marked in `keep` from p(x_i | x_<i),
        in place. Subpixels every image keeps are not drawn (their draws would be discarded), and
        a row every image keeps in full is not even passed through the horizontal stack: no
        later row reads it."""
        with one_intra_op_thread():  # tens of tiny operations per subpixel (core/runtime/cpu_threads.py)
            self._fill_rows(levels, keep, labels, temperature, generator, progress)

    def _fill_rows(self, levels: Tensor, keep: Tensor | None, labels: Tensor | None,
                   temperature: float, generator: torch.Generator, progress: SampleProgress | None) -> None:
        evaluator = RasterEvaluator(self.network, levels, labels)
        height, colours = self.spec.size, self.spec.channels
        for i in range(height):
            evaluator.start_row(i)
            if keep is None or not keep[:, :, i].all():
                for j in range(self.spec.size):
                    for c in range(colours):
                        kept = keep is not None and bool(keep[:, c, i, j].all())
                        if kept and c < colours - 1:
                            continue  # the pixel's last colour computes the features later columns read
                        features = evaluator.features_at(i, j)
                        if kept:
                            continue
                        drawn = gumbel_argmax(evaluator.logits(features, c), temperature, generator)
                        levels[:, c, i, j] = drawn if keep is None else torch.where(
                            keep[:, c, i, j], levels[:, c, i, j], drawn)
                    evaluator.finish_pixel(i, j)
            if progress is not None:
                progress(i + 1, height, (levels.float() / 255.0).cpu())

    # -- inpainting -----------------------------------------------------------------------------
    @torch.no_grad()
    def inpaint(self, x: Tensor, keep_mask: Tensor, seed: int, labels: Tensor | None = None, *,
                sweeps: int | None = None, progress: SampleProgress | None = None) -> Tensor:
        """Fill the pixels where keep_mask is False from p(unknown | known): an ancestral fill
        with the known subpixels clamped, then `sweeps` (default config.inpaint_sweeps)
        Metropolis–Hastings sweeps (see the module docstring). Known pixels are returned bit
        for bit; the same seed gives the same fill. progress counts rows: H for the fill, H
        more for each sweep."""
        sweeps = self.config.inpaint_sweeps if sweeps is None else sweeps
        labels = self._check_labels(labels, x.shape[0])
        keep = self._keep_mask(keep_mask, x)
        keep_here = keep.to(self.device)
        levels = torch.where(keep_here, to_levels(x.to(self.device)), 0)
        generator = torch.Generator().manual_seed(seed)
        height = self.spec.size
        total = height * (1 + sweeps)
        fill_progress = None if progress is None else (lambda row, _h, images: progress(row, total, images))
        self._fill_in_raster_order(levels, keep_here, labels, 1.0, generator, fill_progress)
        for sweep in range(sweeps):
            row_done = None if progress is None else (
                lambda row, sweep=sweep: progress(height * (1 + sweep) + row, total, (levels.float() / 255.0).cpu()))
            self._metropolis_hastings_sweep(levels, keep_here, labels, generator, row_done)
        return torch.where(keep, x.cpu(), levels.float().cpu() / 255.0)

    def _metropolis_hastings_sweep(self, levels: Tensor, keep: Tensor, labels: Tensor | None,
                                   generator: torch.Generator,
                                   row_done: Callable[[int], None] | None = None) -> None:
        """One raster-order pass over the unknown subpixels, in place. At subpixel i propose
        x′_i ~ p(· | x_<i) and accept with probability min(1, ∏_{j>i} p(x′_j | x′_<j) /
        p(x_j | x_<j)), the joint ratio with the proposal's own term cancelled."""
        logits = self.network(network_input(levels), labels)                       # (B, C, 256, H, W)
        terms = subpixel_terms(logits, levels)                                     # (B, C, H, W)
        vertical = VerticalStackCache(self.network, network_input(levels), labels)
        colours, size = self.spec.channels, self.spec.size
        for i, j, c in itertools.product(range(size), range(size), range(colours)):  # raster order
            if row_done is not None and i > 0 and j == 0 and c == 0:
                row_done(i)
            unknown = ~keep[:, c, i, j]
            if not unknown.any():
                continue
            proposal = gumbel_argmax(logits[:, c, :, i, j], 1.0, generator)
            log_uniform = torch.rand(levels.shape[0], generator=generator).log().to(self.device)
            moved = unknown & (proposal != levels[:, c, i, j])
            if not moved.any():
                continue  # re-proposing the current value leaves the state as it is
            # Only the images whose subpixel would change go through the network (a trained
            # model often re-proposes the value there), and of them only rows i … i + span,
            # the rows that see the change (the ratio's other terms are 1), from the vertical
            # stack's cached rows above.
            movers = moved.nonzero().squeeze(1)
            candidate = levels[movers]
            candidate[:, c, i, j] = proposal[movers]
            rows = self.network.rows_that_see(i, size)
            x_rows = network_input(candidate[:, :, rows])
            links, v_inputs, v_pres = vertical.links_from_row(movers, x_rows, i)
            new_logits = self.network.head(self.network.horizontal(
                x_rows, links, None if labels is None else labels[movers]))
            new_terms = subpixel_terms(new_logits, candidate[:, :, rows])
            later = _after(i, j, c, self.spec.shape, levels.device)[:, rows]
            log_ratio = ((new_terms - terms[movers, :, rows]) * later).flatten(1).sum(1)
            accepted = log_uniform[movers] < log_ratio
            taken = movers[accepted]
            levels[taken] = candidate[accepted]
            terms[taken, :, rows] = new_terms[accepted]
            logits[taken, :, :, rows] = new_logits[accepted]
            vertical.take(taken, i, [v[accepted] for v in v_inputs], [v[accepted] for v in v_pres])
        if row_done is not None:
            row_done(size)


def _after(i: int, j: int, c: int, shape: tuple[int, int, int], device: torch.device) -> Tensor:
    """(C, H, W) float mask of the subpixels that come after (c, i, j) in the raster order."""
    colours, height, width = shape
    order = torch.arange(colours * height * width, device=device).view(height, width, colours)
    return (order > order[i, j, c]).permute(2, 0, 1).float()


FAMILY = PixelCNN
