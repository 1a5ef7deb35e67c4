"""Work the window hands to background threads (see workers.TaskRunner): each function takes a
Job and returns a plain result for the GUI thread to display. All computation is in core."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PySide6.QtGui import QImage

from genstudio.core.data import ImageDataset, load_source
from genstudio.core.families import Capability, SamplingCancelled
from genstudio.core.metrics.evaluate import (
    FEATURE_METRICS,
    ClosestPair,
    EvalSettings,
    run_evaluation,
)
from genstudio.core.metrics.features import InceptionExtractor, download_inception, get_extractor
from genstudio.core.playground.figure import Recording
from genstudio.core.runs import pretrained
from genstudio.core.runs.images import make_grid, save_gif, save_png, to_pil, to_uint8
from genstudio.core.runs.run import LoadedRun, RunDir, load_run
from genstudio.core.trained.inpainting import (
    InpaintError,
    export_inpainting,
    fit_to_model,
    inpaint_candidates,
    show_hole,
)
from genstudio.core.trained.latent import (
    EncodedSet,
    Endpoint,
    FactorProbe,
    LatentMap,
    PrincipalDirections,
    encode_dataset,
    encode_seconds_per_image,
    endpoint_latent,
    interpolation_frames,
    latent_map,
    load_encoded,
    principal_directions,
    probe_factors,
    save_encoded,
)
from genstudio.core.trained.sampling import (
    export_grid,
    export_images,
    export_stem,
    generate,
    provenance,
)

from .imaging import to_qimage
from .workers import Job, describe_error

log = logging.getLogger(__name__)

THUMBNAILS = 24
ENCODING_CACHE = "explorer"  # folder in a run for encodings of its training images
THUMBNAIL_COLUMNS = 8
PLAYGROUND_FRAME_MS = 200  # a playground GIF plays five recorded moments a second


@dataclass(frozen=True)
class DatasetRequest:
    source: str
    size: int
    channels: int | None  # None: automatic


@dataclass
class DatasetPreview:
    request: DatasetRequest
    dataset: ImageDataset
    class_counts: list[tuple[str, int]]
    thumbnails: QImage   # a grid of up to THUMBNAILS images


def load_preview(request: DatasetRequest, job: Job) -> DatasetPreview:
    dataset = load_source(request.source, request.size, request.channels,
                          progress=job.progress, should_stop=job.cancelled)
    counts = np.bincount(dataset.labels, minlength=dataset.num_classes)[:dataset.num_classes]
    # A fixed-seed random pick shows the variety of a dataset stored class by class.
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(dataset), size=min(THUMBNAILS, len(dataset)), replace=False))
    grid = make_grid(dataset.images[pick], columns=THUMBNAIL_COLUMNS, padding=1, background=128)
    return DatasetPreview(request, dataset, [(n, int(c)) for n, c in zip(dataset.class_names, counts, strict=True)],
                          to_qimage(grid))


@dataclass
class OpenedRun:
    loaded: LoadedRun
    metrics: list[dict[str, Any]]
    latest_grid: tuple[int, str, np.ndarray] | None = None  # (step, path, pixels) of its newest sample grid


def open_run(path: str, device: str, job: Job) -> OpenedRun:
    loaded = load_run(path, device=device)
    return OpenedRun(loaded, RunDir(path).read_metrics(), _latest_grid(loaded.run.path / "samples"))


def _latest_grid(folder: Path) -> tuple[int, str, np.ndarray] | None:
    """The newest samples/step_N.png a run wrote, or None (none yet, or unreadable)."""
    grids = [(int(p.stem.split("_")[1]), p) for p in folder.glob("step_*.png") if p.stem.split("_")[1].isdigit()]
    if not grids:
        return None
    step, path = max(grids)
    try:
        with Image.open(path) as image:
            return step, str(path), np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as exc:
        log.info("could not read %s: %s", path, exc)
        return None


def open_pretrained(name: str, device: str, job: Job) -> OpenedRun:
    """Copy a shipped pretrained run into the user's runs folder (once) and open the copy."""
    return open_run(str(pretrained.install(pretrained.find(name))), device, job)


