"""The run directory shared by the app and the CLI.

    RUN/config.json                settings, resolved family config, dataset, image spec
    RUN/checkpoint.safetensors     weights, optimizer, RNG, step (+ readable checkpoint.json)
    RUN/metrics.jsonl              one JSON object per logged step
    RUN/samples/                   sample grids written during training
    RUN/explorer/                  the Explore tab's encodings of the training images
    RUN/.lock                      locked by the process training the run (RunLock)

A run folder holds only these (and the temporary files of atomic writes, named by
core.atomic.TEMP_TAG): a new run is made only in a new or empty folder, or over a run that
died before its first checkpoint, and nothing else in a folder is ever deleted.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import socket
import types
import typing
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.dataset import printable
from ..families import Family, ImageSpec, UnknownFamilyError, create_family, stored_family_config
from ..runtime.device import select_device
from .atomic import TEMP_TAG, append_line, write_text_atomic
from .checkpoint import CheckpointError, load_latest, move_state, previous_path


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
    sample_seconds: float = 0.0    # also a grid after this many seconds of training without one (0: off)
    checkpoint_every: int = 500    # steps between checkpoints (0: only at the end / on stop)
    grid_samples: int = 64         # images in each sample grid
    eval_images: int = 256         # held-out images each evaluation measures against (0: no evaluation)
    eval_every: int = 500          # steps between evaluations during training (0: only when the run ends)
    eval_metrics: tuple[str, ...] = ("bpd",)  # any of genstudio.core.metrics.evaluate.METRICS
    eval_samples: int = 256        # generated images for sample-quality metrics
    eval_extractor: str = "offline"  # features for FID/KID/precision/recall during training (fast on CPU)
    precision: str = "auto"        # on CUDA: auto (bf16 where supported, else fp16), fp32, bf16, fp16; CPU: fp32
    compile: bool = False          # torch.compile the trained networks (CUDA; slow first steps)
    minutes: float = 0.0           # time limit of each training session, pauses left out (0: none); then it stops as Stop does

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> TrainSettings:
        """The settings stored in a config.json; ValueError naming the first field of the wrong
        type (the file may have been edited by hand). Unknown keys are ignored."""
        if not isinstance(data, dict):
            raise ValueError(f"its settings are {_kind(data)}, not an object")
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name == "eval_metrics" and isinstance(value, list):  # JSON has no tuples
                value = tuple(value)
            if not _has_type(value, hints[f.name]):
                raise ValueError(f"settings.{f.name} is {json.dumps(value)[:40]}, not {_type_name(hints[f.name])}")
            values[f.name] = value
        return cls(**values)


def _has_type(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a TrainSettings field's annotation (bool is not an int here)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is dict:
        return isinstance(value, dict)
    if origin is tuple:
        return isinstance(value, tuple) and all(_has_type(v, args[0]) for v in value)
    return False


def _type_name(hint: Any) -> str:
    names = {int: "a whole number", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in args)
    if typing.get_origin(hint) is tuple:
        return "a list of strings"
    if typing.get_origin(hint) is dict:
        return "an object"
    return names.get(hint, str(hint))


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(value), f"a {type(value).__name__}")


# The step count of a run limited by its time alone (`train --minutes M` without --steps).
UNLIMITED_STEPS = 10**9


# Keys of a metrics.jsonl record that are bookkeeping, not metrics to plot or compare.
BOOKKEEPING_KEYS = frozenset({"step", "time", "images_per_sec", "reference_images", "samples"})
# Suffixes of keys that describe another figure (its standard error, its probe count), not curves.
ABOUT_A_FIGURE = ("_se", "_probes")


def plotted_figures(record: dict[str, Any]) -> dict[str, float]:
    """The numbers in a metrics.jsonl record that are metrics to plot or compare."""
    return {k: float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in BOOKKEEPING_KEYS and not k.endswith(ABOUT_A_FIGURE)}


class RunError(RuntimeError):
    """A run directory that cannot be used as asked (missing, not a run, already a run)."""


# What genstudio writes in a run folder, by name; anything else there is the user's.
_RUN_FILES = frozenset({"config.json", "checkpoint.safetensors", "checkpoint.prev.safetensors",
                        "checkpoint.json", "metrics.jsonl", "samples", "explorer", ".lock"})


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().absolute()

    config_path = property(lambda self: self.path / "config.json")
    checkpoint_path = property(lambda self: self.path / "checkpoint.safetensors")
    checkpoint_info_path = property(lambda self: self.path / "checkpoint.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    samples_dir = property(lambda self: self.path / "samples")
    lock_path = property(lambda self: self.path / ".lock")

    def exists(self) -> bool:
        return self.config_path.is_file()

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file() or previous_path(self.checkpoint_path).is_file()

    def check_creatable(self) -> None:
        """RunError unless a new run may be made here: a new or empty folder, or a run that
        ended before its first checkpoint (nothing in it can be resumed, so it starts again)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"{self.path} exists and is not a folder")
        if self.has_checkpoint():
            raise RunError(f"{self.path} already holds a run; use --resume to continue it")
        foreign = self._foreign_entries()
        if foreign:
            shown = ", ".join(printable(name) for name in foreign[:3]) + (", …" if len(foreign) > 3 else "")
            raise RunError(f"{self.path} holds files that are not a genstudio run's ({shown}); "
                           "choose a new or empty folder for the run")

    def _foreign_entries(self) -> list[str]:
        if not self.path.is_dir():
            return []
        foreign = sorted(entry.name for entry in self.path.iterdir()
                         if entry.name not in _RUN_FILES and not _is_temp(entry.name))
        if self.samples_dir.is_dir():
            foreign += sorted(f"samples/{entry.name}" for entry in self.samples_dir.iterdir()
                              if not (_is_sample_grid(entry.name) or _is_temp(entry.name)))
        return foreign

    def create(self) -> None:
        """Make the folder for a new run, clearing what a run that died before its first
        checkpoint left (only the files a run writes). Call with the run locked."""
        self.check_creatable()
        for leftover in (self.config_path, self.metrics_path, self.checkpoint_info_path):
            leftover.unlink(missing_ok=True)
        if self.samples_dir.is_dir():
            for grid in self.samples_dir.iterdir():
                if _is_sample_grid(grid.name):
                    grid.unlink(missing_ok=True)
        self.remove_stale_temps()
        self.samples_dir.mkdir(parents=True, exist_ok=True)

    def lock(self, purpose: str) -> RunLock:
        """Lock the run for this process's writes (RunLock); RunError naming the holder when
        another process has it. Makes the folder when it does not exist yet."""
        self.path.mkdir(parents=True, exist_ok=True)
        return RunLock.acquire(self.lock_path, purpose)

    def write_config(self, config: dict[str, Any]) -> None:
        write_text_atomic(self.config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")

    def read_config(self) -> dict[str, Any]:
        """config.json as an object; RunError when it is missing, unreadable or not an object."""
        if not self.exists():
            raise RunError(f"{self.path} is not a genstudio run (no config.json)")
        try:
            config = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise RunError(f"cannot read {self.config_path}: {exc}") from None
        if not isinstance(config, dict):
            raise RunError(f"{self.config_path} is damaged: it holds {_kind(config)}, not an object")
        return config

    def read_settings(self, config: dict[str, Any] | None = None) -> TrainSettings:
        """The run's TrainSettings from config.json (or the given `config` read from it)."""
        config = self.read_config() if config is None else config
        if "settings" not in config:
            raise RunError(f"{self.config_path} is damaged: it has no settings")
        try:
            return TrainSettings.from_json(config["settings"])
        except (TypeError, ValueError) as exc:
            raise RunError(f"{self.config_path} is damaged: {exc}") from None

    def read_model_config(self, settings: TrainSettings) -> dict[str, Any]:
        """Every knob of the run's model as it was built (config.json's family_config), not only
        those given in `settings`: a default changed since must not change what a resume builds."""
        built = self.read_config().get("family_config")
        knobs = {**built, **settings.family_config} if isinstance(built, dict) else settings.family_config
        return stored_family_config(settings.family, knobs)

    def remove_stale_temps(self) -> None:
        """Delete temporary files that a process killed mid-write left (see core/runs/atomic.py):
        only files named as genstudio names them. Call with the run locked: then none of them
        can belong to a write in progress."""
        for folder in (self.path, self.samples_dir):
            for stale in folder.glob(f".*{TEMP_TAG}*.tmp"):
                stale.unlink(missing_ok=True)

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Add one record to metrics.jsonl, whole or not at all (core.atomic.append_line)."""
        append_line(self.metrics_path, json.dumps(record))

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of metrics.jsonl: each an object with a whole-number step. Anything else
        (a line cut short by a crash, or edited by hand) is left out."""
        if not self.metrics_path.is_file():
            return []
        records = []
        for line in self.metrics_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue
            step = record.get("step") if isinstance(record, dict) else None
            if isinstance(step, int) and not isinstance(step, bool):
                records.append(record)
        return records

    def truncate_metrics_after(self, step: int) -> None:
        """Drop records past the checkpoint, so a resumed run does not log a step twice."""
        kept = [r for r in self.read_metrics() if r["step"] <= step]
        write_text_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))


