"""GPU figures, in one command on a machine with a CUDA GPU:

    python -m benchmarks.gpu                      # every section, every family
    python -m benchmarks.gpu --only throughput --families vae,diffusion --batch 1024

Sections:
  peak        the bf16 matrix-product rate this GPU reaches (8192³, random data): the
              yardstick for model-FLOP utilisation beside the datasheet figure.
  throughput  training images/s per family at a large batch through the real Trainer (data on
              the GPU, channels_last), in fp32 and with the default mixed precision, and with
              cuDNN's autotuner on; model FLOPs per step counted by torch's FlopCounterMode on
              one step (matrix products and convolutions, forward and backward) and the
              model-FLOP utilisation that gives. A sample grid per family is saved.
  memory      peak GPU memory per family at the default batch (64): model, optimizer state,
              activations and the dataset held on the GPU.
  oom         a run whose batch does not fit (memory capped with
              set_per_process_memory_fraction) lowers its batch, says so and finishes.
  nccl        the multi-process code path on NCCL in a world of one process (one GPU cannot
              hold two NCCL ranks): gradient all-reduce, metric means, state broadcast and the
              BatchNorm statistics sync run for real; the weights must match a single process.
  compile     images/s with torch.compile for the families named in --compile (slow to start).
  learn       each family trained for --learn-seconds at batch 256 in the default mixed precision,
              then 16 samples (one row per family in gpu-learned.png) and the held-out figure of
              the final evaluation: does the fast path learn, not only run?

Every figure is measured in this run and printed; nothing is stored or assumed.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import print_table
from genstudio.core.families import ImageSpec, available_families, create_family
from genstudio.core.runs.run import TrainSettings
from genstudio.core.runtime.accel import Acceleration, plan_for
from genstudio.core.runtime.training import BatchLowered, StepLogged, Trainer, TrainingFinished

FAMILIES = available_families()
SECTIONS = ("peak", "throughput", "memory", "oom", "nccl", "compile", "learn")
DEVICE = "cuda"  # --smoke-on-cpu: the throughput section on the CPU, to prove the script runs
# Dense bf16 tensor-core rate by the vendor's datasheet (SXM parts), for the MFU column.
DATASHEET_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def matmul_peak(n: int = 8192, repeats: int = 10) -> float:
    """FLOP/s of an n³ bf16 matrix product on random data (mean of `repeats` after warm-up)."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n**3 * repeats / (start.elapsed_time(end) / 1000)