@dataclass
class Samples:
    loaded: LoadedRun             # the run they came from (its provenance goes into exports)
    images: np.ndarray            # (N, H, W, C) uint8
    seed: int
    label: int | None
    tiles: list[QImage] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # the family's sampling options used


@dataclass(frozen=True)
class SamplingPreview:
    """The state of a slow sampler part-way (e.g. a denoising chain), for the gallery."""

    step: int
    total: int
    grid: QImage | None   # the current images as a grid, when the sampler shows them


def generate_samples(loaded: LoadedRun, n: int, seed: int, label: int | None,
                     options: dict[str, Any] | None, job: Job) -> Samples:
    def progress(step: int, total: int, images) -> None:
        if job.cancelled():
            raise SamplingCancelled("sampling cancelled")
        job.progress(step, total)
        grid = None if images is None else to_qimage(
            make_grid(to_uint8(images), columns=THUMBNAIL_COLUMNS, padding=1, background=128))
        job.preview(SamplingPreview(step, total, grid))

    images = generate(loaded, n, seed, label, options, progress=progress)
    return Samples(loaded, images, seed, label, [to_qimage(image) for image in images], options or {})


@dataclass(frozen=True)
class ExportRequest:
    kind: str                     # "selected", "all" or "grid"
    target: str                   # a folder, or the grid's file
    samples: Samples
    indices: list[int] | None     # None: all images


def export(request: ExportRequest, job: Job) -> list[Path]:
    samples = request.samples
    loaded = samples.loaded
    extra = {}
    if samples.label is not None and loaded.class_names:
        extra["label"] = loaded.class_names[samples.label]
    if samples.options:
        extra["options"] = json.dumps(samples.options, sort_keys=True)
    metadata = provenance(loaded, samples.seed, **extra)
    if request.kind == "grid":
        images = samples.images if request.indices is None else samples.images[request.indices]
        return [export_grid(images, request.target, metadata)]
    return export_images(samples.images, request.target, metadata, export_stem(loaded, samples.seed), request.indices)


# -- evaluation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationRequest:
    runs: tuple[str, ...]
    settings: EvalSettings
    data: str | None = None       # reference images; None: each run's own data source


@dataclass
class RunEvaluation:
    path: str
    name: str
    figures: dict[str, Any]                  # as recorded in the run's metrics.jsonl
    pairs: list[ClosestPair]
    pair_tiles: list[tuple[QImage, QImage]]  # (sample, nearest training image) per pair


def evaluate_runs(request: EvaluationRequest, job: Job) -> list[RunEvaluation]:
    """Evaluate each run with one feature extractor (so their figures share a table) and append
    each record to the run's metrics.jsonl. A cancel stops at the next stage or batch."""
    settings = request.settings
    extractor = None
    if set(settings.metrics) & FEATURE_METRICS:
        job.say("loading the feature extractor")
        extractor = get_extractor(settings.extractor)
    results = []
    for number, path in enumerate(request.runs, 1):
        loaded = load_run(path, device="auto")
        prefix = f"{loaded.name} ({number} of {len(request.runs)})" if len(request.runs) > 1 else loaded.name
        job.say(f"{prefix}: loading the data")
        spec = loaded.family.spec
        data = load_source(request.data or loaded.settings.data, spec.size, spec.channels,
                           progress=job.progress, should_stop=job.cancelled)
        evaluation = run_evaluation(loaded.family, data, settings, extractor,
                                    stage=lambda stage, prefix=prefix: job.say(f"{prefix}: {stage}"),
                                    count=job.progress, should_stop=job.cancelled)
        record = {"step": loaded.step, "eval_source": data.source, **evaluation.figures}
        loaded.run.append_metrics(record)
        tiles = [(to_qimage(p.sample), to_qimage(p.training)) for p in evaluation.closest_pairs]
        results.append(RunEvaluation(str(loaded.run.path), loaded.name, record, evaluation.closest_pairs, tiles))
    return results


