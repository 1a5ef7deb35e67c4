"""One process of a torchrun job for tests/core/test_distributed.py (not a test itself).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/core/dist_worker.py JOBS.json

JOBS.json is a list of {"settings": TrainSettings JSON, "out": run folder, "resume": bool,
"dump": folder}; each job trains through the real Trainer under the process group and every rank
writes its final weights and buffers to dump/rank{R}.pt, so the test can compare the replicas."""

import json
import sys
from pathlib import Path

import torch

from genstudio.core.runs.run import TrainSettings
from genstudio.core.runtime.distributed import Distributed, end_process
from genstudio.core.runtime.training import SamplesReady, Trainer


def skip_slow_sampling(trainer: Trainer) -> None:
    """End-of-run sample grids of iterative samplers (200 Langevin steps, a DDIM chain) are
    not under test here and are the slow part of these tiny runs."""
    if trainer.settings.family in ("ebm", "diffusion"):
        trainer.sample_grid = lambda cancel=None, progress=None: SamplesReady(trainer.step, None, "")


def main() -> int:
    jobs = json.loads(Path(sys.argv[1]).read_text())
    distributed = Distributed.from_env("cpu", timeout_s=120)
    assert distributed is not None and distributed.world_size > 1
    finished = False
    try:
        for job in jobs:
            settings = TrainSettings.from_json(job["settings"])
            trainer = Trainer(settings, job["out"], resume=job["resume"], distributed=distributed)
            skip_slow_sampling(trainer)
            for _event in trainer.run():
                pass
            dump = Path(job["dump"])
            dump.mkdir(parents=True, exist_ok=True)
            state = {f"{name}.{key}": t.detach().cpu().clone()
                     for name, module in trainer.family.networks().items()
                     for key, t in module.state_dict().items()}
            torch.save({"state": state, "generator": trainer.generator.get_state(), "step": trainer.step},
                       dump / f"rank{distributed.rank}.pt")
        finished = True
    finally:
        distributed.close(finished)
    return 0


if __name__ == "__main__":
    end_process(main())  # as `python -m genstudio` does under torchrun