class RunLock:
    """An OS lock (flock) on RUN/.lock, held by the one process that trains a run: a second
    writer is refused with the holder's description, and a process that dies loses the lock
    with it, so no stale lock is ever left to remove. Released by release(), or when the
    object is collected. On a system without flock (Windows) nothing is locked."""

    def __init__(self, fd: int | None):
        self._close = weakref.finalize(self, os.close, fd) if fd is not None else None

    @classmethod
    def acquire(cls, path: Path, purpose: str) -> RunLock:
        try:
            import fcntl
        except ImportError:  # no flock: nothing to lock with
            return cls(None)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise RunError(f"cannot lock {path.parent}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 1000, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunError(f"{path.parent} is in use by {holder}; wait for it to end, or stop it") from None
        since = datetime.datetime.now().isoformat(timespec="seconds")
        holder = f"process {os.getpid()} on {socket.gethostname()} ({purpose}, since {since})\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode("utf-8"), 0)
        return cls(fd)

    def release(self) -> None:
        if self._close is not None:
            self._close()  # closing the descriptor releases the lock


def _is_temp(name: str) -> bool:
    return name.startswith(".") and TEMP_TAG in name and name.endswith(".tmp")


def _is_sample_grid(name: str) -> bool:
    return name.startswith("step_") and name.endswith(".png")


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


def check_run_meta(meta: dict[str, Any]) -> None:
    """CheckpointError unless a run checkpoint's metadata has the shape the trainer gives it
    (it may have been edited by hand)."""
    expected = {"family": str, "step": int, "spec": dict, "family_config": dict}
    for key, kind in expected.items():
        value = meta.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(f"its metadata's {key} is {json.dumps(value)[:40]}")
    spec = meta["spec"]
    whole = all(isinstance(v, int) and not isinstance(v, bool) for v in spec.values())
    if not whole or not {"channels", "size"} <= set(spec) <= {"channels", "size", "num_classes"}:
        raise CheckpointError(f"its metadata's spec is {json.dumps(spec)[:60]}")
    names = meta.get("class_names", [])
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise CheckpointError("its metadata's class_names are not a list of names")


def load_run(path: str | os.PathLike, device: str = "auto") -> LoadedRun:
    """Open a run directory and load its latest checkpoint (weights only; no optimizer)."""
    run = RunDir(path)
    if not run.path.is_dir():
        raise RunError(f"no run at {run.path}")
    config = run.read_config()
    settings = run.read_settings(config)

    def build(state: Any, meta: dict[str, Any]) -> Family:
        check_run_meta(meta)
        family = create_family(meta["family"], ImageSpec(**meta["spec"]),
                               stored_family_config(meta["family"], meta["family_config"]),
                               select_device(device), settings.seed)
        family.load_state_dict(move_state(state["family"], family.device), with_optimizers=False)
        return family

    try:
        family, meta, notice = load_latest(run.checkpoint_path, device="cpu", apply=build)
    except UnknownFamilyError as exc:
        raise RunError(f"{run.path}: {exc}") from None
    family.eval_mode()
    return LoadedRun(run, family, settings, meta["step"], list(meta.get("class_names", [])), config,
                     notice, bool(meta.get("weights_only", False)))


__all__ = ["UNLIMITED_STEPS", "CheckpointError", "LoadedRun", "RunDir", "RunError", "TrainSettings", "load_run"]