def check_inception_file(path: str, job: Job) -> str:
    """Load the file as the feature network (raises InvalidWeightsError if it is not one)."""
    job.say(f"checking {path}")
    InceptionExtractor(path)
    return path


def download_inception_weights(sha256: str, job: Job) -> str:
    job.say("downloading the Inception-v3 weights")
    path = download_inception(progress=lambda done, total: job.progress(done, total or 0),
                              should_stop=job.cancelled, sha256=sha256)
    job.say("checking the downloaded file")
    InceptionExtractor(path)
    return str(path)


# -- latent explorer --------------------------------------------------------------------------


@dataclass
class EncodedData:
    """A sample of the run's training images, encoded, and what the explorer derives from it."""

    loaded: LoadedRun
    dataset: ImageDataset
    encoded: EncodedSet
    basis: PrincipalDirections
    map: LatentMap | None         # None: the latent is 1-D, or too few images were encoded
    probes: list[FactorProbe]
    seconds: float | None         # None: read from the run folder, encoded before


@dataclass(frozen=True)
class EncodingEstimate:
    """What encoding would take, returned instead of starting an encoding too long to begin
    unasked (GAN inversion: minutes)."""

    loaded: LoadedRun
    dataset: ImageDataset
    count: int
    seconds: float


# A batch takes at most about this long, so Stop (or opening another run) ends an encoding
# within it: GAN inversion spends seconds per image, and it checks for Stop between batches.
ENCODE_BATCH_SECONDS = 1.0


def encode_for_explorer(loaded: LoadedRun, count: int, directions: int, stop: threading.Event,
                        dataset: ImageDataset | None, job: Job,
                        ask_above_seconds: float | None = None) -> EncodedData | EncodingEstimate:
    """Encode `count` of the run's training images (`dataset`: already loaded; None: load
    them). `stop` ends the encoding early and keeps what is done (job.cancelled() drops the
    result instead). When encoding would take longer than `ask_above_seconds`, nothing is
    encoded and the estimate is returned."""
    family = loaded.family
    spec = family.spec
    if dataset is None:
        job.say("loading the training images")
        dataset = load_source(loaded.settings.data, spec.size, spec.channels, progress=job.progress,
                              should_stop=job.cancelled)
    cache = loaded.run.path / ENCODING_CACHE / f"step{loaded.step}-n{count}.npz"
    encoded = load_encoded(cache, dataset, family.latent_dim, count)
    seconds = None
    if encoded is None:
        count = min(count, len(dataset))
        job.say("timing the encoder")
        per_image = encode_seconds_per_image(family, dataset, probe=1)
        # Stop pressed while the encoder was timed: nothing encoded yet, so offer the estimate.
        if stop.is_set() or (ask_above_seconds is not None and per_image * count > ask_above_seconds):
            return EncodingEstimate(loaded, dataset, count, per_image * count)
        job.say(f"encoding {count:,} images")
        started = time.perf_counter()
        batch = max(1, min(50, int(ENCODE_BATCH_SECONDS / per_image)))
        encoded = encode_dataset(family, dataset, count, batch=batch, progress=job.progress,
                                 should_stop=lambda: stop.is_set() or job.cancelled())
        seconds = time.perf_counter() - started
        if len(encoded) == encoded.requested:
            try:
                save_encoded(cache, encoded)
            except OSError as exc:  # e.g. a read-only run; the message says enough (no traceback,
                # whose formatting parses source: see workers.SOURCE_PARSING)
                log.info("could not keep the encoding in %s: %s", cache, exc)
    basis = principal_directions(encoded.latents, directions)
    mapped = latent_map(encoded.latents) if family.latent_dim >= 2 and len(encoded) >= 3 else None
    probes = probe_factors(encoded) if len(encoded) >= 10 and (
        encoded.factors is not None or len(encoded.class_names) > 1) else []
    return EncodedData(loaded, dataset, encoded, basis, mapped, probes, seconds)


