"""genstudio's command line: the desktop app with no arguments, headless commands otherwise.

Contract (DESIGN.md): bad input exits 1 with one clear line on stderr and no traceback; usage
errors exit 2 (argparse); the same RUN and seed give byte-identical PNGs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__


class CommandError(Exception):
    """Bad input from the user: printed as one line, exit code 1."""


class Terminated(Exception):
    """SIGTERM arrived while a command (other than a training, which saves first) ran."""


# The exit code of a command stopped by a signal, as a shell reports one: 128 + its number.
# A training stopped so has saved its last whole step first.
STOPPED_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _terminated(*_: object) -> None:
    raise Terminated


def _seed(text: str) -> int:
    """argparse type of every --seed: a whole number from 0 to MAX_SEED."""
    from .core.families import MAX_SEED

    return _whole_number(text, 0, MAX_SEED, f"a seed is a whole number from 0 to {MAX_SEED}, not {text!r}")


def _count(text: str) -> int:
    """argparse type of a count that must be at least 1."""
    return _whole_number(text, 1, math.inf, f"expected a whole number of at least 1, not {text!r}")


def _whole_number(text: str, low: int, high: float, message: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(message)
    return value


def _positive_number(option: str, examples: str) -> Callable[[str], float]:
    """argparse type of `option`: a finite number above 0 (e.g. `examples`)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{option} takes a number above 0, such as {examples}, not {text!r}")
        return value
    return parse


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        from .app import main as app_main

        return app_main([])
    args = build_parser().parse_args(argv)
    if hasattr(args, "check_usage"):
        args.check_usage(args)  # exits 2 like argparse's own errors
    try:
        if args.command == "app":
            return args.handler(args)
        from .core.runtime.memory import keep_freed_memory

        previous = signal.signal(signal.SIGTERM, _terminated)
        try:
            with keep_freed_memory():  # a command's activations reused from step to step (core/runtime/memory.py)
                return args.handler(args)
        finally:
            signal.signal(signal.SIGTERM, previous)
    except KeyboardInterrupt:
        print("genstudio: interrupted", file=sys.stderr)
        return STOPPED_EXIT[signal.SIGINT]
    except Terminated:
        print("genstudio: stopped by SIGTERM", file=sys.stderr)
        return STOPPED_EXIT[signal.SIGTERM]
    except Exception as exc:  # noqa: BLE001 — every failure becomes one readable line
        if not _is_user_error(exc) or os.environ.get("GENSTUDIO_DEBUG"):
            raise
        from .core.data.dataset import printable

        # A file name in the message may hold control characters.
        print(f"genstudio: error: {printable(str(exc))}", file=sys.stderr)
        return 1


