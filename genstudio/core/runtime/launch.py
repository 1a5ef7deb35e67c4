"""Training in other processes, followed from this one: how the app runs a data-parallel run.

In the app a run normally trains in-process (a QThread iterating `Trainer.run`). Several
processes need torchrun, so `LaunchedRun` starts

    python -m torch.distributed.run --standalone --nproc_per_node=N -m genstudio train … --events

and its `events()` yields the same events the in-process Trainer yields. With `--events`, rank 0
of `genstudio train` prints each event as one line, EVENT_PREFIX + JSON (`encode_event`); every
other line of the processes' output (torchrun's own messages, warnings) is kept as a tail for
the error report. A sample grid is not sent through the pipe: its event names the PNG rank 0
wrote, and `decode_event` reads it back.

Stopping sends SIGTERM to torchrun, which passes it to every process; each one finishes its
step, they agree on the stop (core/runtime/distributed.py), and rank 0 saves and reports
TrainingFinished, as a stop does in-process. Pause, "sample now" and "save now" have no channel
to the processes and are not offered for a launched run.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..runs.run import RunError, TrainSettings
from .training import TRAIN_EVENTS, SamplesReady, TrainEvent, TrainingFinished

log = logging.getLogger(__name__)

EVENT_PREFIX = "@genstudio-event "
CLI_ERROR = "genstudio: error: "  # how `genstudio train` reports a failure (cli.py)
_EVENT_TYPES = {cls.__name__: cls for cls in TRAIN_EVENTS}
# TrainSettings fields that `genstudio train` has no option for: a launched run gets their
# defaults, so settings that change them cannot be launched (train_arguments refuses).
_NOT_OPTIONS = ("grid_samples", "eval_images", "eval_samples", "eval_extractor")


class LaunchError(RunError):
    """The training processes could not be started or ended without finishing the run."""


# -- events as text ---------------------------------------------------------------------------


def encode_event(event: TrainEvent) -> str:
    """One line (no newline) that `decode_event` turns back into an equal event."""
    fields = dataclasses.asdict(event)
    if isinstance(event, SamplesReady):
        del fields["grid"]  # the PNG at event.path holds it
    return EVENT_PREFIX + json.dumps({"event": type(event).__name__, **fields}, default=_plain)


def decode_event(line: str) -> TrainEvent | None:
    """The event on an encoded line; None for any other line."""
    if not line.startswith(EVENT_PREFIX):
        return None
    fields = json.loads(line[len(EVENT_PREFIX):])
    cls = _EVENT_TYPES[fields.pop("event")]
    if cls is SamplesReady:
        with Image.open(fields["path"], formats=("PNG",)) as image:  # the grid the run wrote
            fields["grid"] = np.asarray(image.convert("RGB"))
    return cls(**fields)


def _plain(value: Any) -> Any:
    """JSON for the numpy scalars and arrays an evaluation's figures may hold."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot encode {type(value).__name__} in a training event")


# -- the command ------------------------------------------------------------------------------


def train_arguments(settings: TrainSettings) -> list[str]:
    """`genstudio train` options that reproduce `settings` exactly (cli.py parses them back)."""
    defaults = TrainSettings()
    changed = [name for name in _NOT_OPTIONS if getattr(settings, name) != getattr(defaults, name)]
    if changed:
        raise LaunchError(f"genstudio train has no option for {', '.join(changed)}; "
                          "train in the app's own process instead")
    s = settings
    args = ["--family", s.family, "--data", s.data, "--size", str(s.size), "--steps", str(s.steps),
            "--batch", str(s.batch), "--seed", str(s.seed), "--device", s.device,
            "--log-every", str(s.log_every), "--sample-every", str(s.sample_every),
            "--checkpoint-every", str(s.checkpoint_every), "--eval-every", str(s.eval_every),
            "--eval-metrics", ",".join(s.eval_metrics), "--precision", s.precision]
    if s.channels is not None:
        args += ["--channels", str(s.channels)]
    if s.conditional:
        args.append("--conditional")
    if s.compile:
        args.append("--compile")
    if s.minutes:
        args += ["--minutes", repr(s.minutes)]
    for key, value in sorted(s.family_config.items()):
        args += ["--set", f"{key}={json.dumps(value)}"]
    return args


