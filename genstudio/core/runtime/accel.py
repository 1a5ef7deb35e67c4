"""The fast path of training on a GPU, kept out of the way of the CPU path.

On CUDA the trainer uses, by default:
- mixed precision: autocast to bfloat16 where the GPU supports it, else float16 with a
  GradScaler (gradients unscaled before the family clips them; a step with inf/NaN gradients
  is skipped and the scale lowered). Families that declare `mixed_precision = False` (the flow:
  its log-determinants need float32) train in float32 whatever is asked. Setting `precision`:
  auto, fp32, bf16, fp16.
- channels_last memory format for the networks and the batches (faster convolutions on tensor
  cores);
- the whole training set on the GPU when it fits (a uint8 copy, at most a quarter of the free
  memory), so a batch is one gather on the device; otherwise a pinned host copy, each batch
  gathered into pinned memory and copied with non_blocking=True;
- optionally torch.compile of the trained networks (setting `compile`; in place with
  nn.Module.compile, so checkpoint keys do not change);
- fused Adam, which can skip a step on the device: the divergence guard
  (core/runtime/step_runtime.py) then hands it a found_inf flag instead of reading the gradients' finiteness on the host, a sync
  in the middle of every optimizer step (a GAN has two per train step) that left the GPU idle
  while the CPU queued the rest of the step. Not under fp16, whose GradScaler sets the flag.

On the CPU (and MPS) none of this is active: `plan_for` resolves every choice to "off", the
trainer then calls the families exactly as before and the results are bit for bit those of a
plain loop (tests/core/test_accel.py). The precision machinery can still be forced on a CPU
for testing (`Acceleration(..., force=True)`), which is how its code paths are exercised
without a GPU.

A CUDA out-of-memory error in a train step does not end the run: the trainer halves the batch,
frees the cached memory, tells the user (a BatchLowered event) and carries on (see
`is_out_of_memory`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..families.base import Family
from .step_runtime import StepRuntime

if TYPE_CHECKING:
    from .step_runtime import DivergenceGuard

PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Plan:
    """What the trainer does on this device (all off on the CPU)."""

    device: torch.device
    precision: str            # fp32, bf16 or fp16
    channels_last: bool
    data_on_device: bool      # decided per dataset by place_dataset
    pin_memory: bool
    compile: bool
    fused_optimizers: bool = False  # fused Adam; non-finite steps skipped without a host sync

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def describe(self) -> str:
        parts = [self.precision]
        if self.channels_last:
            parts.append("channels_last")
        if self.compile:
            parts.append("compiled")
        return ", ".join(parts)


def plan_for(device: torch.device, family: Family, precision: str = "auto", compile: bool = False,
             *, force: bool = False) -> Plan:
    """The fast-path choices for `family` on `device`. Everything is off unless the device is
    CUDA (or `force`, for tests on a CPU)."""
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, not {precision!r}")
    cuda = device.type == "cuda"
    if not (cuda or force):
        return Plan(device, "fp32", False, False, False, False)
    if not getattr(family, "mixed_precision", True):
        precision = "fp32"  # the family's own declaration wins over a request
    elif precision == "auto":  # bf16 needs no loss scaling; older GPUs fall back to fp16
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    return Plan(device, precision, channels_last=True, data_on_device=cuda, pin_memory=cuda,
                compile=compile, fused_optimizers=precision != "fp16")


class Acceleration:
    """Applies a Plan to a family and its data; wraps each train step."""

    def __init__(self, plan: Plan, family: Family):
        self.plan = plan
        self.family = family
        # For the step runtime: fp16 needs a gradient scaler.
        self.scaler = torch.amp.GradScaler(plan.device.type) if plan.precision == "fp16" else None
        use_fused_adam(family.optimizers().values(), plan.fused_optimizers)
        if plan.channels_last:
            for module in family.networks().values():
                module.to(memory_format=torch.channels_last)
        if plan.compile:
            for module in trained_modules(family):
                module.compile()

    def step_runtime(self, *, reduce: Callable[[torch.optim.Optimizer], None] | None = None,
                     guard: DivergenceGuard | None = None) -> StepRuntime:
        """The runtime a family's backward and optimizer steps go through under this plan
        (core/runtime/step_runtime.py), with a gradient all-reduce and a divergence guard if given."""
        dtype = self.plan.autocast_dtype
        return StepRuntime(scaler=self.scaler, autocast=None if dtype is None else (self.plan.device.type, dtype),
                           reduce=reduce, guard=guard)

    def batch_layout(self, x: Tensor) -> Tensor:
        if self.plan.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def place_dataset(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, str]:
        """The training images (uint8, N×C×H×W) and labels where batches are gathered from:
        on the GPU when they fit in a quarter of its free memory, else pinned host memory;
        unchanged on the CPU. Returns them with a line saying where they went."""
        device = self.plan.device
        if device.type != "cuda":
            return images, labels, ""
        need = images.numel() * images.element_size() + labels.numel() * labels.element_size()
        free, _total = torch.cuda.mem_get_info(device)
        if need <= free // 4:
            return images.to(device), labels.to(device), f"dataset on the GPU ({need / 2**20:.0f} MiB)"
        return images.pin_memory(), labels.pin_memory(), "dataset in pinned host memory"

    @staticmethod
    def gather(images: Tensor, idx: Tensor, device: torch.device) -> Tensor:
        """images[idx] on `device`: a gather on the device when the images are there, a pinned
        gather and an asynchronous copy when they are pinned, plain indexing on the CPU."""
        if images.device == device or images.device.type == device.type:
            return images[idx.to(images.device)]
        rows = images[idx]
        if images.is_pinned():
            rows = rows.pin_memory()
        return rows.to(device, non_blocking=True)


def use_fused_adam(optimizers, enable: bool) -> None:
    """Switch the Adam optimizers to the fused implementation, or back to the default a family
    built them with (also undoing a `fused` flag that a checkpoint from a GPU carried to a CPU).
    The fused kernels keep the step count on the parameter's device: a resumed state's is moved."""
    for optimizer in optimizers:
        if not isinstance(optimizer, torch.optim.Adam):
            continue
        for group in optimizer.param_groups:
            group["fused"] = True if enable else None
        optimizer.defaults["fused"] = True if enable else None
        for param, state in optimizer.state.items():
            if enable and isinstance(state.get("step"), Tensor):
                state["step"] = state["step"].to(param.device, torch.float32)


def trained_modules(family: Family) -> list[nn.Module]:
    """The networks whose parameters an optimizer steps (not EMA copies or buffers)."""
    stepped = {id(p) for opt in family.optimizers().values() for g in opt.param_groups for p in g["params"]}
    return [m for m in family.networks().values() if any(id(p) in stepped for p in m.parameters())]


def is_out_of_memory(exc: BaseException) -> bool:
    """A device out-of-memory error (CUDA's, or any accelerator's via torch.OutOfMemoryError)."""
    kinds = tuple(k for k in (getattr(torch, "OutOfMemoryError", None),
                              getattr(torch.cuda, "OutOfMemoryError", None)) if k is not None)
    return isinstance(exc, kinds)


def free_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