def _is_user_error(exc: Exception) -> bool:
    from .core.data import DatasetError
    from .core.families import CapabilityError, UnknownFamilyError
    from .core.runs.checkpoint import CheckpointError
    from .core.runs.run import RunError
    from .core.trained.sampling import SamplingError

    return isinstance(exc, (CommandError, CheckpointError, DatasetError, CapabilityError,
                            UnknownFamilyError, RunError, SamplingError, ValueError, OSError))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genstudio",
        description="Train generative models on a folder of images and play with them. "
                    "Run without arguments to open the desktop app.",
    )
    parser.add_argument("--version", action="version", version=f"genstudio {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_sample(sub)
    _add_interpolate(sub)
    _add_inpaint(sub)
    _add_info(sub)
    _add_eval(sub)
    _add_playground(sub)
    app = sub.add_parser("app", help="open the desktop app (the same as no arguments)")
    app.set_defaults(handler=lambda _args: __import__("genstudio.app", fromlist=["main"]).main([]))
    return parser


# -- train ------------------------------------------------------------------------------------


def _add_train(sub: Any) -> None:
    from .core.families import MAX_SEED
    from .core.runs.run import TrainSettings
    from .core.runtime.device import DEVICE_CHOICES

    p = sub.add_parser("train", help="train a model into a run folder",
                       epilog="Ctrl+C or SIGTERM stops the run after saving its last whole step (a second one "
                              "also skips the final sample grid and evaluation); the command then exits with "
                              "130 (Ctrl+C) or 143 (SIGTERM), 0 only for a run that completed.")
    p.add_argument("--family", help="vae, gan, flow, diffusion, flow-matching, pixelcnn or ebm (with --resume: the run's)")
    p.add_argument("--data", help="a folder of images or builtin:NAME (tins, shapes; with --resume: the run's)")
    p.add_argument("--out", required=True,
                   help="the run folder to create: a new or empty folder (or a run to continue with --resume)")
    # Options without a default here take the run's own value on --resume, TrainSettings'
    # default on a new run (train_settings).
    p.add_argument("--size", type=int, help="image side in px (default 32)")
    p.add_argument("--channels", type=int, choices=(1, 3), help="default: grey if every image is grey")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=_count, help="total optimisation steps of the run (default 3000)")
    length.add_argument("--epochs", type=_positive_number("--epochs", "0.5 or 20"), help="passes over the data (sets --steps)")
    p.add_argument("--minutes", type=_positive_number("--minutes", "0.5 or 10"),
                   help="time limit of this training session in minutes (pauses left out): the run then stops "
                        "as Ctrl+C stops it, saving its last whole step and drawing its final samples; "
                        "without --steps or --epochs the time alone ends it")
    p.add_argument("--batch", type=_count, help="the global batch (default 64)")
    p.add_argument("--seed", type=_seed,
                   help=f"initial weights, data order and training noise, 0 to {MAX_SEED} (default 0)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--conditional", action="store_true", default=None, help="condition on class subfolders")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="a family hyper-parameter, e.g. --set latent_dim=16 (repeatable)")
    p.add_argument("--log-every", type=int, help="steps between metric records (default 10)")
    p.add_argument("--sample-every", type=int, help="steps between sample grids (default 250; 0: at the end)")
    p.add_argument("--sample-seconds", type=float,
                   help="also a sample grid after this many seconds of training without one (default 0: off)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 500; 0: at the end)")
    p.add_argument("--eval-every", type=int,
                   help="steps between held-out evaluations (default 500; 0: only when the run ends)")
    p.add_argument("--eval-metrics", metavar="LIST",
                   help="what each evaluation measures: bpd and/or fid, kid, precision, recall "
                        f"(default {','.join(TrainSettings.eval_metrics)})")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out up to --steps (left out: the run's own total), "
                        "with its own model, data, batch and seed; the device, precision, --compile "
                        "and the *-every and --eval-metrics options may change (left out, they stay "
                        "the run's)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                   help="on CUDA: auto = bf16 where supported, else fp16 with loss scaling (CPU: fp32)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the networks (CUDA)")
    p.add_argument("--quiet", action="store_true",
                   help="print only the final line (and warnings: skipped files as one summary line)")
    p.add_argument("--events", action="store_true",
                   help="print every training event as a JSON line, for a program following the run "
                        "(the app does, for a run it launched with torchrun)")

    def check_usage(args: argparse.Namespace) -> None:
        missing = [flag for flag in ("--family", "--data") if getattr(args, flag[2:]) is None]
        if missing and not args.resume:
            p.error(f"the following arguments are required: {', '.join(missing)}")

    p.set_defaults(handler=_train, check_usage=check_usage)


def _train(args: argparse.Namespace) -> int:
    from .core.runtime.distributed import Distributed

    settings = train_settings(args)
    # Under torchrun (WORLD_SIZE > 1) this is one process of a data-parallel run: --batch is
    # the global batch, and only rank 0 writes the run folder and prints.
    distributed = Distributed.from_env(args.device)
    finished = False
    try:
        code = _train_in_process(args, settings, distributed)
        finished = True
        return code
    finally:
        if distributed is not None:
            distributed.close(finished)


def train_settings(args: argparse.Namespace) -> Any:
    """The TrainSettings that `genstudio train`'s options describe (core/runtime/launch.py writes them).

    An option left out takes its default, or with --resume the run's own value; a resumed run
    refuses options that would change what it trains (core.training.RESUME_MAY_CHANGE)."""
    import dataclasses

    from .core.data import BUILTIN_PREFIX
    from .core.runs.run import UNLIMITED_STEPS, RunDir, RunError, TrainSettings

    # Each option is stored under its field's name; fields without an option are never given.
    given = {field.name: getattr(args, field.name, None) for field in dataclasses.fields(TrainSettings)
             if field.name not in ("family_config", "eval_metrics")}
    given["eval_metrics"] = None if args.eval_metrics is None else _parse_metrics(args.eval_metrics)
    given = {name: value for name, value in given.items() if value is not None}
    if "data" in given and not given["data"].startswith(BUILTIN_PREFIX):
        # Stored as an absolute path, so a resume from another folder finds the same images.
        given["data"] = os.path.abspath(os.path.expanduser(given["data"]))
    options = _parse_options(args.options)
    base = TrainSettings()
    if "minutes" in given and "steps" not in given and args.epochs is None:
        base = dataclasses.replace(base, steps=UNLIMITED_STEPS)  # the time alone ends a new run
    if args.resume:
        run = RunDir(args.out)
        try:
            config = run.read_config()
            base = run.read_settings(config)
        except RunError:
            pass  # not a run: the trainer says so
        else:
            # Against the model's whole configuration: a --set equal to a default is no change.
            family_config = config.get("family_config")
            _refuse_changes_on_resume(base, family_config if isinstance(family_config, dict) else base.family_config,
                                      given, options)
            return dataclasses.replace(base, **{k: v for k, v in given.items() if k not in ("family", "data")})
    return dataclasses.replace(base, **given, family_config=options)


def _refuse_changes_on_resume(stored: Any, family_config: dict[str, Any], given: dict[str, Any],
                              options: dict[str, Any]) -> None:
    from .core.runtime.training import RESUME_MAY_CHANGE

    def option(name: str, value: Any) -> str:
        flag = "--" + name.replace("_", "-")
        return flag if value is True else f"{flag} {value}"

    def same(name: str, value: Any) -> bool:
        if name == "data":  # a folder may be named another way (a relative path, a link)
            return _same_source(value, stored.data)
        return value == getattr(stored, name)

    changed = [f"{option(name, value)} (the run's: {getattr(stored, name)})"
               for name, value in given.items() if name not in RESUME_MAY_CHANGE and not same(name, value)]
    changed += [f"--set {key}={value} (the run's: {family_config.get(key, 'unset')})"
                for key, value in options.items() if family_config.get(key) != value]
    if changed:
        raise CommandError("a resumed run keeps the settings it was made with; drop "
                           + "; ".join(changed) + ", or train a new run")


def _same_source(given: str, stored: str) -> bool:
    from .core.data import BUILTIN_PREFIX

    if given.startswith(BUILTIN_PREFIX) or stored.startswith(BUILTIN_PREFIX):
        return given == stored
    return os.path.realpath(os.path.expanduser(given)) == os.path.realpath(os.path.expanduser(stored))


def _train_in_process(args: argparse.Namespace, settings: Any, distributed: Any) -> int:
    from .core.data import load_source
    from .core.metrics.evaluate import describe_evaluation
    from .core.runtime.launch import encode_event
    from .core.runtime.training import (
        BatchLowered,
        Evaluated,
        Notice,
        StepLogged,
        Stopping,
        Trainer,
        TrainingControl,
        TrainingFinished,
    )

    main_process = distributed is None or distributed.is_main
    progress = None if args.quiet or args.events or not main_process else _ProgressLine("reading images")
    dataset = None
    if args.epochs is not None:
        if args.resume:
            raise CommandError("--epochs cannot be combined with --resume; give the total --steps")
        dataset = load_source(settings.data, settings.size, settings.channels, progress=progress)
        steps = max(1, math.ceil(args.epochs * len(dataset) / settings.batch))
        settings = dataclasses.replace(settings, steps=steps)
    trainer = Trainer(settings, args.out, resume=args.resume, dataset=dataset, distributed=distributed,
                      progress=progress)
    if progress is not None:
        progress.done()
    if trainer.dataset.skipped and main_process:
        _report_skipped(trainer.dataset, listed=0 if args.quiet else SKIPS_LISTED)
    if trainer.suggested and main_process and not args.quiet:
        _report_suggested(trainer.suggested, trainer.family)
    quiet = args.quiet or args.events or not main_process
    control = TrainingControl(on_progress=None if quiet else _StageProgress())
    previous, received = _stop_on_signals(control)
    try:
        for event in trainer.run(control):
            if not main_process:
                continue
            if args.events:
                print(encode_event(event), flush=True)
            elif isinstance(event, BatchLowered):
                print(f"genstudio: {event.message}", file=sys.stderr, flush=True)
            elif isinstance(event, StepLogged) and not args.quiet:
                print(_format_step(event), flush=True)
            elif isinstance(event, Evaluated):
                print(describe_evaluation(event.figures), flush=True)
            elif isinstance(event, Notice):
                print(f"genstudio: warning: {event.message}", file=sys.stderr, flush=True)
            elif isinstance(event, Stopping):
                print(f"{event.why} at step {event.step}: saving and drawing the last samples",
                      file=sys.stderr, flush=True)
            elif isinstance(event, TrainingFinished):
                print(f"{event.reason} at step {event.step}: {event.run_dir}", flush=True)
    finally:
        _restore_signals(previous)
    return STOPPED_EXIT[received[0]] if received else 0


SKIPS_LISTED = 20  # skipped files named one by one; the rest are counted


def _report_skipped(dataset: Any, listed: int) -> None:
    """The skipped files on stderr: a summary by reason, then the first `listed` by name."""
    print(f"genstudio: {dataset.skipped_summary()}", file=sys.stderr)
    for skipped in dataset.skipped[:listed]:
        print(f"  skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
    if 0 < listed < len(dataset.skipped):
        print(f"  … and {len(dataset.skipped) - listed:,} more", file=sys.stderr)


def _report_suggested(suggested: dict[str, Any], family: Any) -> None:
    """The knobs a new run took from its family's suggested_config, on stderr, and how to keep
    the defaults instead."""
    from .core.families.base import suggestion_reason

    defaults = type(family.config)()
    changed = ", ".join(f"{name} {value}" for name, value in suggested.items())
    keep = " ".join(f"--set {name}={getattr(defaults, name)}" for name in suggested)
    print(f"genstudio: {changed}, suggested {suggestion_reason(family.spec)}; {keep} keeps the default",
          file=sys.stderr)


class _ProgressLine:
    """Progress of a long load on stderr: a line every few seconds once it has taken a while,
    so that a big folder's first decoding does not look like a hang."""

    QUIET_SECONDS = 2.0   # loads shorter than this print nothing
    EVERY_SECONDS = 5.0

    def __init__(self, what: str):
        self.what = what
        self.started = time.monotonic()
        self.last: float | None = None
        self.total = 0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        self.total = total
        if now - self.started < self.QUIET_SECONDS or (self.last is not None and now - self.last < self.EVERY_SECONDS):
            return
        self.last = now
        print(f"genstudio: {self.what}: {done:,} of {total:,}", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.last is not None:
            print(f"genstudio: {self.what}: {self.total:,} of {self.total:,}, done in "
                  f"{time.monotonic() - self.started:.0f} s", file=sys.stderr, flush=True)


class _StageProgress:
    """The end-of-run work's progress (final samples, then each evaluation stage) on stderr,
    a _ProgressLine per stage: a PixelCNN's last grid can take minutes with nothing else shown."""

    def __init__(self) -> None:
        self.line: _ProgressLine | None = None

    def __call__(self, what: str, done: int, total: int) -> None:
        if self.line is None or self.line.what != what:
            self.line = _ProgressLine(what)
        if total and done >= total:  # the stage is over: "done in …" if it was long enough to show
            self.line.total = total
            self.line.done()
            self.line = None
        elif total:
            self.line(done, total)


def _load_run(run: str, device: str) -> Any:
    """load_run, saying on stderr when a damaged checkpoint was replaced by the previous one."""
    from .core.runs.run import load_run

    loaded = load_run(run, device=device)
    if loaded.notice:
        print(f"genstudio: warning: {loaded.notice}", file=sys.stderr, flush=True)
    return loaded


def _parse_metrics(text: str, option: str = "--eval-metrics") -> tuple[str, ...]:
    from .core.metrics.evaluate import METRICS

    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        what = f"unknown metric(s) {', '.join(unknown)}" if unknown else "no metric named"
        raise CommandError(f"{option}: {what}; choose from {', '.join(METRICS)}")
    return names


def _parse_options(options: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for option in options:
        key, sep, raw = option.partition("=")
        if not sep or not key:
            raise CommandError(f"expected KEY=VALUE, got {option!r}")
        try:
            values[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            values[key.strip()] = raw  # plain strings need no quotes
    return values


def _stop_on_signals(control: Any) -> tuple[dict[int, Any], list[int]]:
    """Ctrl+C / SIGTERM abandon the step under way and save, instead of killing mid-write; a
    second one also skips the final sample grid and evaluation. Returns the handlers replaced
    and the list the signals received are appended to (the exit code says the first)."""
    received: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        received.append(signum)
        if control.stop_requested:
            control.hurry()
        else:
            control.stop()

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    return previous, received


def _restore_signals(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _format_step(event: Any) -> str:
    from .core.runs.run import UNLIMITED_STEPS

    shown = "  ".join(f"{k} {v:.4g}" for k, v in event.metrics.items())
    eta = _clock(event.eta_seconds) if event.eta_seconds is not None else "–"
    step = f"step {event.step}" if event.total_steps == UNLIMITED_STEPS else f"step {event.step}/{event.total_steps}"
    return f"{step}  {shown}  {event.images_per_sec:.0f} img/s  ETA {eta}"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# -- sample -----------------------------------------------------------------------------------


def _add_sample(sub: Any) -> None:
    from .core.families import MAX_SEED
    from .core.trained.sampling import MAX_GRID, SAMPLING_BATCH

    p = sub.add_parser("sample", help="generate images from a trained run")
    p.add_argument("run", help="a run folder")
    p.add_argument("--n", type=_count, required=True,
                   help=f"number of images (made and written {SAMPLING_BATCH} at a time, so any number fits in memory)")
    p.add_argument("--seed", type=_seed, required=True, help=f"0 to {MAX_SEED}")
    p.add_argument("--out", required=True, help="folder for RUN-seedSEED-NNNN.png (a name already taken gets -2, -3, …)")
    p.add_argument("--overwrite", action="store_true", help="replace files of the same names instead")
    p.add_argument("--grid", help=f"also write all samples as one grid PNG here (at most {MAX_GRID} images)")
    p.add_argument("--label", help="class name, for class-conditional runs")
    p.add_argument("--scale", type=_count, default=1, help="integer upscaling of written PNGs (nearest)")
    p.add_argument("--device", default="cpu", help="cpu (default: reproducible), auto, cuda or mps")
    p.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="a sampling option of the family, e.g. --option sampler=ddim --option steps=50")
    p.set_defaults(handler=_sample)


def _sample(args: argparse.Namespace) -> int:
    import numpy as np

    from .core.trained.sampling import (
        MAX_GRID,
        export_grid,
        export_images,
        export_stem,
        generate_in_batches,
        kept_beside,
        label_index,
        provenance,
    )

    if args.grid and args.n > MAX_GRID:
        raise CommandError(f"--grid holds at most {MAX_GRID} images; leave it out to write {args.n:,}")
    loaded = _load_run(args.run, args.device)
    label = label_index(loaded, args.label)
    options = _parse_options(args.options)
    extra = {"label": args.label} if args.label else {}
    if options:
        extra["options"] = json.dumps(options, sort_keys=True)
    meta = provenance(loaded, args.seed, **extra)
    written, beside, kept, progress = 0, 0, [], _ProgressLine("writing samples")
    for start, images in generate_in_batches(loaded, args.n, args.seed, label, options):
        paths = export_images(images, args.out, meta, export_stem(loaded, args.seed), scale=args.scale,
                              first_index=start, overwrite=args.overwrite)
        written += len(paths)
        beside += sum(map(kept_beside, paths))
        if args.grid:
            kept.append(images)
        progress(written, args.n)
    progress.done()
    if args.grid:
        export_grid(np.concatenate(kept), args.grid, meta)
    print(f"wrote {written} images to {args.out}" + (f" and a grid to {args.grid}" if args.grid else ""))
    if beside:
        print(f"{beside} of them named -2, -3, … beside files already there (--overwrite replaces those)")
    return 0


# -- interpolate ------------------------------------------------------------------------------


def _add_interpolate(sub: Any) -> None:
    p = sub.add_parser("interpolate", help="frames between two images (or two seeds) through the latent space")
    p.add_argument("run", help="a run folder whose family can decode (vae, gan, flow, diffusion, flow-matching)")
    p.add_argument("--from", dest="start", required=True, metavar="A",
                   help="an image file (encoded by the model), or seed:N for a latent drawn from the prior")
    p.add_argument("--to", dest="end", required=True, metavar="B", help="as --from")
    p.add_argument("--steps", type=int, default=8, help="frames, both ends included (default 8, at most 1000)")
    p.add_argument("--out", required=True, help="FILE.png (a strip of the frames) or FILE.gif (animated)")
    p.add_argument("--mode", choices=("spherical", "linear"), default="spherical",
                   help="path through the latent space (default spherical: keeps Gaussian latents typical)")
    p.add_argument("--label", help="class name, for class-conditional runs")
    p.add_argument("--scale", type=int, default=1, help="integer upscaling of the written image (nearest)")
    p.add_argument("--frame-ms", type=int, default=120, help="GIF: milliseconds per frame (default 120)")
    p.add_argument("--device", default="cpu", help="cpu (default: reproducible), auto, cuda or mps")
    p.set_defaults(handler=_interpolate)


def _interpolate(args: argparse.Namespace) -> int:
    from .core.runs.images import make_grid, save_gif, save_png
    from .core.trained.latent import Endpoint, interpolation_frames
    from .core.trained.sampling import label_index, provenance

    suffix = os.path.splitext(args.out)[1].lower()
    if suffix not in (".png", ".gif"):
        raise CommandError(f"--out must end in .png or .gif, not {args.out!r}")
    if not 2 <= args.steps <= 1000:
        raise CommandError("--steps must be from 2 to 1000")
    if args.scale < 1 or args.frame_ms < 10:
        raise CommandError("--scale must be at least 1 and --frame-ms at least 10")
    start, end = Endpoint.parse(args.start), Endpoint.parse(args.end)
    _refuse_overwriting(args.out, *(e.path for e in (start, end) if e.path))
    loaded = _load_run(args.run, args.device)
    label = label_index(loaded, args.label)
    frames = interpolation_frames(loaded.family, start, end, args.steps, args.mode, label)
    meta = provenance(loaded, None, start=args.start, end=args.end, steps=args.steps, mode=args.mode,
                      **({"label": args.label} if args.label else {}))
    if suffix == ".gif":
        save_gif(args.out, frames, meta, scale=args.scale, frame_ms=args.frame_ms)
    else:
        save_png(args.out, make_grid(frames, columns=len(frames)), meta, scale=args.scale)
    print(f"wrote {args.steps} frames ({args.mode}) to {args.out}")
    return 0


# -- inpaint ----------------------------------------------------------------------------------


def _add_inpaint(sub: Any) -> None:
    from .core.families import MAX_SEED

    p = sub.add_parser("inpaint", help="fill the masked part of an image with a trained model")
    p.add_argument("run", help="a run folder whose family can inpaint")
    p.add_argument("--image", required=True, help="the image (cropped and scaled to the model's size)")
    p.add_argument("--mask", required=True,
                   help="white (255) = fill, black = keep; the image's size or the model's")
    p.add_argument("--out", required=True,
                   help="a PNG: the filled image, or with --n > 1 the candidates side by side")
    p.add_argument("--n", type=_count, default=1, help="candidates, seeds S, S+1, … (default 1, at most 64)")
    p.add_argument("--seed", type=_seed, default=0, help=f"0 to {MAX_SEED} (default 0)")
    p.add_argument("--label", help="class name, for class-conditional runs")
    p.add_argument("--scale", type=int, default=1, help="integer upscaling of the written PNG (nearest)")
    p.add_argument("--device", default="cpu", help="cpu (default: reproducible), auto, cuda or mps")
    p.set_defaults(handler=_inpaint)


def _inpaint(args: argparse.Namespace) -> int:
    from .core.data import image_file_size, load_image
    from .core.runs.images import make_grid, save_png
    from .core.trained.inpainting import inpaint_candidates, load_mask
    from .core.trained.sampling import label_index, provenance

    if not args.out.lower().endswith(".png"):
        raise CommandError(f"--out must be a .png file, not {args.out!r}")
    if args.n > 64 or args.scale < 1:
        raise CommandError("--n must be at most 64 and --scale at least 1")
    _refuse_overwriting(args.out, args.image, args.mask)
    loaded = _load_run(args.run, args.device)
    spec = loaded.family.spec
    label = label_index(loaded, args.label)
    image = load_image(args.image, spec.size, spec.channels)
    fill = load_mask(args.mask, spec.size, image_file_size(args.image))
    candidates = inpaint_candidates(loaded.family, image, fill, args.n, args.seed, label)
    meta = provenance(loaded, args.seed, image=os.path.basename(args.image), mask=os.path.basename(args.mask),
                      candidates=args.n, method=loaded.family.inpaint_method,
                      **({"label": args.label} if args.label else {}))
    picture = candidates[0] if args.n == 1 else make_grid(candidates, columns=args.n)
    save_png(args.out, picture, meta, scale=args.scale)
    filled = int(fill.sum())
    print(f"filled {filled} of {fill.size} pixels with {loaded.family.title} → {args.out}"
          + (f" ({args.n} candidates, seeds {args.seed}–{args.seed + args.n - 1})" if args.n > 1 else ""))
    return 0


def _refuse_overwriting(out: str, *inputs: str) -> None:
    """An output file must not be one of the command's input files."""
    for given in inputs:
        if os.path.realpath(out) == os.path.realpath(given):
            raise CommandError(f"--out {out} is an input of this command; write the result to another file")


# -- eval -------------------------------------------------------------------------------------


def _add_eval(sub: Any) -> None:
    from .core.families import MAX_SEED

    p = sub.add_parser("eval", help="measure a run: likelihood, FID/KID, precision/recall, memorisation")
    p.add_argument("run", help="a run folder")
    p.add_argument("--data", required=True, help="reference images: a folder or builtin:NAME "
                   "(its held-out tenth is used, the images the run never saw if it trained on it)")
    p.add_argument("--metrics", default="fid,kid,precision,recall,bpd",
                   help="comma-separated: bpd, fid, kid, precision, recall, density, coverage, memorisation")
    p.add_argument("--samples", type=_count, default=1000, help="generated images (default 1000)")
    p.add_argument("--reference", type=_count, default=1000, help="at most this many reference images")
    p.add_argument("--extractor", default="auto",
                   help="auto (Inception-v3 if its weights are found, else offline), inception, offline, or a file")
    p.add_argument("--seed", type=_seed, default=0, help=f"0 to {MAX_SEED} (default 0)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--no-record", action="store_true", help="do not append the figures to metrics.jsonl")
    p.add_argument("--pairs", metavar="PNG", help="with memorisation: write the closest sample/training "
                   "pairs here (samples on top, their nearest training images below)")
    p.set_defaults(handler=_eval)


def _eval(args: argparse.Namespace) -> int:
    from .core.data import load_source
    from .core.metrics.evaluate import EvalSettings, pairs_strip, run_evaluation
    from .core.runs.images import save_png

    metrics = _parse_metrics(args.metrics, "--metrics")
    if args.pairs and "memorisation" not in metrics:
        raise CommandError("--pairs needs memorisation in --metrics")
    settings = EvalSettings(metrics=metrics, samples=args.samples, reference=args.reference,
                            extractor=args.extractor, seed=args.seed)
    loaded = _load_run(args.run, args.device)
    if not args.no_record:
        _check_writable(loaded.run)  # before minutes of work, not after
    spec = loaded.family.spec
    progress = None if args.json else _ProgressLine("reading images")
    data = load_source(args.data, spec.size, spec.channels, progress=progress)
    if progress is not None:
        progress.done()
    say = None if args.json else (lambda stage: print(f"  {stage}…", file=sys.stderr, flush=True))
    evaluation = run_evaluation(loaded.family, data, settings, stage=say)
    figures = evaluation.figures
    record = {"step": loaded.step, "eval_source": data.source, **figures}
    # The figures first: whatever happens to the files after, the work is not lost.
    if args.json:
        print(json.dumps(record, indent=2), flush=True)
    else:
        print(f"{loaded.family.title} · {loaded.name} · step {loaded.step} · against {data.source} "
              f"({figures['reference_images']} {figures['reference_split']} images)")
        for key, value in figures.items():
            if key not in ("reference_images", "reference_split"):
                print(f"  {key:<26} {value:.4f}" if isinstance(value, float) else f"  {key:<26} {value}")
        sys.stdout.flush()
    if args.pairs:
        save_png(args.pairs, pairs_strip(evaluation.closest_pairs),
                 {"run": loaded.name, "step": loaded.step, "rms_distances": " ".join(
                     f"{pair.distance:.4f}" for pair in evaluation.closest_pairs)})
    if not args.no_record:
        try:
            loaded.run.append_metrics(record)
        except OSError as exc:
            raise CommandError(f"the figures above were not recorded in {loaded.run.metrics_path} "
                               f"({exc.strerror or exc})") from None
    return 0


def _check_writable(run: Any) -> None:
    """CommandError unless the run's metrics.jsonl can be appended to."""
    target = run.metrics_path if run.metrics_path.exists() else run.path
    if not os.access(target, os.W_OK):
        raise CommandError(f"cannot record figures in {run.path} (it is read-only); "
                           "add --no-record to measure without recording")


# -- info -------------------------------------------------------------------------------------


def _add_info(sub: Any) -> None:
    p = sub.add_parser("info", help="describe a run: family, data, step, latest metrics")
    p.add_argument("run", help="a run folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=_info)


def _info(args: argparse.Namespace) -> int:
    from .core.runs.run import UNLIMITED_STEPS

    loaded = _load_run(args.run, "cpu")
    metrics = loaded.run.read_metrics()
    family = loaded.family
    info = {
        "run": str(loaded.run.path),
        "family": family.name,
        "step": loaded.step,
        "total_steps": loaded.settings.steps,
        "data": loaded.config.get("dataset", {}),
        "image": {"size": family.spec.size, "channels": family.spec.channels,
                  "classes": loaded.class_names},
        "parameters": family.num_parameters(),
        "capabilities": sorted(c.value for c in family.capabilities),
        "log_prob_kind": family.log_prob_kind.value if family.log_prob_kind else None,
        "family_config": loaded.config.get("family_config", {}),
        "last_metrics": metrics[-1] if metrics else {},
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    data = info["data"]
    print(f"run        {info['run']}")
    print(f"family     {family.title} ({family.name}), {info['parameters']:,} parameters")
    if loaded.settings.steps == UNLIMITED_STEPS:
        print(f"step       {info['step']} (limited by time: {loaded.settings.minutes:g} minutes a session)")
    else:
        print(f"step       {info['step']} of {info['total_steps']}")
    print(f"data       {data.get('source', '?')}: {data.get('images', '?')} images, "
          f"{data.get('skipped', 0)} skipped")
    classes = ", ".join(loaded.class_names) if loaded.class_names else "unconditional"
    print(f"image      {family.spec.size}×{family.spec.size}, {family.spec.channels} channel(s), {classes}")
    print(f"can        {', '.join(info['capabilities'])}")
    if metrics:
        last = metrics[-1]
        print("metrics    " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                        for k, v in last.items()))
    return 0


# -- playground --------------------------------------------------------------------------------


def _add_playground(sub: Any) -> None:
    p = sub.add_parser("playground", help="train 2-D families side by side on a toy or on x,y points")
    p.add_argument("--data", default="8gaussians",
                   help="a toy (8gaussians, moons, swissroll, checkerboard, rings, spirals, pinwheel) or a CSV of x,y")
    p.add_argument("--families", default="all", help="comma-separated 2-D families, or all")
    p.add_argument("--seconds", type=float, default=30.0, help="training seconds per family")
    p.add_argument("--points", type=int, default=20_000, help="points drawn from a toy to train on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="FAMILY.KEY=VALUE", dest="knobs",
                   help="a family's knob, e.g. --set gan.loss=hinge --set flow.layers=8")
    p.add_argument("--scenario", help="a scenario file saved by the Playground tab (its data, families and seed)")
    p.add_argument("--out", help="write the side-by-side figure here (PNG)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(handler=_playground)


def _playground(args: argparse.Namespace) -> int:

    from .core.playground.families import PLANE_FAMILIES, create_plane_family
    from .core.playground.figure import Panel, side_by_side
    from .core.playground.grid import Grid
    from .core.playground.scenario import Scenario
    from .core.playground.session import fit
    from .core.playground.toys import TOYS, load_points_csv
    from .core.playground.yardstick import data_density
    from .core.runs.images import save_png

    if args.scenario:
        scenario = Scenario.load(args.scenario)
        names = list(scenario.families) or list(PLANE_FAMILIES)
    else:
        names = list(PLANE_FAMILIES) if args.families == "all" else [n.strip() for n in args.families.split(",")]
        knobs: dict[str, dict[str, Any]] = {name: {} for name in names}
        for key, value in _parse_options(args.knobs).items():
            family, dot, knob = key.partition(".")
            if not dot or family not in knobs:
                raise CommandError(f"--set {key}=…: expected FAMILY.KEY=VALUE for one of {', '.join(names)}")
            knobs[family][knob] = value
        toy_name = args.data if args.data in TOYS else None
        scenario = Scenario(toy=toy_name, points=None if toy_name else load_points_csv(args.data),
                            toy_points=args.points, seed=args.seed, families=knobs)
    if args.seconds <= 0:
        raise CommandError("--seconds must be more than 0")
    toy = TOYS.get(scenario.toy) if scenario.toy else None
    points = scenario.data()
    grid = Grid()
    target = data_density(grid, toy if toy is not None else points, seed=scenario.seed)
    rows, panels = [], [Panel(f"data: {toy.title if toy else args.data}", target, points,
                              (f"{len(points):,} points", f"density: {target.kind}"[:44]))]
    for name in names:
        family = create_plane_family(name, scenario.families.get(name), seed=scenario.seed)
        print(f"{family.title}: training for {args.seconds:g} s…", file=sys.stderr)
        fitted = fit(family, points, args.seconds, grid, target, toy, seed=scenario.seed)
        last, coverage = fitted.last, fitted.last.coverage
        rows.append({"family": name, "steps": fitted.steps, "train_seconds": round(fitted.train_seconds, 2),
                     "kl_nats": last.kl, "density": last.model.kind, "density_mass_on_grid": last.model.mass,
                     "modes_covered": None if coverage is None else coverage.covered,
                     "modes": None if coverage is None else coverage.modes,
                     "precision": last.precision, "recall": last.recall, "samples": len(last.samples),
                     "sample_ms": round(last.sample_ms, 2), "latent": family.latent,
                     "history": [vars(record) for record in fitted.history]})
        panels.append(Panel(family.title, last.model, last.samples,
                            (last.caption, f"{fitted.steps:,} steps, {last.model.kind}"[:44])))
    if args.out:
        save_png(args.out, side_by_side(panels), {"data": args.data, "seconds": f"{args.seconds:g}"})
    if args.json:
        print(json.dumps({"data": args.data, "data_density": target.kind, "grid": vars(grid), "families": rows},
                         indent=2))
        return 0
    print(f"data {args.data} ({target.kind}); KL(p_data ‖ p_model) on a {grid.resolution}² grid over "
          f"[−{grid.extent:g}, {grid.extent:g}]²")
    for row in rows:
        modes = "" if row["modes"] is None else f"  {row['modes_covered']}/{row['modes']} modes"
        print(f"{row['family']:<14} {row['steps']:>7,} steps in {row['train_seconds']:6.1f} s  "
              f"KL {row['kl_nats']:.4f} nats ({row['density']}){modes}  precision {row['precision']:.2f} "
              f"recall {row['recall']:.2f}  {row['samples']:,} samples in {row['sample_ms']:.0f} ms  "
              f"latent: {row['latent']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
