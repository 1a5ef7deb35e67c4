"""Abandoning a train step part-way, so that Pause and Stop answer within a fraction of a step.

A step at batch 64 on a CPU can take seconds (a PixelCNN's), and a loop that looks at its flags
only between steps answers that late. While a step is armed, StepInterrupter looks at a flag
before every module's forward, when the family starts a backward pass (between a loss and its
gradient lie ops no module hook sees, such as a 256-way softmax over every subpixel) and
whenever backward reaches a module's output, and raises StepInterrupted when the flag is up.
The trainer then undoes what the partial step changed and pauses (doing the whole step again
after Resume) or stops (saving the last whole step).

What a partial step can have changed, and how it is undone:
- the training generator and torch's global RNG: their states are taken before the step and
  put back;
- module buffers (BatchNorm running statistics, spectral norm's power-iteration vectors, a
  flow's actnorm flag): copied before the step and put back. `Family.step_state_modules`
  names the modules (an EBM leaves out its replay buffer, which it writes only after its
  optimizer step);
- parameters and optimizer state: never touched by an interrupted step, because the
  interrupter stands down at the first optimizer step (the step runtime tells it,
  core/runtime/step_runtime.py), and from there the step runs to its end. A GAN's generator update
  follows its discriminator's, so an interrupt can land only in the discriminator's half;
- gradients: left half-accumulated, which is harmless: every family zeroes them before its
  backward.
So a paused step done again gives, bit for bit, what an uninterrupted run gives
(tests/core/test_interrupt.py checks every family).

Armed only for slow steps (the previous one took longer than `SLOW_STEP_SECONDS`, or there was
none): a fast step ends soon anyway, and it should not pay for hooks and copies.

Looks spaced out (`check_spacing`): a step made of many small passes (an EBM's Langevin chain)
would look far more often than Pause needs, and the hooks' Python calls cost time. After the
first armed step has run to its end the interrupter knows its mean time between looks, and from
then on hooks only every k-th module of each network (its first always), k chosen so the mean
gap is about `check_spacing`. Every k-th in the order the step first calls them, not the order
the network defines them: a PixelCNN defines each layer's vertical and horizontal convolutions
side by side but runs all vertical ones before any horizontal one, so every 2nd by definition
would leave its whole horizontal stack without a look.

What these cost and how fast Pause answers, measured: docs/performance.md.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from ..families.base import Family

# Steps shorter than this are never interrupted: they end about as soon as an interrupt would
# take effect, and arming costs a few percent of a short step (measured 2-5% on a VAE or GAN
# step of 80-110 ms on two cores), while the latency target is 250 ms.
SLOW_STEP_SECONDS = 0.2
# The mean time between looks the trainer asks for. The longest gap in a step is a few times its
# mean (the biggest layer's backward), which keeps Pause well inside 250 ms; looking more often
# than this buys nothing a person notices and costs Python calls.
CHECK_SPACING_SECONDS = 0.01
LOSS_GRAPH_NODES = 24     # autograd nodes next to a loss that get a check of their own


def weighted_modules(network: nn.Module) -> list[nn.Module]:
    """The modules that hold weights of their own, in order: where a step's work is, and so
    where the hooks go (hooking every activation and container too made a flow step 4% slower,
    three Python calls per module)."""
    return [m for m in network.modules() if next(m.parameters(recurse=False), None) is not None]


def _let_autograd_drop_the_abandoned_graph() -> None:
    """A backward cut short by a hook's exception leaves autograd's engine holding part of the
    graph on this thread, saved activations included, until the thread's next backward, and the
    step taken again after a pause then grows the heap into fresh pages (docs/performance.md). A
    backward of one number, right away, lets it go."""
    torch.zeros((), requires_grad=True).backward()


class StepInterrupted(Exception):
    """Raised inside a train step when the loop was asked to pause or stop."""


class StepInterrupter:
    """Makes a family's train steps abandonable while `should_interrupt()` is true.

        interrupter = StepInterrupter(family, lambda: control.paused or control.stop_requested)
        family.step_runtime = StepRuntime(interrupter=interrupter)   # its backward and step call it
        with interrupter.step(generator, arm=last_step_seconds > SLOW_STEP_SECONDS):
            metrics = family.train_step(x, labels, generator)   # may raise StepInterrupted

    The hooks act only on the thread that entered `step`, so another thread using the same
    modules (there is none today) is never interrupted. With `check_spacing` > 0 the hooks
    thin out after the first whole armed step (module docstring); 0 keeps every one, so the
    looks of a step do not depend on timing."""

    def __init__(self, family: Family, should_interrupt: Callable[[], bool], check_spacing: float = 0.0):
        self.family = family
        self.should_interrupt = should_interrupt
        self.checks = 0           # flag looks while armed (tests use it to place an interrupt)
        self.check_spacing = check_spacing
        # Hook every stride-th weighted module of each network; None: not measured yet.
        self.stride: int | None = 1 if check_spacing <= 0 else None
        self._armed_thread: int | None = None
        self._handles: list = []
        self._call_order: dict[nn.Module, None] = {}  # hooked modules by first call, while measuring

    # -- the step ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def step(self, generator: torch.Generator, arm: bool = True) -> Iterator[None]:
        """Run one train step inside the block; on StepInterrupted the state the step changed
        is put back before the exception leaves the block."""
        if not arm:
            self._remove_hooks()
            yield
            return
        self._install_hooks()
        rng = generator.get_state(), torch.get_rng_state()
        buffers = [(b, b.clone()) for m in self.family.step_state_modules() for b in m.buffers()]
        self._armed_thread = threading.get_ident()
        looks, started = self.checks, time.perf_counter()
        try:
            yield
        except StepInterrupted:
            with torch.no_grad():
                for live, saved in buffers:
                    live.copy_(saved)
            _let_autograd_drop_the_abandoned_graph()
            generator.set_state(rng[0])
            torch.set_rng_state(rng[1])
            raise
        finally:
            self._armed_thread = None
        if self.stride is None:
            self._space_checks(time.perf_counter() - started, self.checks - looks)

    @contextlib.contextmanager
    def watching(self, should_interrupt: Callable[[], bool]) -> Iterator[None]:
        """Hooks armed, with their own flag, for work that changes no training state (a sample
        grid): the block raises StepInterrupted at the next module boundary once
        `should_interrupt()` is true. Nothing is undone; the caller drops the work."""
        self._install_hooks()
        previous, self.should_interrupt = self.should_interrupt, should_interrupt
        self._armed_thread = threading.get_ident()
        try:
            yield
        finally:
            self._armed_thread = None
            self.should_interrupt = previous

    def close(self) -> None:
        """Remove every hook (safe to call more than once)."""
        self._remove_hooks()

    # -- called by the step runtime (core/runtime/step_runtime.py) -----------------------------------
    def before_backward(self, loss: Tensor) -> None:
        """A look before a backward pass, and looks on the first nodes of the loss's graph."""
        self._check()
        if self._armed_thread == threading.get_ident():
            self._hook_loss_graph(loss)

    def stand_down(self) -> None:
        """Before an optimizer step: the weights change now, so the step runs to its end."""
        if self._armed_thread == threading.get_ident():
            self._armed_thread = None

    # -- hooks ------------------------------------------------------------------------------
    def _check(self) -> None:
        if self._armed_thread is not None and threading.get_ident() == self._armed_thread:
            self.checks += 1
            if self.should_interrupt():
                raise StepInterrupted

    def _before_forward(self, module: nn.Module, args) -> None:
        if self.stride is None and self._armed_thread == threading.get_ident():
            self._call_order.setdefault(module)
        self._check()

    def _after_forward(self, module: nn.Module, args, output) -> None:
        if self._armed_thread is None:
            return
        self._check()  # the next module may be far: a PixelCNN's head is followed by its loss
        # A check when backward reaches this output too: backward takes about twice the forward.
        if isinstance(output, (tuple, list)):  # e.g. a flow layer's (y, log-determinant)
            output = next((t for t in output if isinstance(t, Tensor)), None)
        if isinstance(output, Tensor) and output.requires_grad:
            output.register_hook(self._check_in_backward)

    def _check_in_backward(self, grad: Tensor) -> None:
        self._check()

    def _hook_loss_graph(self, loss: Tensor) -> None:
        """Checks on the first nodes of the loss's graph too: between the loss and the last
        module's output lie ops no module hook sees (a PixelCNN's gather and 256-way log-softmax
        over every subpixel: 0.3 s of backward at batch 64 on two cores)."""
        if loss.grad_fn is None:
            return
        queue, seen = [loss.grad_fn], {loss.grad_fn}
        while queue and len(seen) <= LOSS_GRAPH_NODES:
            node = queue.pop(0)
            node.register_prehook(self._check_at_node)
            for child, _ in node.next_functions:
                if child is not None and child not in seen:
                    seen.add(child)
                    queue.append(child)

    def _check_at_node(self, grad_outputs) -> None:
        self._check()

    def _space_checks(self, seconds: float, looks: int) -> None:
        """Choose the stride from a whole armed step taken with every module hooked: the first
        step, often slower than the rest (allocations, a flow's actnorm set-up), so the gaps
        it shows are if anything too long and the stride errs towards more looks."""
        mean_gap = seconds / max(looks, 1)
        self.stride = max(1, int(self.check_spacing / mean_gap))
        if self.stride > 1:
            self._remove_hooks()  # the next armed step installs the thinned set

    def _in_call_order(self, modules: list[nn.Module]) -> list[nn.Module]:
        """`modules` in the order the measured step first called them; any it did not call
        after, in their own order."""
        wanted = set(modules)
        called = [m for m in self._call_order if m in wanted]
        return called + [m for m in modules if m not in self._call_order]

    def _install_hooks(self) -> None:
        if self._handles:
            return
        for network in self.family.networks().values():
            modules = weighted_modules(network)
            if (self.stride or 1) > 1:
                modules = self._in_call_order(modules)
            for module in modules[:: self.stride or 1]:
                self._handles.append(module.register_forward_pre_hook(self._before_forward))
                self._handles.append(module.register_forward_hook(self._after_forward))

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