def torchrun_command(settings: TrainSettings, run_dir: str | os.PathLike, processes: int,
                     resume: bool = False) -> list[str]:
    if processes < 1:
        raise LaunchError("the number of processes must be at least 1")
    if settings.batch % processes:
        raise LaunchError(f"the batch ({settings.batch}) must be a multiple of the number of "
                          f"processes ({processes}): each process trains on an equal share")
    if getattr(sys, "frozen", False):  # a PyInstaller bundle has no `python -m` to start
        raise LaunchError("the bundled app trains in one process; for several, run "
                          "`torchrun … -m genstudio train` from a source install")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={processes}", "-m", "genstudio", "train",
            *train_arguments(settings), "--out", str(run_dir), *(["--resume"] if resume else []), "--events"]


# -- the launched run -------------------------------------------------------------------------


class LaunchedRun:
    """torchrun training `settings` into `run_dir` with `processes` processes.

    Start it, iterate `events()` in one thread until it ends; `stop()` may come from any other
    thread. The processes get their own session, so `kill()` reaches every one of them."""

    TAIL_LINES = 40

    def __init__(self, settings: TrainSettings, run_dir: str | os.PathLike, processes: int,
                 env: dict[str, str] | None = None, *, resume: bool = False):
        self.command = torchrun_command(settings, run_dir, processes, resume)
        self.run_dir = Path(run_dir)
        self.processes = processes
        self.tail: collections.deque[str] = collections.deque(maxlen=self.TAIL_LINES)
        self.errors: list[str] = []  # the processes' own error lines (`genstudio: error: …`)
        self._env = {**os.environ, **(env or {})}
        self._process: subprocess.Popen[str] | None = None
        self._stopping = False
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._process is not None:
                raise LaunchError("this run was already started")
            try:
                self._process = subprocess.Popen(
                    self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, text=True, bufsize=1, env=self._env,
                    start_new_session=True)
            except OSError as exc:
                raise LaunchError(f"cannot start torchrun: {exc}") from exc
            if self._stopping:  # stop() came before the processes existed
                self._signal(signal.SIGTERM)

    def events(self) -> Iterator[TrainEvent]:
        """The run's events as rank 0 reports them, ending with TrainingFinished; raises
        LaunchError (with the end of the processes' output) if they end without it."""
        if self._process is None:
            self.start()
        assert self._process is not None and self._process.stdout is not None
        finished = False
        try:
            for line in self._process.stdout:
                try:
                    event = decode_event(line)
                except (ValueError, KeyError, TypeError, OSError) as exc:
                    raise LaunchError(f"unreadable event from the training processes: {exc}") from exc
                if event is None:
                    self.tail.append(line.rstrip("\n"))
                    if CLI_ERROR in line:  # kept apart: torchrun's report after it is long
                        self.errors.append(line.split(CLI_ERROR, 1)[1].strip())
                    log.debug("torchrun: %s", line.rstrip())
                    continue
                finished = finished or isinstance(event, TrainingFinished)
                yield event
        finally:
            if self._process.poll() is None and not finished:
                self.kill()  # abandoned or unreadable: no run goes on training unseen
            code = self._process.wait()
            self._process.stdout.close()
        # After a stop torchrun may report the SIGTERM it passed on as a failure: the
        # processes themselves saved and said so, which is what counts.
        if not finished:
            raise LaunchError(self._failure(code))

    def stop(self) -> None:
        """Ask every process to finish its step and save (SIGTERM through torchrun)."""
        with self._lock:
            self._stopping = True
            self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """End every process now (SIGKILL to the session): the last checkpoint stays."""
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(sig)

    def _failure(self, code: int) -> str:
        """The processes' own error line if one printed it, else the last line that names an
        error (a traceback's, or torchrun's)."""
        lines = [line.strip() for line in self.tail if line.strip()]
        named = [line for line in lines if "Error" in line or "error:" in line]
        cause = (self.errors or named or lines or ["no output"])[-1]
        return f"the {self.processes} training processes ended (exit {code}) before the run finished: {cause}"