class FlopCount:
    """Counts the model FLOPs of the aten ops run inside it, with torch's own per-op formulas
    (matrix products, convolutions, attention; forward and backward). A bare dispatch mode,
    not FlopCounterMode, whose per-module tracking breaks torch.autograd.grad on a leaf (the
    EBM's Langevin steps)."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry

        counter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                formula = flop_registry.get(func._overloadpacket)
                if formula is not None:
                    counter.total += formula(*args, **kwargs, out_val=out)
                return out

        self.total = 0
        self._mode = _Mode()

    def __enter__(self) -> FlopCount:
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)


def flops_per_step(family: str, size: int, batch: int, precision: str) -> float:
    """Model FLOPs of one train step (forward and backward of every matrix product and
    convolution the step runs), counted on a fresh model after one uncounted step."""
    device = torch.device(DEVICE)
    model = create_family(family, ImageSpec(3, size), {}, device, 0)
    accel = Acceleration(plan_for(device, model, precision), model)
    model.step_runtime = accel.step_runtime()
    model.train_mode()
    generator = torch.Generator(device=device).manual_seed(0)
    x = accel.batch_layout(torch.rand(batch, 3, size, size, device=device))
    with model.step_runtime.autocast():
        model.train_step(x, None, generator)  # a flow initialises actnorm on its first step
    with FlopCount() as counter, model.step_runtime.autocast():
        model.train_step(x, None, generator)
    return float(counter.total)


def train(settings: TrainSettings, home: Path, warmup: int) -> tuple[float, Trainer, list]:
    """images/s of a real Trainer run after `warmup` steps (every step logs; each step's
    metrics are read with .item(), so the clock sees finished GPU work)."""
    trainer = Trainer(settings, str(home / f"{settings.family}-{time.monotonic_ns()}"))
    marks: dict[int, float] = {}
    events = []
    for event in trainer.run():
        if isinstance(event, StepLogged):
            marks[event.step] = time.perf_counter()
        elif isinstance(event, (BatchLowered, TrainingFinished)):
            events.append(event)
    last = max(marks)
    return (last - warmup) * settings.batch / (marks[last] - marks[warmup]), trainer, events


def throughput(args, families, home: Path, peak: float) -> None:
    from genstudio.core.runs.images import make_grid, save_png, to_uint8

    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    datasheet = next((v for k, v in DATASHEET_BF16.items() if k in name), None)
    rows, grids = [], []
    for family in families:
        base = TrainSettings(family=family, data=args.data, size=args.size, batch=args.batch,
                             steps=args.warmup + args.steps, device=DEVICE, log_every=1, sample_every=0,
                             checkpoint_every=0, eval_images=0, grid_samples=1)
        figures = {}
        for label, precision, autotune in (("fp32", "fp32", False), ("amp", "auto", False),
                                           ("amp+cudnn", "auto", True)):
            torch.backends.cudnn.benchmark = autotune
            settings = TrainSettings(**{**base.to_json(), "precision": precision})
            ips, trainer, _ = train(settings, home, args.warmup)
            figures[label] = (ips, trainer.accel.plan.describe())
            if label == "amp+cudnn":
                trainer.family.eval_mode()
                grids.append(to_uint8(trainer.family.sample(16, seed=0)))
            del trainer
            torch.cuda.empty_cache()
        torch.backends.cudnn.benchmark = False
        flops = flops_per_step(family, args.size, args.batch, "auto")
        best = max(figures["amp"][0], figures["amp+cudnn"][0])
        achieved = flops * best / args.batch
        rows.append([family, f"{figures['fp32'][0]:,.0f}", f"{figures['amp'][0]:,.0f} ({figures['amp'][1]})",
                     f"{figures['amp+cudnn'][0]:,.0f}", f"{flops / args.batch / 1e9:.2f}",
                     f"{achieved / 1e12:.1f}", f"{achieved / peak:.1%}",
                     "-" if datasheet is None else f"{achieved / datasheet:.1%}"])
        print(f"  {family}: done", flush=True)
    print_table(f"training images/s at batch {args.batch}, {args.size} px, {args.data} ({args.steps} steps after "
           f"{args.warmup}); MFU = model FLOP/s over the measured bf16 peak ({peak / 1e12:.0f} TFLOP/s) and "
           f"the datasheet's",
           ["family", "fp32", "mixed precision", "+cudnn autotune", "GFLOP/image", "TFLOP/s", "MFU (measured)",
            "MFU (datasheet)"], rows)
    if grids and args.out:
        rows_of_grids = [make_grid(g, columns=16) for g in grids]
        save_png(Path(args.out) / "gpu-samples.png", np.concatenate(rows_of_grids, axis=0), {})
        print(f"samples after {args.warmup + args.steps} steps at batch {args.batch}, one row per family "
              f"({', '.join(families)}): {Path(args.out) / 'gpu-samples.png'}")


def memory(args, families, home: Path) -> None:
    rows = []
    for family in families:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        settings = TrainSettings(family=family, data=args.data, size=args.size, batch=64, steps=10,
                                 device="cuda", log_every=1, sample_every=0, checkpoint_every=0,
                                 eval_images=0, grid_samples=1)
        trainer = Trainer(settings, str(home / f"mem-{family}"))
        before = torch.cuda.max_memory_allocated()
        for _ in trainer.run():
            pass
        rows.append([family, f"{trainer.family.num_parameters() / 1e6:.2f}",
                     f"{before / 2**20:.0f}", f"{torch.cuda.max_memory_allocated() / 2**20:.0f}",
                     trainer.placement])
        del trainer
    print_table(f"peak GPU memory at the default batch (64, {args.size} px, default precision)",
           ["family", "parameters (M)", "after set-up MiB", "peak while training MiB", "data"], rows)


def oom(args, home: Path) -> None:
    """Cap this process's GPU memory and train a batch that cannot fit: the run must lower its
    batch (BatchLowered events), go on, and finish every step."""
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    cap = 3 * 2**30
    torch.cuda.set_per_process_memory_fraction(cap / total)
    try:
        settings = TrainSettings(family="diffusion", data=args.data, size=args.size, batch=16384, steps=4,
                                 device="cuda", log_every=1, sample_every=0, checkpoint_every=0,
                                 eval_images=0, grid_samples=1)
        started = time.perf_counter()
        trainer, events = _run_all(settings, home)
        lowered = [e for e in events if isinstance(e, BatchLowered)]
        finished = [e for e in events if isinstance(e, TrainingFinished)]
        print(f"\n## out of GPU memory (diffusion, batch 16,384, memory capped at {cap / 2**30:.0f} GiB)")
        for e in lowered:
            print(f"  {e.message}")
        print(f"  finished: {finished[-1].reason if finished else 'NO'} at step "
              f"{finished[-1].step if finished else '-'} with batch {trainer.settings.batch}, "
              f"{time.perf_counter() - started:.1f} s")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


def _run_all(settings: TrainSettings, home: Path) -> tuple[Trainer, list]:
    trainer = Trainer(settings, str(home / f"oom-{time.monotonic_ns()}"))
    events = [e for e in trainer.run() if isinstance(e, (BatchLowered, TrainingFinished))]
    return trainer, events


def nccl(args, home: Path) -> None:
    """NCCL in a world of one: the distributed code path for real, compared with one process."""
    import torch.distributed as dist

    from genstudio.core.runtime.distributed import Distributed

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    rows = []
    try:
        for family in ("vae", "gan"):  # the GAN's generator has BatchNorm: the statistics sync runs
            settings = TrainSettings(family=family, data=args.data, size=args.size, batch=64, steps=20,
                                     device="cuda", log_every=5, sample_every=0, checkpoint_every=0,
                                     eval_images=0, grid_samples=1, precision="fp32")
            states = []
            for distributed in (Distributed(0, 1, 0, "nccl"), None):
                torch.backends.cudnn.deterministic = True
                trainer = Trainer(settings, str(home / f"nccl-{family}-{time.monotonic_ns()}"),
                                  distributed=distributed)
                for _ in trainer.run():
                    pass
                states.append({k: v.detach().float().cpu() for k, v in
                               trainer.family.networks()[next(iter(trainer.family.networks()))].state_dict().items()
                               if v.is_floating_point()})
            diff = max((states[0][k] - states[1][k]).abs().max().item() for k in states[0])
            rows.append([family, str(len(states[0])), f"{diff:.3g}"])
    finally:
        dist.destroy_process_group()
        torch.backends.cudnn.deterministic = False
    print_table("NCCL, one process, 20 steps fp32: max |weight difference| against a single-process run",
           ["family", "tensors compared", "max abs diff"], rows)


def compiled(args, home: Path) -> None:
    rows = []
    for family in args.compile:
        settings = TrainSettings(family=family, data=args.data, size=args.size, batch=args.batch,
                                 steps=args.warmup + args.steps, device="cuda", log_every=1, sample_every=0,
                                 checkpoint_every=0, eval_images=0, grid_samples=1)
        plain, _, _ = train(settings, home, args.warmup)
        started = time.perf_counter()
        ips, _, _ = train(TrainSettings(**{**settings.to_json(), "compile": True}), home, args.warmup)
        rows.append([family, f"{plain:,.0f}", f"{ips:,.0f}", f"{time.perf_counter() - started:.0f}"])
    print_table(f"torch.compile at batch {args.batch} (mixed precision)",
           ["family", "eager images/s", "compiled images/s", "compiled run s (incl. compiling)"], rows)


def learn(args, families, home: Path) -> None:
    import threading

    from genstudio.core.metrics.evaluate import describe_evaluation
    from genstudio.core.runs.images import save_png
    from genstudio.core.runtime.training import Evaluated, SamplesReady, TrainingControl

    rows, grids = [], []
    for family in families:
        settings = TrainSettings(family=family, data=args.data, size=args.size, batch=256, steps=10**6,
                                 device="cuda", log_every=50, sample_every=0, checkpoint_every=0,
                                 eval_images=256, grid_samples=16)
        trainer = Trainer(settings, str(home / f"learn-{family}"))
        control = TrainingControl()
        timer = threading.Timer(args.learn_seconds, control.stop)
        timer.start()
        figures, grid, started = {}, None, time.perf_counter()
        for event in trainer.run(control):
            if isinstance(event, SamplesReady):
                grid = event.grid
            elif isinstance(event, Evaluated):
                figures = event.figures
        timer.cancel()
        rows.append([family, f"{trainer.step:,}", f"{time.perf_counter() - started:.0f}",
                     describe_evaluation(figures) if figures else "-"])
        if grid is not None:
            grids.append(grid)
        print(f"  {family}: {trainer.step} steps", flush=True)
    print_table(f"trained {args.learn_seconds:.0f} s each at batch 256 on the GPU (mixed precision), then evaluated "
           f"on 256 held-out images", ["family", "steps", "s in all", "held-out figures"], rows)
    if grids and args.out:
        width = max(g.shape[1] for g in grids)
        padded = [np.pad(g, ((0, 4), (0, width - g.shape[1]), (0, 0))) for g in grids]
        save_png(Path(args.out) / "gpu-learned.png", np.concatenate(padded, axis=0), {})
        print(f"16 samples per family, one grid each ({', '.join(families)}), top to bottom: "
              f"{Path(args.out) / 'gpu-learned.png'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS))
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--data", default="builtin:shapes")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--compile", default="vae", help="families to time with torch.compile")
    parser.add_argument("--out", default="", help="folder for the sample grid")
    parser.add_argument("--learn-seconds", type=float, default=20.0)
    parser.add_argument("--smoke-on-cpu", action="store_true", help="throughput only, on the CPU, tiny")
    args = parser.parse_args()
    if args.smoke_on_cpu:
        global DEVICE
        DEVICE = "cpu"
        args.batch, args.steps, args.warmup = 8, 3, 1
        home = Path(tempfile.mkdtemp(prefix="genstudio-gpu-"))
        os.environ["GENSTUDIO_HOME"] = str(home / "data")
        throughput(args, [f for f in args.families.split(",") if f], home, float("nan"))
        return 0
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to measure")
        return 1
    only = set(args.only.split(","))
    families = [f for f in args.families.split(",") if f]
    args.compile = [f for f in args.compile.split(",") if f]
    home = Path(tempfile.mkdtemp(prefix="genstudio-gpu-"))
    os.environ["GENSTUDIO_HOME"] = str(home / "data")
    props = torch.cuda.get_device_properties(0)
    print(f"# genstudio GPU figures: {torch.cuda.get_device_name()}, {props.total_memory / 2**30:.0f} GiB, "
          f"torch {torch.__version__}, CUDA {torch.version.cuda}, bf16 {torch.cuda.is_bf16_supported()}, "
          f"{os.cpu_count()} CPUs", flush=True)
    peak = matmul_peak() if only & {"peak", "throughput"} else float("nan")
    if "peak" in only:
        print(f"bf16 8192³ matrix product: {peak / 1e12:.0f} TFLOP/s", flush=True)
    sections = [("throughput", lambda: throughput(args, families, home, peak)),
                ("memory", lambda: memory(args, families, home)),
                ("oom", lambda: oom(args, home)),
                ("nccl", lambda: nccl(args, home)),
                ("compile", lambda: compiled(args, home)),
                ("learn", lambda: learn(args, families, home))]
    failed = 0
    for name, section in sections:
        if name not in only:
            continue
        started = time.perf_counter()
        try:
            section()
        except Exception:  # one broken section must not hide the others' figures
            import traceback

            failed += 1
            print(f"\n## {name}: FAILED\n{traceback.format_exc()}", flush=True)
        print(f"({name}: {time.perf_counter() - started:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