def latent_of(loaded: LoadedRun, endpoint: Endpoint, label: int | None, job: Job) -> Any:
    """An image (or seed) as a latent (D,), for "start from this image"."""
    return endpoint_latent(loaded.family, endpoint, label)


@dataclass
class Interpolation:
    loaded: LoadedRun
    frames: np.ndarray            # (K, H, W, C) uint8
    strip: QImage
    metadata: dict[str, Any]


def interpolate_endpoints(loaded: LoadedRun, start: Endpoint, end: Endpoint, steps: int, mode: str,
                          label: int | None, job: Job) -> Interpolation:
    job.say(f"encoding the endpoints and decoding {steps} frames")
    frames = interpolation_frames(loaded.family, start, end, steps, mode, label)
    extra = {"label": loaded.class_names[label]} if label is not None and loaded.class_names else {}
    metadata = provenance(loaded, None, start=start.describe(), end=end.describe(), steps=steps,
                          mode=mode, **extra)
    strip = make_grid(frames, columns=len(frames), padding=1, background=128)
    return Interpolation(loaded, frames, to_qimage(strip), metadata)


def export_interpolation(interpolation: Interpolation, path: str, scale: int, job: Job) -> list[Path]:
    """A .gif animates the frames; anything else is written as one PNG strip."""
    if path.lower().endswith(".gif"):
        save_gif(path, interpolation.frames, interpolation.metadata, scale=scale)
    else:
        save_png(path, make_grid(interpolation.frames, columns=len(interpolation.frames)),
                 interpolation.metadata, scale=scale)
    return [Path(path)]


# -- inpainting -------------------------------------------------------------------------------


def load_training_images(loaded: LoadedRun, job: Job) -> ImageDataset:
    """The run's own training images at its resolution, for "start from a training image"."""
    spec = loaded.family.spec
    job.say("loading the training images")
    return load_source(loaded.settings.data, spec.size, spec.channels, progress=job.progress,
                       should_stop=job.cancelled)


@dataclass
class Fill:
    """N candidate fills of one image and mask by one run."""

    loaded: LoadedRun
    image: np.ndarray             # the input (H, W, C) uint8 at the model's resolution
    fill: np.ndarray              # bool (H, W), True = filled
    seed: int                     # candidate k used seed + k
    label: int | None
    candidates: np.ndarray        # (N, H, W, C) uint8, known pixels equal to the input's
    tiles: list[QImage]
    source: str                   # where the input came from, for the metadata
    seconds: float

    def metadata(self, index: int) -> dict[str, Any]:
        extra = {"label": self.loaded.class_names[self.label]} if (
            self.label is not None and self.loaded.class_names) else {}
        return provenance(self.loaded, self.seed + index, method=self.loaded.family.inpaint_method,
                          source=self.source, candidate=f"{index + 1} of {len(self.candidates)}", **extra)


@dataclass(frozen=True)
class FillPreview:
    done: int
    total: int
    image: QImage | None          # the candidate being made, part-way, when the method shows it


def fill_candidates(loaded: LoadedRun, image: np.ndarray, fill: np.ndarray, n: int, seed: int,
                    label: int | None, source: str, job: Job) -> Fill:
    def progress(done: int, total: int, images) -> None:
        if job.cancelled():
            raise SamplingCancelled("inpainting cancelled")
        job.progress(done, total)
        shown = None if images is None else to_qimage(np.where(fill[:, :, None], to_uint8(images)[0], image))
        job.preview(FillPreview(done, total, shown))

    started = time.perf_counter()
    candidates = inpaint_candidates(loaded.family, image, fill, n, seed, label, progress=progress)
    return Fill(loaded, image, fill, seed, label, candidates, [to_qimage(c) for c in candidates], source,
                time.perf_counter() - started)


@dataclass
class ComparedFill:
    """One run's fill of the shared image and mask (at that run's own resolution)."""

    name: str                     # run folder name
    title: str                    # family title
    method: str
    image: np.ndarray | None      # None when the run could not fill (see error)
    tile: QImage | None
    seconds: float
    error: str = ""


