"""The run directory shared by the app and the CLI.

    RUN/config.json                settings, resolved family config, dataset, image spec
    RUN/checkpoint.safetensors     weights, optimizer, RNG, step (+ readable checkpoint.json)
    RUN/metrics.jsonl              one JSON object per logged step
    RUN/samples/                   sample grids written during training
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import write_text_atomic
from .checkpoint import CheckpointError, load_latest, move_state
from .device import select_device
from .families import Family, ImageSpec, create_family


@dataclass(frozen=True)
class TrainSettings:
    """Everything that defines a training run (stored in config.json)."""

    family: str = "vae"
    data: str = "builtin:shapes"   # a folder or builtin:NAME
    size: int = 32                 # square image side in px
    channels: int | None = None    # 1 or 3; None: from the data (1 if every image is grey)
    steps: int = 3000              # total steps of the run; a resumed run continues to this
    batch: int = 64
    seed: int = 0                  # initial weights, data order and training noise
    device: str = "auto"           # auto (cuda → mps → cpu), cpu, cuda or mps
    conditional: bool = False      # condition on class subfolders when the family can
    family_config: dict[str, Any] = field(default_factory=dict)  # the family's own knobs
    log_every: int = 10            # steps between metric records
    sample_every: int = 250        # steps between sample grids (0: only at the end)
    checkpoint_every: int = 500    # steps between checkpoints (0: only at the end / on stop)
    grid_samples: int = 64         # images in each sample grid
    eval_images: int = 256         # held-out images each evaluation measures against (0: no evaluation)
    eval_every: int = 500          # steps between evaluations during training (0: only when the run ends)
    eval_metrics: tuple[str, ...] = ("bpd",)  # any of genstudio.core.metrics.evaluate.METRICS
    eval_samples: int = 256        # generated images for sample-quality metrics
    eval_extractor: str = "offline"  # features for FID/KID/precision/recall during training (fast on CPU)
    precision: str = "auto"        # on CUDA: auto (bf16 where supported, else fp16), fp32, bf16, fp16; CPU: fp32
    compile: bool = False          # torch.compile the trained networks (CUDA; slow first steps)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if isinstance(values.get("eval_metrics"), list):  # JSON has no tuples
            values["eval_metrics"] = tuple(values["eval_metrics"])
        return cls(**values)


# Keys of a metrics.jsonl record that are bookkeeping, not metrics to plot or compare.
BOOKKEEPING_KEYS = frozenset({"step", "time", "images_per_sec", "reference_images", "samples"})


class RunError(RuntimeError):
    """A run directory that cannot be used as asked (missing, not a run, already a run)."""


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().absolute()

    config_path = property(lambda self: self.path / "config.json")
    checkpoint_path = property(lambda self: self.path / "checkpoint.safetensors")
    checkpoint_info_path = property(lambda self: self.path / "checkpoint.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    samples_dir = property(lambda self: self.path / "samples")

    def exists(self) -> bool:
        return self.config_path.is_file()

    def check_creatable(self) -> None:
        if self.exists():
            raise RunError(f"{self.path} already holds a run; use --resume to continue it")
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"{self.path} exists and is not a folder")

    def create(self) -> None:
        self.check_creatable()
        self.samples_dir.mkdir(parents=True, exist_ok=True)

    def write_config(self, config: dict[str, Any]) -> None:
        write_text_atomic(self.config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")

    def read_config(self) -> dict[str, Any]:
        if not self.exists():
            raise RunError(f"{self.path} is not a genstudio run (no config.json)")
        try:
            return json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise RunError(f"cannot read {self.config_path}: {exc}") from exc

    def remove_stale_temps(self) -> None:
        """Delete temporary files that a process killed mid-write left (see core/atomic.py);
        a run has one writer, so none of them can belong to a write in progress."""
        for stale in self.path.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        records = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
        return records

    def truncate_metrics_after(self, step: int) -> None:
        """Drop records past the checkpoint, so a resumed run does not log a step twice."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        write_text_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))


@dataclass
class LoadedRun:
    """A trained model ready for sampling, with what is needed to describe it."""

    run: RunDir
    family: Family
    settings: TrainSettings
    step: int
    class_names: list[str]
    config: dict[str, Any]
    notice: str = ""  # e.g. the newest checkpoint was damaged and the previous one was loaded
    weights_only: bool = False  # shipped without its optimizer state: it cannot train further

    @property
    def name(self) -> str:
        return self.run.path.name


def load_run(path: str | os.PathLike, device: str = "auto") -> LoadedRun:
    """Open a run directory and load its latest checkpoint (weights only; no optimizer)."""
    run = RunDir(path)
    if not run.path.is_dir():
        raise RunError(f"no run at {run.path}")
    config = run.read_config()
    settings = TrainSettings.from_json(config["settings"])
    state, meta, notice = load_latest(run.checkpoint_path, device="cpu")
    spec = ImageSpec(**meta["spec"])
    family = create_family(meta["family"], spec, meta["family_config"], select_device(device), settings.seed)
    family.load_state_dict(move_state(state["family"], family.device), with_optimizers=False)
    family.eval_mode()
    return LoadedRun(run, family, settings, int(meta["step"]), list(meta.get("class_names", [])), config,
                     notice, bool(meta.get("weights_only", False)))


__all__ = ["CheckpointError", "LoadedRun", "RunDir", "RunError", "TrainSettings", "load_run"]
