"""The contract every model family implements.

A family owns its networks, its loss and optimizer steps, and its sampler. It declares what it
can do (`capabilities`); the app enables panels from that declaration alone. Images cross the
contract as float tensors in [0, 1] of shape (N, C, H, W); 8-bit data enters as k/255.

Likelihoods are in nats per image of the 8-bit data, i.e. of the dequantized data on
[0, 256)^D, so every family reports in one unit (`bits_per_dim` converts).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if typing.TYPE_CHECKING:
    from ..runtime.step_runtime import StepRuntime


class Capability(str, enum.Enum):
    SAMPLE = "sample"            # sample(n, seed, labels)
    DECODE = "decode"            # decode(z), latent_dim
    ENCODE = "encode"            # encode(x)
    LOG_PROB = "log_prob"        # log_prob(x), see log_prob_kind
    INPAINT = "inpaint"          # inpaint(x, keep_mask, seed)
    CONDITIONAL = "conditional"  # labels accepted everywhere


class LogProbKind(str, enum.Enum):
    EXACT = "exact"
    BOUND = "bound"              # a lower bound on log p(x) (ELBO, IWAE, diffusion VLB)
    UNNORMALIZED = "unnormalized"


class CapabilityError(RuntimeError):
    """Raised when a family is asked for something it did not declare."""


class SamplingCancelled(RuntimeError):
    """Raised by a progress callback to stop a long sampler; the sampler lets it propagate."""


# The seeds a person may give (train, sample, interpolate, inpaint, eval; the app's seed boxes
# hold the same range): whole numbers from 0 to MAX_SEED.
MAX_SEED = 2**31 - 1

# progress(step, total_steps, images): images are the current state in [0, 1] (N, C, H, W) on
# the CPU when the sampler has a meaningful one to show (a denoising chain), else None.
SampleProgress = Callable[[int, int, "Tensor | None"], None]


@dataclass(frozen=True)
class ImageSpec:
    """What a model is built for: square images of `size` px with `channels` channels."""

    channels: int
    size: int
    num_classes: int = 0  # 0: unconditional; else labels are ints in [0, num_classes)

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, not {self.channels}")
        if not 8 <= self.size <= 256:
            raise ValueError(f"image size must be between 8 and 256 px, not {self.size}")

    @property
    def dims(self) -> int:
        return self.channels * self.size * self.size

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)


def bits_per_dim(log_prob_nats: Tensor | float, dims: int) -> Tensor | float:
    """Negative log-likelihood in bits per dimension from log p in nats per image."""
    return -log_prob_nats / (dims * math.log(2.0))


def smooth_fill(x: Tensor, keep: Tensor) -> Tensor:
    """The hole (keep False) filled by the harmonic interpolation of the known pixels: each
    unknown subpixel the mean of its four neighbours (edges replicated), solved by red-black
    successive over-relaxation from each image's mean known colour per channel. No model: a
    smooth guess that meets the hole's boundary, used as a start by families that refine a
    fill and as a baseline by benchmarks/inpainting.py. x (N, C, H, W) in [0, 1], keep a bool
    tensor of x's shape."""
    keep = keep.to(x.device)
    known = keep.to(x.dtype)
    counts = known.sum((2, 3), keepdim=True)
    mean = torch.where(counts > 0, (x * known).sum((2, 3), keepdim=True) / counts.clamp_min(1), 0.5)
    y = torch.where(keep, x, mean.expand_as(x))
    height, width = x.shape[-2:]
    rows, cols = torch.meshgrid(torch.arange(height, device=x.device), torch.arange(width, device=x.device),
                                indexing="ij")
    red = (rows + cols) % 2 == 0
    # With the optimal relaxation factor for an n-wide grid the error shrinks about as
    # exp(−2πk/n) (plain Jacobi: exp(−π²k/2n²)), so 4n sweeps leave e^−25 of it.
    n = max(height, width)
    omega = 2 / (1 + math.sin(math.pi / (n + 1)))
    for _ in range(4 * n + 10):
        for colour in (red, ~red):
            padded = F.pad(y, (1, 1, 1, 1), mode="replicate")
            neighbours = (padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1]
                          + padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:]) / 4
            update = colour & ~keep
            y = torch.where(update, y + omega * (neighbours - y), y)
    return y


