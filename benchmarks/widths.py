"""What a family's width costs at a larger image size: training images/s and arithmetic per
image at the defaults and at the widths a new run gets (Family.suggested_config).

    .venv/bin/python -m benchmarks.widths                          # every family, 32 and 64 px RGB
    .venv/bin/python -m benchmarks.widths --families vae,pixelcnn --sizes 32,64,128

Each figure is the family's own train_step on random images at the batch (no data loading, no
events; the C heap kept as training keeps it, core/runtime/memory.py), timed after two warm-up steps for
at least --seconds; the arithmetic is torch's count of
the matrix products and convolutions of one step, per image, relative to the defaults at the
first size. Run it with the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from benchmarks.common import print_table
from genstudio.core.families import ImageSpec, available_families, create_family, family_class
from genstudio.core.runtime.memory import keep_freed_memory


class FlopCount(TorchDispatchMode):
    """Floating-point operations of the matrix products and convolutions run inside it, by
    torch's own formulas (FlopCounterMode's module hooks break an EBM's autograd.grad)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if (count := flop_registry.get(func._overloadpacket)) is not None:
            self.total += count(*args, **kwargs, out_val=out)
        return out


def step_flops_per_image(name: str, spec: ImageSpec, knobs: dict) -> float:
    """Arithmetic of one training step of a fresh model, per image (batch 2)."""
    family = create_family(name, spec, knobs, device="cpu")
    with FlopCount() as flops:
        family.train_step(torch.rand(2, *spec.shape), None, torch.Generator().manual_seed(0))
    return flops.total / 2


def images_per_sec(name: str, spec: ImageSpec, knobs: dict, batch: int, seconds: float) -> float:
    family = create_family(name, spec, knobs, device="cpu")
    family.train_mode()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *spec.shape, generator=generator)
    with keep_freed_memory():
        for _ in range(2):
            family.train_step(x, None, generator)
        steps, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds or steps < 3:
            family.train_step(x, None, generator)
            steps += 1
    return steps * batch / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(available_families()))
    parser.add_argument("--sizes", default="32,64", help="image sides; the first is the reference")
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0, help="timed training per row")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for name in args.families.split(","):
        cls = family_class(name)
        reference = step_flops_per_image(name, ImageSpec(args.channels, sizes[0]), {})
        for size in sizes:
            spec = ImageSpec(args.channels, size)
            suggested = cls.suggested_config(spec, torch.device("cpu"))
            for knobs in [{}, suggested] if suggested else [{}]:
                described = "suggested: " + ", ".join(f"{k}={v}" for k, v in knobs.items()) if knobs else "defaults"
                rows.append([name, str(size), described,
                             f"{images_per_sec(name, spec, knobs, args.batch, args.seconds):.0f}",
                             f"{step_flops_per_image(name, spec, knobs) / reference:.2f}"])
                print(" | ".join(rows[-1]), flush=True)
    print_table(f"train_step, batch {args.batch}, {args.threads} threads, {args.channels} channels",
                ["family", "px", "widths", "images/s", f"arithmetic per image (× {sizes[0]} px defaults)"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
