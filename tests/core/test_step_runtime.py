"""The step runtime (core/runtime/step_runtime.py) runs its parts in the order its docstring gives, and
with no parts is a family's plain loss.backward() and optimizer.step()."""

import torch

from genstudio.core.runtime.step_runtime import StepRuntime


class _Recording:
    """Stands in for the interrupter and the guard, recording when the runtime calls them."""

    def __init__(self, calls):
        self.calls = calls

    def before_backward(self, loss):
        self.calls.append("interrupt check")

    def stand_down(self):
        self.calls.append("interrupter stands down")

    def step(self, optimizer):
        self.calls.append("guarded optimizer step")
        optimizer.step()


def test_the_parts_run_in_the_documented_order():
    calls = []
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=0.5)
    parts = _Recording(calls)
    runtime = StepRuntime(reduce=lambda opt: calls.append(("all-reduce sees", weight.grad.tolist())),
                          guard=parts, interrupter=parts)
    runtime.backward((3 * weight).sum(), optimizer)
    runtime.step(optimizer)
    assert calls == ["interrupt check", ("all-reduce sees", [3.0, 3.0]),  # after the backward
                     "interrupter stands down", "guarded optimizer step"]
    assert weight.tolist() == [-0.5, -0.5]


def test_without_parts_it_is_the_plain_calls():
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=0.5)
    runtime = StepRuntime()
    runtime.backward((3 * weight).sum(), optimizer)
    assert weight.grad.tolist() == [3.0, 3.0]
    runtime.step(optimizer)
    assert weight.tolist() == [-0.5, -0.5]
