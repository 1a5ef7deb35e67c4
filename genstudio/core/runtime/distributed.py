"""Data-parallel training over several processes: `torchrun --nproc_per_node=N -m genstudio train …`.

gloo on the CPU, NCCL on CUDA (one GPU per process, chosen by LOCAL_RANK). The run's `--batch`
is the *global* batch: every process computes the same global batch order (the seeded
per-epoch permutation of `Trainer.batch_indices`) and trains on its own disjoint slice of rows,
[rank·B/N, (rank+1)·B/N). Only rank 0 writes the run directory (config, metrics, samples,
checkpoints, evaluations); the other ranks only compute.

How gradients are combined, and why not `torch.nn.parallel.DistributedDataParallel`
------------------------------------------------------------------------------------
DDP wraps one module whose forward runs once per backward. The families do not fit that
shape: a GAN steps two optimizers per train step and scores its discriminator two or three
times per backward (real and fake, the gradient penalty's double backward, the generator's loss
through a frozen D); an EBM runs tens of input-gradient passes through its network (SGLD) before
the loss; a flow initialises actnorm from the first batch. DDP's reducer would need
find_unused_parameters / static-graph workarounds for each of these, the wrapped modules would
rename every checkpoint key (`module.`), and every family would have to call its networks
through the wrappers. And the families clip their gradient norm before each optimizer step: the
clip must see the *global* gradient, which an optimizer-step hook would be too late for.

So the mechanism is the one DDP implements, made explicit at the one place every family already
goes through: `Family.backward(loss, optimizer)` calls the step runtime (core/runtime/step_runtime.py),
which runs loss.backward() and then, under torchrun, all-reduces the gradients of that optimizer's parameters (one flat, coalesced tensor
per dtype) and divides by the process count — before the family clips and steps. Every loss is
a mean over the batch, so the mean of the per-process gradients is the gradient of the global
batch's loss. Weights start identical (rank 0's state is broadcast) and every process applies
the same averaged gradient, so the replicas stay identical.

Randomness: every process holds the same training generator. Per-image noise (a VAE's ε, a
GAN's z, diffusion's t and ε, a flow's dequantisation noise, an EBM's chain starts and SGLD
noise) is drawn for the whole global batch and each process keeps its rows
(`BatchShard.draw`), so each image sees the noise it would see in a single process, and the
generator's state — checkpointed by rank 0 — does not depend on the process count. That, with
the step-indexed data order, is why a run resumes across a change of process count. A flow's
actnorm initialisation and an EBM's replay buffer gather every process's rows (`BatchShard.gather`),
so they too match a single process.

What is not identical to one process: the GAN generator's BatchNorm computes batch statistics
over each process's slice (as DDP does without SyncBatchNorm, which PyTorch supports only on
GPUs); its running statistics are averaged over the processes after each step so that the
replicas stay identical. Diffusion dropout (0 by default) draws its masks from the global torch
RNG per process. Apart from these, the multi-process result equals the single-process one up to
floating-point summation order (tests/core/test_distributed.py).

Stop requests (Ctrl+C / SIGTERM reach every process under torchrun) are agreed by an all-reduce
each step, so every process stops after the same step and rank 0 saves.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..families.base import BatchShard, Family

log = logging.getLogger(__name__)


def launched_by_torchrun() -> bool:
    """True when this process is one of several started by torchrun (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def end_process(code: int) -> NoReturn:
    """End this process of a torchrun job now, without the interpreter's teardown.

    After the process group is left, gloo's worker thread may still be releasing the last
    collective's work, whose tensors it hands back to Python under the GIL. If the interpreter
    is finalising by then, taking the GIL ends that thread inside the work's destructor and
    the process aborts after its work is done ("terminate called without an active
    exception"): 4 in about 49 two-process jobs beside the test suite's own. A core dump
    showed ProcessGroupGloo::runLoop in AsyncWork::~AsyncWork → take_gil → pthread_exit while
    the main thread ran Py_FinalizeEx (pytorch/pytorch#179291 describes the same race).
    Everything a run writes is written and closed by then; only buffered output is left."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    logging.shutdown()
    os._exit(code)


@dataclass
class Distributed:
    """This process's place in a multi-process run, and the collectives the trainer uses."""

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def comm_device(self) -> torch.device:
        """Where tensors must be for the backend's collectives."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    # -- setup ----------------------------------------------------------------------------------
    @classmethod
    def from_env(cls, device_preference: str = "auto", timeout_s: float = 1800) -> Distributed | None:
        """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE,
        LOCAL_RANK, MASTER_ADDR/PORT); None when this is a single process. NCCL when the run
        trains on CUDA (each process on GPU LOCAL_RANK), gloo otherwise."""
        if not launched_by_torchrun():
            return None
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device_preference == "cuda" or (device_preference == "auto" and torch.cuda.is_available())
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            if local_rank >= torch.cuda.device_count():
                raise RuntimeError(f"process {rank} needs GPU {local_rank}, but this machine has "
                                   f"{torch.cuda.device_count()}")
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend, rank=rank, world_size=world,
                                    timeout=datetime.timedelta(seconds=timeout_s))
        return cls(rank, world, local_rank, backend)

    def train_device(self, device: torch.device) -> torch.device:
        """The device this process trains on: its own GPU under NCCL."""
        if device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def attach(self, family: Family) -> None:
        """Give the family its slice of the global batch and the rows of the others."""
        family.batch_shard = BatchShard(self.rank, self.world_size, self.gather_rows)

    def close(self, finished: bool = True) -> None:
        """Leave the process group. After a run that ended normally (`finished`) every process
        first waits for the others: rank 0 alone samples, saves and evaluates at the end, and a
        gloo process that tore the group down and exited meanwhile aborted now and then
        ("terminate called without an active exception": 8 of 29 runs of the 2-process test
        jobs; what is left of that race, end_process avoids). After an error the others may
        never come, so then it does not wait."""
        if not dist.is_initialized():
            return
        try:
            if finished:
                self.barrier()
        except RuntimeError as exc:  # a peer gone or past the timeout: the work is done anyway
            log.warning("process %d left the run without its peers: %s", self.rank, exc)
        finally:
            dist.destroy_process_group()

    # -- data -----------------------------------------------------------------------------------
    def rows(self, global_indices: Tensor) -> Tensor:
        """This process's disjoint slice of the global batch's indices."""
        per = global_indices.shape[0] // self.world_size
        return global_indices[self.rank * per:(self.rank + 1) * per]

    # -- collectives ----------------------------------------------------------------------------
    def barrier(self) -> None:
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()

    def gather_rows(self, t: Tensor) -> Tensor:
        """Every process's t (same shape everywhere), concatenated in rank order along dim 0."""
        local = t.detach().contiguous()
        moved = local.to(self.comm_device)
        parts = [torch.empty_like(moved) for _ in range(self.world_size)]
        dist.all_gather(parts, moved)
        return torch.cat(parts).to(t.device)

    def average_(self, tensors: Iterable[Tensor]) -> None:
        """In place: each tensor becomes its mean over the processes (coalesced per dtype)."""
        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        for group in by_dtype.values():
            flat = torch.cat([t.reshape(-1) for t in group]).to(self.comm_device)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= self.world_size
            offset = 0
            for t in group:
                n = t.numel()
                t.copy_(flat[offset:offset + n].view_as(t))
                offset += n

    def reduce_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Average the gradients of the optimizer's parameters over the processes. Parameters
        without a gradient are skipped; every process runs the same code on the same shapes, so
        the set is the same on each."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            self.average_(grads)

    def any(self, flag: bool) -> bool:
        """True on every process when it is True on any (e.g. a stop request)."""
        t = torch.tensor([1.0 if flag else 0.0], device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def mean_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Each metric averaged over the processes: the global batch's figure for batch means."""
        keys = sorted(metrics)
        t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        means = dict(zip(keys, (t / self.world_size).tolist(), strict=True))
        return {k: means[k] for k in metrics}

    def broadcast_state(self, family: Family) -> None:
        """Rank 0's weights and buffers to every process, so all replicas start identical."""
        for module in family.networks().values():
            for t in [*module.parameters(), *module.buffers()]:
                moved = t.data.to(self.comm_device)
                dist.broadcast(moved, src=0)
                if moved is not t.data:
                    t.data.copy_(moved)

    def sync_batchnorm_statistics(self, family: Family) -> None:
        """Average BatchNorm running statistics (each process saw its own slice of the batch)."""
        stats = [t for module in family.networks().values() for m in module.modules()
                 if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
                 for t in (m.running_mean, m.running_var) if t is not None]
        if stats:
            self.average_(stats)


def has_batchnorm(family: Family) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._NormBase)
               for module in family.networks().values() for m in module.modules())