def field_choices(config_cls: type) -> dict[str, tuple[Any, ...]]:
    """The allowed values of each field annotated `Literal[...]` (the app shows a drop-down)."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: typing.get_args(hints[f.name]) for f in dataclasses.fields(config_cls)
            if typing.get_origin(hints[f.name]) is typing.Literal}


def config_from_dict(config_cls: type, values: dict[str, Any] | None) -> Any:
    """Build a frozen config dataclass from plain values (a --set, JSON), refusing unknown keys,
    values of another type than the field's (a bool is not a number, 2.5 not a whole number),
    NaN and infinities, negative whole numbers and values outside a field's Literal choices,
    each with a message naming the field. The class's own __post_init__ checks its ranges."""
    values = dict(values or {})
    known = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(
            f"unknown {config_cls.__name__} option(s): {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    hints = typing.get_type_hints(config_cls)
    for name, value in list(values.items()):
        values[name] = _typed(name, value, hints[name])
    return config_cls(**values)


def _typed(name: str, value: Any, hint: Any) -> Any:
    """`value` as the type `hint` names (an int where a float is wanted, a list for a tuple), or
    a ValueError saying what the field takes."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{name} must be one of {', '.join(map(str, args))}, not {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list like {_example(args)}, not {value!r}")
        kinds = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(kinds) != len(value):
            raise ValueError(f"{name} must be a list of {len(kinds)} numbers, not {value!r}")
        return tuple(_typed(name, item, kind) for item, kind in zip(value, kinds, strict=True))
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, not {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be a whole number, not {value!r}")
        if value < 0:
            raise ValueError(f"{name} must not be negative, not {value}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, not {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, not {value}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be text, not {value!r}")
        return value
    return value


def _example(args: tuple[Any, ...]) -> str:
    return "[1, 2]" if args and args[0] is int else "[0.5, 0.999]"


def at_least(config: Any, minimum: float, *names: str) -> None:
    """ValueError naming the first of `names` whose value in `config` is below `minimum`; for
    a config's __post_init__."""
    for name in names:
        value = getattr(config, name)
        if value < minimum:
            raise ValueError(f"{name} must be at least {minimum:g}, not {value:g}")


def positive(config: Any, *names: str) -> None:
    """ValueError naming the first of `names` that is not above zero."""
    for name in names:
        value = getattr(config, name)
        if value <= 0:
            raise ValueError(f"{name} must be above 0, not {value:g}")


def within(config: Any, low: float, high: float, *names: str) -> None:
    """ValueError naming the first of `names` outside [low, high]."""
    for name in names:
        value = getattr(config, name)
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low:g} and {high:g}, not {value:g}")


class BatchShard:
    """Which slice of the global batch this process trains on (distributed data parallel).

    A single process is rank 0 of 1 and every method is the identity, so families behave
    exactly as before. Under torchrun each rank trains on rows [rank·n, (rank+1)·n) of the
    global batch; per-image noise is drawn for the whole global batch from the (identical)
    generator on every rank and sliced, so the noise each image sees — and the generator's
    state afterwards — does not depend on the process count (see genstudio.core.runtime.distributed)."""

    def __init__(self, rank: int = 0, world_size: int = 1,
                 gather: Callable[[Tensor], Tensor] | None = None):
        self.rank, self.world_size, self._gather = rank, world_size, gather

    def draw(self, n: int, make: Callable[[int], Tensor]) -> Tensor:
        """make(N) draws N rows of noise; returns this process's n rows of the global draw."""
        if self.world_size == 1:
            return make(n)
        return make(n * self.world_size)[self.rank * n:(self.rank + 1) * n]

    def gather(self, t: Tensor) -> Tensor:
        """Every process's rows of t, in rank order (the global batch); t itself when single."""
        if self.world_size == 1 or self._gather is None:
            return t
        return self._gather(t)


SINGLE_PROCESS = BatchShard()

# Every family's default widths are chosen for images of at most this side on a CPU (the
# benchmarks' 28 and 32 px); larger images on a CPU get narrower networks (Family.suggested_config).
DEFAULTS_SUIT_SIZE = 32
NARROWEST = 8  # a suggested width never goes below this many channels


def suggestion_reason(spec: ImageSpec) -> str:
    """Why suggested_config changed a knob, to follow "suggested" in the form and the log."""
    return f"for {spec.size} px images on a CPU (the defaults suit up to {DEFAULTS_SUIT_SIZE} px)"


