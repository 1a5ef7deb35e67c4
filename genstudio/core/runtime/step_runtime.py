"""What runs around a family's own mathematics in a training step, in one visible order.

A family's `train_step` computes its loss and calls `self.backward(loss, optimizer)`, clips, and
calls `self.optimizer_step(optimizer)`. The trainer gives the family one StepRuntime, and those
two calls become, in this order:

    backward(loss, optimizer)
        1. interrupt check: Pause, Stop or the time limit abandon the step here (core/runtime/interrupt.py)
        2. loss.backward(), with autocast off; the loss scaled first under fp16 (core/runtime/accel.py)
        3. all-reduce of the gradients over the processes under torchrun (core/runtime/distributed.py)
        4. unscale under fp16, so that the family's clip measures true gradients
    step(optimizer)
        5. the interrupter stands down: the weights change from here, so the step runs to its end
        6. non-finite gradients skip the update (core/runtime/guard.py; under fp16 the scaler does it
           and lowers its scale)
        7. optimizer.step()

Each part is absent when it does nothing (one process, fp32, no interrupter), so on a CPU the
two calls are loss.backward() and optimizer.step() with a finiteness check between. A family
used on its own, without a trainer, has no runtime and makes exactly those plain calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .guard import DivergenceGuard
    from .interrupt import StepInterrupter


class StepRuntime:
    def __init__(self, *, scaler: torch.amp.GradScaler | None = None,
                 reduce: Callable[[torch.optim.Optimizer], None] | None = None,
                 autocast_device: str | None = None,
                 guard: DivergenceGuard | None = None,
                 interrupter: StepInterrupter | None = None):
        self.scaler = scaler
        self.reduce = reduce
        self.autocast_device = autocast_device  # set: backward runs with autocast off, as advised
        self.guard = guard
        # The trainer sets it while its loop runs (single process only); None: never abandoned.
        self.interrupter = interrupter

    def backward(self, loss: Tensor, optimizer: torch.optim.Optimizer) -> None:
        if self.interrupter is not None:
            self.interrupter.before_backward(loss)
        outside = (torch.autocast(device_type=self.autocast_device, enabled=False)
                   if self.autocast_device else contextlib.nullcontext())
        with outside:
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
        if self.reduce is not None:
            self.reduce(optimizer)   # scaled gradients average the same way: the op is linear
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.interrupter is not None:
            self.interrupter.stand_down()
        if self.scaler is not None:
            self.scaler.step(optimizer)  # skipped when unscale_ found inf/NaN
            # One update per optimizer step: a GAN steps D several times and G once per train
            # step, and unscale_ may run only once per optimizer between updates.
            self.scaler.update()
        elif self.guard is not None:
            self.guard.step(optimizer)
        else:
            optimizer.step()
