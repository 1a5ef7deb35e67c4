"""Flow matching on the straight path from noise to data (Lipman et al. 2023; Liu et al. 2023,
rectified flow): the processes, as functions of any velocity field.

With x₀ ~ N(0, I) (noise) and x₁ a data point, the path is x_t = (1 − t)·x₀ + t·x₁ for t ∈ [0, 1],
whose velocity is x₁ − x₀. A network v(x, t) regressed on that target (the conditional flow
matching loss E‖v(x_t, t) − (x₁ − x₀)‖²) learns its conditional mean E[x₁ − x₀ | x_t], the
marginal velocity field, whose ODE dx/dt = v(x, t) carries N(0, I) at t = 0 to the data at t = 1.
So:
  * sampling integrates the ODE forward from noise (`integrate`, Euler, midpoint or Heun);
  * encoding integrates it backward from an image, and decoding forward again: an exact
    latent up to the solver's error;
  * the likelihood follows from the instantaneous change of variables (Chen et al. 2018),
    d log p_t(x_t)/dt = −div v(x_t, t), integrated backward beside x (`log_likelihood`), the
    divergence exactly (one backward pass per dimension) or by Hutchinson's estimator.

Every function takes the field as `velocity(x, t)` with t a (B,) float tensor, so the tests can
plug in the closed-form optimal field for Gaussian data in place of a network.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch import Tensor

# velocity(x_t, t) → dx/dt, the shape of x_t; t is a (B,) float tensor in [0, 1].
VelocityFn = Callable[[Tensor, Tensor], Tensor]
# Called after each solver step with (steps done, steps in all, the current x).
StepCallback = Callable[[int, int, Tensor], None]

SOLVERS = ("euler", "midpoint", "heun")
TIME_SAMPLINGS = ("logit-normal", "uniform")


# -- training: the path, its target and the pairs -------------------------------------------


def path_point(noise: Tensor, data: Tensor, t: Tensor) -> Tensor:
    """x_t = (1 − t)·x₀ + t·x₁, t of shape (B,)."""
    t = t.view(-1, *([1] * (data.dim() - 1)))
    return (1 - t) * noise + t * data


def target_velocity(noise: Tensor, data: Tensor) -> Tensor:
    """d x_t / dt along the straight path: x₁ − x₀, the same at every t."""
    return data - noise


def sample_times(n: int, kind: str, generator: torch.Generator, device: torch.device | str = "cpu") -> Tensor:
    """n training times in (0, 1): uniform, or logit-normal σ(N(0, 1)) (Esser et al. 2024),
    which spends the training on the middle of the path, where the target is least certain."""
    if kind == "uniform":
        return torch.rand(n, generator=generator, device=device)
    if kind == "logit-normal":
        return torch.sigmoid(torch.randn(n, generator=generator, device=device))
    raise ValueError(f"time sampling must be one of {', '.join(TIME_SAMPLINGS)}, not {kind!r}")


def flow_matching_loss(velocity: VelocityFn, noise: Tensor, data: Tensor, t: Tensor) -> Tensor:
    """The conditional flow matching loss: mean over the batch of ‖v(x_t, t) − (x₁ − x₀)‖²
    summed over each image's dimensions and divided by their number (a per-pixel MSE)."""
    error = velocity(path_point(noise, data, t), t) - target_velocity(noise, data)
    return error.pow(2).mean()


def optimal_assignment(cost: np.ndarray) -> np.ndarray:
    """The permutation p minimising Σᵢ cost[i, p[i]] over an (n, n) cost matrix, exactly:
    the Hungarian method with potentials (Kuhn 1955; Jonker & Volgenant's O(n³) form)."""
    n = cost.shape[0]
    if cost.shape != (n, n):
        raise ValueError(f"the cost matrix must be square, not {cost.shape}")
    u, v = np.zeros(n + 1), np.zeros(n + 1)          # potentials of rows and columns
    match = np.zeros(n + 1, dtype=np.int64)          # match[column] = row (1-based; 0: free)
    way = np.zeros(n + 1, dtype=np.int64)
    for row in range(1, n + 1):
        match[0], column = row, 0
        reach = np.full(n + 1, np.inf)
        used = np.zeros(n + 1, dtype=bool)
        while match[column]:                         # grow an alternating tree until a free column
            used[column] = True
            r = match[column]
            free = ~used[1:]
            reduced = cost[r - 1] - u[r] - v[1:]
            better = free & (reduced < reach[1:])
            reach[1:][better] = reduced[better]
            way[1:][better] = column
            candidates = np.where(free, reach[1:], np.inf)
            nxt = int(np.argmin(candidates)) + 1
            delta = candidates[nxt - 1]
            u[match[used]] += delta
            v[used] -= delta
            reach[1:][free] -= delta
            column = nxt
        while column:                                # flip the path back to the root
            previous = way[column]
            match[column] = match[previous]
            column = previous
    assignment = np.zeros(n, dtype=np.int64)
    assignment[match[1:] - 1] = np.arange(n)
    return assignment