class Family(ABC):
    """Base class of a model family. Subclasses set the class attributes and implement the
    abstract methods, plus whichever optional methods their capabilities declare."""

    name: ClassVar[str]
    title: ClassVar[str]
    summary: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]
    log_prob_kind: ClassVar[LogProbKind | None] = None
    Config: ClassVar[type]  # a frozen dataclass of hyper-parameters, all with defaults
    # Knobs chosen per sampling call rather than at training time (e.g. a diffusion sampler
    # and its step count): a frozen dataclass with defaults, or None. The gallery shows them.
    SampleOptions: ClassVar[type | None] = None
    # Training metrics the live plot shows at first (the rest start hidden); (): the plot's
    # own choice (bits/dim or the loss).
    plotted_metrics: ClassVar[tuple[str, ...]] = ()
    # How `inpaint` fills the unknown pixels, in a line the app shows beside the result (e.g.
    # "RePaint: …"); empty for families that cannot inpaint.
    inpaint_method: ClassVar[str] = ""
    # Why a family without DECODE has no latent space to explore, in a sentence the explorer
    # shows; empty for families that decode.
    why_no_latent: ClassVar[str] = ""
    # The smallest sensible Config values, for the contract tests and quick smoke runs.
    TINY: ClassVar[dict[str, Any]] = {}
    # Whether training may autocast to bf16/fp16 on a GPU (genstudio.core.runtime.accel).
    mixed_precision: ClassVar[bool] = True
    # The Config's width knobs (channels), which suggested_config narrows for large images.
    width_knobs: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def suggested_config(cls, spec: ImageSpec, device: torch.device) -> dict[str, Any]:
        """Knob values that suit images like `spec` on `device` better than the Config's defaults
        (which suit up to DEFAULTS_SUIT_SIZE px on a CPU): {name: value} for the knobs it changes.
        A new run starts from them; a knob the person sets wins.

        On a CPU a convolution costs about width² × pixels per image, so a side s above
        DEFAULTS_SUIT_SIZE scales each width knob by DEFAULTS_SUIT_SIZE / s (to a multiple of 8),
        so an image costs about what it costs at the size the defaults suit instead of several
        times more. On a GPU (or MPS) the defaults stay at every size."""
        if torch.device(device).type != "cpu" or spec.size <= DEFAULTS_SUIT_SIZE:
            return {}
        defaults, scale = cls.Config(), DEFAULTS_SUIT_SIZE / spec.size
        return {name: max(NARROWEST, 8 * round(getattr(defaults, name) * scale / 8)) for name in cls.width_knobs}

    def __init__(self, spec: ImageSpec, config: Any, device: torch.device, seed: int = 0):
        self.spec = spec
        self.config = config
        self.device = torch.device(device)
        self.seed = seed
        # Multiplies the configured learning rates; lowered when training diverges (see
        # DivergenceGuard, core/runtime/step_runtime.py). Families that set their learning rate
        # every step must apply it.
        self.lr_scale = 1.0
        # Set by the trainer: the slice of the global batch (distributed), and the StepRuntime
        # (core/runtime/step_runtime.py) that `backward` and `optimizer_step` go through: interrupt
        # check, gradient all-reduce, fp16 scaling, non-finite guard, in that order. None: plain
        # loss.backward() / optimizer.step().
        self.batch_shard: BatchShard = SINGLE_PROCESS
        self.step_runtime: StepRuntime | None = None

    # -- training ---------------------------------------------------------------------------
    @abstractmethod
    def networks(self) -> dict[str, nn.Module]:
        """Every module whose weights make up the model (checkpointed by name)."""

    @abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimizer (checkpointed by name)."""

    @abstractmethod
    def train_step(self, x: Tensor, labels: Tensor | None, generator: torch.Generator) -> dict[str, float]:
        """One optimisation step on a batch x in [0, 1]; returns scalar metrics to log.

        All randomness must come from `generator` so that resumed runs continue exactly."""

    def backward(self, loss: Tensor, optimizer: torch.optim.Optimizer) -> None:
        """loss.backward() for the parameters `optimizer` steps. Families call this instead of
        loss.backward(), before clipping, so that under torchrun the gradients are averaged over
        the processes (the global batch's gradient) and under fp16 they are unscaled before
        a clip measures them."""
        if self.step_runtime is None:
            loss.backward()
        else:
            self.step_runtime.backward(loss, optimizer)

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """optimizer.step(), through the step runtime: skipped when a gradient is inf/NaN."""
        if self.step_runtime is None:
            optimizer.step()
        else:
            self.step_runtime.step(optimizer)

    # -- capabilities -------------------------------------------------------------------------
    @property
    def latent_dim(self) -> int | None:
        return None

    def sample(self, n: int, seed: int, labels: Tensor | None = None, *, options: Any = None,
               progress: SampleProgress | None = None) -> Tensor:
        """n images in [0, 1], (N, C, H, W) on the CPU. The same seed (and options) gives the
        same images. `options` is an instance of SampleOptions (None: its defaults); iterative
        samplers call progress(step, total_steps, current_images_or_None) as they go, and
        stop early with SamplingCancelled when it raises that."""
        raise CapabilityError(f"{self.title} cannot sample")

    def sample_options(self, values: dict[str, Any] | None = None) -> Any:
        """The family's SampleOptions from plain values (unknown keys refused); None when the
        family has no per-call sampling knobs."""
        if self.SampleOptions is None:
            if values:
                raise ValueError(f"{self.title} takes no sampling options (got {', '.join(values)})")
            return None
        return config_from_dict(self.SampleOptions, values)

    def sampling_defaults(self) -> Any:
        """This model's SampleOptions as the gallery first shows them (None: no knobs). A family
        whose options stand for a training value by default (e.g. "0: the training step size")
        returns them resolved, so a person sees the number that will be used."""
        return None if self.SampleOptions is None else self.SampleOptions()

    def encode(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        raise CapabilityError(f"{self.title} has no encoder")

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        raise CapabilityError(f"{self.title} has no decoder")

    def log_prob(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """log p(x) in nats per image of 8-bit data x = k/255; kind given by log_prob_kind."""
        raise CapabilityError(f"{self.title} has no likelihood")

    def likelihood_bounds(self, x: Tensor, labels: Tensor | None = None, *,
                          quick: bool = False) -> dict[str, Tensor]:
        """Every log-likelihood figure the family gives for x, by name, in nats per image
        (e.g. a VAE's ELBO and its importance-weighted bound). quick=True asks for a cheap
        figure for live plots during training; a family whose full figure is costly (a
        diffusion bound sums 1000 network passes) may then return an estimate under its own
        name (e.g. "vlb_est"), never under the name of the exact figure. A figure that is a
        Monte Carlo estimate may come as (N, P): P independent unbiased estimates per image,
        whose mean is the figure and whose spread gives its standard error (evaluate_likelihood)."""
        return {"log_prob": self.log_prob(x, labels)}

    def inpaint(self, x: Tensor, keep_mask: Tensor, seed: int, labels: Tensor | None = None, *,
                progress: SampleProgress | None = None) -> Tensor:
        """x (N, C, H, W) in [0, 1] with the pixels where keep_mask (True = keep, broadcastable
        to x) is False filled from the model; the kept pixels come back unchanged, bit for bit,
        and the same seed gives the same fill. Iterative methods call progress(step, total,
        images_or_None) as they go and stop with SamplingCancelled when it raises that."""
        raise CapabilityError(f"{self.title} cannot inpaint")

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain nested data (tensors, numbers, strings): weights, optimizer states, extras."""
        return {
            "networks": {k: m.state_dict() for k, m in self.networks().items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()},
        }

    def load_state_dict(self, state: dict[str, Any], *, with_optimizers: bool = True) -> None:
        for key, module in self.networks().items():
            module.load_state_dict(state["networks"][key])
        if with_optimizers:
            for key, optimizer in self.optimizers().items():
                optimizer.load_state_dict(state["optimizers"][key])

    def step_state_modules(self) -> list[nn.Module]:
        """The modules whose buffers a train step may change before its first optimizer step
        (BatchNorm statistics, spectral norm's vectors, …): copied before a step that may be
        abandoned part-way and put back if it is (core/runtime/step_runtime.py). A family that
        writes a large buffer only after its optimizer step may leave that module out."""
        return list(self.networks().values())

    def eval_mode(self) -> None:
        for module in self.networks().values():
            module.eval()

    def train_mode(self) -> None:
        for module in self.networks().values():
            module.train()

    def num_parameters(self) -> int:
        return sum(p.numel() for m in self.networks().values() for p in m.parameters())

    @staticmethod
    def _keep_mask(keep_mask: Tensor, x: Tensor) -> Tensor:
        """inpaint's keep_mask (True = known) as a bool CPU tensor of x's shape, or a clear
        ValueError when it does not broadcast to x."""
        keep = torch.as_tensor(keep_mask).to(torch.bool).cpu()
        try:
            return torch.broadcast_to(keep, x.shape)
        except RuntimeError:
            raise ValueError(f"keep_mask of shape {tuple(keep.shape)} does not fit images "
                             f"{tuple(x.shape)}") from None

    def _check_labels(self, labels: Tensor | None, n: int) -> Tensor | None:
        """Conditional models need labels (default: class 0..K-1 cycling); others ignore them."""
        if self.spec.num_classes == 0:
            return None
        if labels is None:
            labels = torch.arange(n) % self.spec.num_classes
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if labels.numel() != n:
            raise ValueError(f"got {labels.numel()} labels for {n} images")
        if labels.min() < 0 or labels.max() >= self.spec.num_classes:
            raise ValueError(f"labels must be in [0, {self.spec.num_classes})")
        return labels.to(self.device)