def compare_fills(current: LoadedRun, paths: list[str], device: str, image: np.ndarray, fill: np.ndarray,
                  seed: int, job: Job) -> list[ComparedFill]:
    """The current run and each run in `paths` fill the same hole with the same seed. A run of
    another size or colour count gets the image and mask resampled to its own (fit_to_model);
    a run that cannot be opened or cannot inpaint is listed with the reason. Each run's result
    is sent as a job piece when it is ready; progress counts the current run's steps."""
    results: list[ComparedFill] = []
    runs: list[tuple[str, LoadedRun | None, str]] = [(current.name, current, "")]
    for path in paths:
        if Path(path).resolve() == current.run.path.resolve():
            continue
        try:
            runs.append((Path(path).name, load_run(path, device=device), ""))
        except Exception as exc:  # noqa: BLE001 - one bad run must not sink the comparison
            runs.append((Path(path).name, None, describe_error(exc)))
    for index, (name, loaded, error) in enumerate(runs):
        if job.cancelled():
            raise SamplingCancelled("comparison cancelled")
        job.say(f"{name} ({index + 1} of {len(runs)})")
        results.append(_fill_one(name, loaded, error, image, fill, seed, job))
        job.piece(results[-1])
    return results


def _fill_one(name: str, loaded: LoadedRun | None, error: str, image: np.ndarray, fill: np.ndarray,
              seed: int, job: Job) -> ComparedFill:
    if loaded is None:
        return ComparedFill(name, "—", "", None, None, 0.0, error)
    family = loaded.family
    if Capability.INPAINT not in family.capabilities:
        return ComparedFill(name, family.title, "", None, None, 0.0, f"{family.title} cannot inpaint")
    own_image, own_fill = fit_to_model(image, fill, family.spec.size, family.spec.channels)

    def progress(done: int, total: int, _images) -> None:
        if job.cancelled():
            raise SamplingCancelled("comparison cancelled")
        job.progress(done, total)

    started = time.perf_counter()
    try:
        result = inpaint_candidates(family, own_image, own_fill, 1, seed, None, progress=progress)[0]
    except InpaintError as exc:  # e.g. the hole vanished when resampled to a small model
        return ComparedFill(name, family.title, family.inpaint_method, None, None, 0.0, str(exc))
    return ComparedFill(name, family.title, family.inpaint_method, result, to_qimage(result),
                        time.perf_counter() - started)


def export_fill(fill: Fill, index: int, path: str, scale: int, job: Job) -> list[Path]:
    return export_inpainting(path, fill.image, fill.fill, fill.candidates[index], fill.metadata(index), scale)


def export_comparison(compared: list[ComparedFill], image: np.ndarray, fill: np.ndarray, seed: int, path: str,
                      scale: int, job: Job) -> list[Path]:
    """The input with its hole, then every run's result, at the largest resolution among them
    (nearest-neighbour, so no model's pixels are blurred), side by side in one PNG."""
    shown = [c for c in compared if c.image is not None]
    side = max([image.shape[0], *(c.image.shape[0] for c in shown)])
    panels = [show_hole(image, fill)] + [show_hole(c.image, np.zeros(c.image.shape[:2], bool)) for c in shown]
    panels = [np.asarray(to_pil(p).resize((side, side), Image.Resampling.NEAREST).convert("RGB")) for p in panels]
    metadata = {"seed": seed, "panels": " | ".join(["input"] + [f"{c.title} ({c.name})" for c in shown]),
                "methods": " | ".join(c.method for c in shown)}
    save_png(path, make_grid(np.stack(panels), columns=len(panels)), metadata, scale=scale)
    return [Path(path)]


def export_playground_gif(recording: Recording, path: str, job: Job) -> Path:
    """The Playground's recorded moments, side by side, as a looping GIF."""
    job.say(f"drawing {len(recording.moments)} moments")
    save_gif(path, recording.frames(), {"moments": len(recording.moments), "every_seconds": recording.interval},
             frame_ms=PLAYGROUND_FRAME_MS, bounce=False)
    return Path(path)