def pair_by_transport(noise: Tensor, data: Tensor) -> Tensor:
    """The noise reordered so that pairing noise[i] with data[i] minimises the summed squared
    distance over the batch (minibatch optimal transport; Tong et al. 2024, Pooladian et al.
    2023): straighter paths, which a solver then follows in fewer steps."""
    cost = torch.cdist(data.flatten(1).double(), noise.flatten(1).double()).pow(2)
    return noise[torch.from_numpy(optimal_assignment(cost.cpu().numpy())).to(noise.device)]


# -- the ODE -----------------------------------------------------------------------------------


def integrate(velocity: VelocityFn, x: Tensor, t_from: float, t_to: float, steps: int,
              solver: Literal["euler", "midpoint", "heun"] = "heun", *,
              on_step: StepCallback | None = None) -> Tensor:
    """x at t_to, from x at t_from, along dx/dt = velocity(x, t) in `steps` equal steps
    (backward when t_to < t_from). Network evaluations: steps × (1 Euler, 2 midpoint or Heun)."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, not {solver!r}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    h = (t_to - t_from) / steps

    def field(state: Tensor, t: float) -> Tensor:
        return velocity(state, torch.full((state.shape[0],), t, dtype=state.dtype, device=state.device))

    for i in range(steps):
        t = t_from + i * h
        if solver == "euler":
            x = x + h * field(x, t)
        elif solver == "midpoint":
            x = x + h * field(x + 0.5 * h * field(x, t), t + 0.5 * h)
        else:  # Heun: the trapezoid of the slopes at both ends of an Euler step
            slope = field(x, t)
            x = x + 0.5 * h * (slope + field(x + h * slope, t + h))
        if on_step is not None:
            on_step(i + 1, steps, x)
    return x


# -- the likelihood ------------------------------------------------------------------------------


def exact_divergence(velocity: VelocityFn, x: Tensor, t: Tensor) -> Tensor:
    """div v(x, t) = Σ_d ∂v_d/∂x_d per sample, by one backward pass per dimension (small images)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = velocity(x, t).flatten(1)
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for d in range(v.shape[1]):
            (grad,) = torch.autograd.grad(v[:, d].sum(), x, retain_graph=d + 1 < v.shape[1])
            total = total + grad.flatten(1)[:, d]
    return total


def hutchinson_divergence(velocity: VelocityFn, x: Tensor, t: Tensor, probes: int,
                          generator: torch.Generator) -> Tensor:
    """(B, probes) unbiased estimates εᵀ (∂v/∂x) ε of div v with Rademacher ε (Hutchinson 1989;
    FFJORD, Grathwohl et al. 2019): one vector-Jacobian product per probe."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = velocity(x, t)
        estimates = []
        for k in range(probes):
            eps = torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
            (vjp,) = torch.autograd.grad(v, x, grad_outputs=eps, retain_graph=k + 1 < probes)
            estimates.append((vjp * eps).flatten(1).sum(1))
    return torch.stack(estimates, dim=1)


def standard_normal_log_density(x: Tensor) -> Tensor:
    d = x[0].numel()
    return -0.5 * x.flatten(1).pow(2).sum(1) - 0.5 * d * math.log(2 * math.pi)


def log_likelihood(velocity: VelocityFn, data: Tensor, steps: int,
                   divergence: Callable[[Tensor, Tensor], Tensor],
                   solver: Literal["euler", "midpoint", "heun"] = "heun") -> tuple[Tensor, Tensor]:
    """(log p₁(x₁) per sample in nats, x₀): the ODE integrated backward from the data to t = 0
    beside ∫₀¹ div v(x_t, t) dt, then log p₁(x₁) = log N(x₀; 0, I) − ∫₀¹ div v dt.

    `divergence(x, t)` → (B,): exact_divergence, or a Hutchinson estimate averaged over its
    probes (then the result is an estimate; its spread comes from calling it with other probes)."""
    batch = data.shape[0]

    def augmented(state: Tensor, t: Tensor) -> Tensor:
        x = state[:, :-1].view_as(data)
        return torch.cat([velocity(x, t).flatten(1), divergence(x, t)[:, None]], dim=1)

    start = torch.cat([data.flatten(1), torch.zeros(batch, 1, dtype=data.dtype, device=data.device)], dim=1)
    end = integrate(augmented, start, 1.0, 0.0, steps, solver)
    noise = end[:, :-1].view_as(data)
    # Integrated from 1 to 0, the last column holds ∫₁⁰ div dt = −∫₀¹ div dt.
    return standard_normal_log_density(noise) + end[:, -1], noise
