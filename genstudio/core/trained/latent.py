"""Latent-space operations behind the explorer panel and `genstudio interpolate`.

Every decodable family speaks flat latents, (N, D) on the CPU, with a standard normal prior
(the VAE's prior, the GAN's input noise, the flow's base density, diffusion's x_T). On top of
that this module builds:

- interpolation paths between two latents, straight or along the great circle;
- principal directions of an encoded dataset (the GANSpace idea: slide along the directions in
  which the data's latents actually vary, not along arbitrary axes), with the share of the
  variance each explains;
- a 2-D map of the encoded set (the latent itself when D = 2, else its top two directions) that
  maps a point of the plane back to a latent;
- linear probes that say how well the latent predicts each known generating factor of a
  built-in dataset, scored on images the probe did not see.

Qt-free; the app and the CLI call it.
"""

from __future__ import annotations

import os
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..data import ImageDataset, load_image
from ..families import MAX_SEED, Capability, Family
from ..runs.atomic import write_atomic
from ..runs.images import to_uint8

InterpolationMode = Literal["spherical", "linear"]
INTERPOLATION_MODES: tuple[str, ...] = ("spherical", "linear")
_PARALLEL_COS = 1.0 - 1e-7  # beyond this |cos| the great circle through a and b is not unique


class LatentError(ValueError):
    """Bad input to a latent operation, with a message meant for the user."""


class EncodingCancelled(Exception):
    pass


# -- interpolation -----------------------------------------------------------------------------


def lerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Points (1 − t)·a + t·b for each t: a, b (D,), t (K,) → (K, D)."""
    t = t.to(a.dtype).view(-1, 1)
    return (1 - t) * a + t * b


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """The great-circle path from the direction of a to that of b, its norm moving linearly
    from ‖a‖ to ‖b‖: a, b (D,), t (K,) → (K, D).

    For a Gaussian latent the straight line between two samples dips towards the origin, where
    norms near √D make the prior's mass and the model never trained (White 2016, "Sampling
    generative networks"); this path keeps the norm typical. When a and b are (anti)parallel,
    or one is zero, no unique great circle exists and the straight path is returned."""
    t = t.to(torch.float64).view(-1, 1)
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    norm_a, norm_b = a64.norm(), b64.norm()
    if norm_a == 0 or norm_b == 0:
        return lerp(a, b, t.view(-1))
    unit_a, unit_b = a64 / norm_a, b64 / norm_b
    cos = torch.clamp(unit_a @ unit_b, -1.0, 1.0)
    if abs(float(cos)) > _PARALLEL_COS:
        return lerp(a, b, t.view(-1))
    omega = torch.arccos(cos)
    direction = (torch.sin((1 - t) * omega) * unit_a + torch.sin(t * omega) * unit_b) / torch.sin(omega)
    path = ((1 - t) * norm_a + t * norm_b) * direction
    path[t.view(-1) == 0] = a64  # the endpoints exactly, not up to rounding
    path[t.view(-1) == 1] = b64
    return path.to(a.dtype)


def interpolate(a: Tensor, b: Tensor, steps: int, mode: str = "spherical") -> Tensor:
    """`steps` latents from a to b inclusive, evenly spaced in t: (steps, D)."""
    if steps < 2:
        raise LatentError("an interpolation needs at least 2 steps")
    if mode not in INTERPOLATION_MODES:
        raise LatentError(f"interpolation mode must be spherical or linear, not {mode!r}")
    a, b = a.reshape(-1), b.reshape(-1)
    if a.shape != b.shape:
        raise LatentError(f"the two latents differ in size ({a.numel()} and {b.numel()})")
    t = torch.linspace(0, 1, steps, dtype=torch.float64)
    return (slerp if mode == "spherical" else lerp)(a, b, t)


def prior_latents(dim: int, n: int, seed: int) -> Tensor:
    """n draws from the standard normal prior, (n, dim) float32; the same seed, the same z."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=generator)


def decode_latents(family: Family, latents: Tensor, label: int | None = None, *,
                   batch: int = 64) -> np.ndarray:
    """(N, D) latents → (N, H, W, C) uint8 images, decoded in batches (with `label` for a
    class-conditional model; None: class 0)."""
    if Capability.DECODE not in family.capabilities:
        raise LatentError(f"{family.title} cannot decode a latent")
    latents = latents.reshape(latents.shape[0], -1).float()
    if latents.shape[1] != family.latent_dim:
        raise LatentError(f"latents of {latents.shape[1]} dimensions given to a model of {family.latent_dim}")
    family.eval_mode()
    images = []
    with torch.no_grad():
        for chunk in latents.split(batch):
            labels = (torch.full((len(chunk),), label or 0, dtype=torch.long)
                      if family.spec.num_classes else None)
            images.append(to_uint8(family.decode(chunk, labels)))
    return np.concatenate(images)


@dataclass(frozen=True)
class DecodedLatent:
    latent: Tensor                # the (D,) latent decoded
    image: np.ndarray             # (H, W, C) uint8
    decode_ms: float              # the model's decode alone


def decode_one(family: Family, latent: Tensor, label: int | None = None) -> DecodedLatent:
    """One (D,) latent decoded (a slider move), timed."""
    started = time.perf_counter()
    image = decode_latents(family, latent[None], label)[0]
    return DecodedLatent(latent, image, 1000 * (time.perf_counter() - started))


@dataclass(frozen=True)
class Endpoint:
    """One end of an interpolation: exactly one of a prior seed, an image (uint8 at the model's
    size), an image file, or a latent."""

    seed: int | None = None
    image: np.ndarray | None = None
    path: str | None = None
    latent: Tensor | None = None
    name: str = ""  # how to describe it, e.g. "training image #12" (default: from its kind)

    @staticmethod
    def parse(text: str) -> Endpoint:
        """The CLI's spelling: seed:N, or else an image file's path."""
        if text.startswith("seed:"):
            try:
                seed = int(text[len("seed:"):])
            except ValueError:
                seed = -1
            if not 0 <= seed <= MAX_SEED:
                raise LatentError(f"{text!r}: a seed endpoint is seed:N with N a whole number from 0 to {MAX_SEED}")
            return Endpoint(seed=seed)
        return Endpoint(path=text)

    def describe(self) -> str:
        if self.name:
            return self.name
        if self.seed is not None:
            return f"seed {self.seed}"
        if self.path is not None:
            return os.path.basename(self.path)
        return "an image" if self.image is not None else "a latent"


def endpoint_latent(family: Family, endpoint: Endpoint, label: int | None = None) -> Tensor:
    """The endpoint as a latent (D,): a seed is drawn from the prior, an image is encoded."""
    if Capability.DECODE not in family.capabilities:
        raise LatentError(f"{family.title} cannot decode a latent, so it cannot interpolate")
    if endpoint.latent is not None:
        return endpoint.latent.reshape(-1).float()
    if endpoint.seed is not None:
        return prior_latents(family.latent_dim, 1, endpoint.seed)[0]
    if Capability.ENCODE not in family.capabilities:
        raise LatentError(f"{family.title} cannot encode an image; start from a seed")
    image = endpoint.image
    if image is None:
        if endpoint.path is None:
            raise LatentError("an endpoint needs a seed, an image, a file or a latent")
        image = load_image(endpoint.path, family.spec.size, family.spec.channels)
    return encode_images(family, [image], label)[0]


def interpolation_frames(family: Family, start: Endpoint, end: Endpoint, steps: int, mode: str = "spherical",
                         label: int | None = None) -> np.ndarray:
    """(steps, H, W, C) uint8 frames from `start` to `end` through the latent space."""
    a = endpoint_latent(family, start, label)
    b = endpoint_latent(family, end, label)
    return decode_latents(family, interpolate(a, b, steps, mode), label)


# -- principal directions -------------------------------------------------------------------


@dataclass(frozen=True)
class PrincipalDirections:
    """The top-K principal directions of a set of latents.

    Coordinates are in standard deviations of the data along each direction, so a slider's
    range ±3 covers nearly all of the data whatever the latent's scale."""

    mean: Tensor        # (D,)
    directions: Tensor  # (K, D), orthonormal rows, by decreasing variance
    std: Tensor         # (K,) the data's standard deviation along each direction
    explained: Tensor   # (K,) the fraction of the total variance each direction explains

    @property
    def count(self) -> int:
        return int(self.directions.shape[0])

    def coordinates(self, z: Tensor) -> Tensor:
        """(N, D) latents → (N, K) coordinates in standard deviations."""
        return ((z.reshape(-1, self.mean.numel()) - self.mean) @ self.directions.T) / self.std

    def with_coordinate(self, z: Tensor, index: int, value: float) -> Tensor:
        """z (D,) moved along direction `index` until its coordinate there is `value`; every
        other component, including those outside the top K, is kept."""
        current = float(self.coordinates(z)[0, index])
        return z + (value - current) * self.std[index] * self.directions[index]


class LatentPosition:
    """Where a person stands in a model's latent space, and how sliders read and move it: the
    current latent, where Reset returns, and the sliders' axes (raw dimensions from `offset`,
    or the principal directions of encoded images once there are some). The Explore tab
    renders it; it holds no Qt."""

    def __init__(self, dim: int):
        self.dim = dim
        self.z: Tensor | None = None        # the current latent (D,)
        self.origin: Tensor | None = None   # where Reset returns
        self.basis: PrincipalDirections | None = None
        self.raw = True                     # sliders on raw dimensions (always, without a basis)
        self.offset = 0                     # the first raw dimension on a slider

    @property
    def principal(self) -> bool:
        """Whether the sliders move along principal directions."""
        return not self.raw and self.basis is not None

    def set_axes(self, raw: bool, basis: PrincipalDirections | None = None) -> None:
        self.basis = basis
        self.raw = raw or basis is None

    def set(self, z: Tensor, origin: bool = False) -> None:
        """Move to `z`; with `origin`, Reset comes back here."""
        self.z = z.reshape(-1).float().clone()
        if origin:
            self.origin = self.z.clone()

    def reset(self) -> bool:
        if self.origin is None:
            return False
        self.set(self.origin)
        return True

    def slider_values(self, count: int) -> list[float]:
        """What the first `count` sliders read (0 past the last axis)."""
        if self.z is None:
            return [0.0] * count
        if self.principal:
            coordinates = self.basis.coordinates(self.z)[0]
            return [float(coordinates[i]) if i < self.basis.count else 0.0 for i in range(count)]
        return [float(self.z[self.offset + i]) if self.offset + i < self.dim else 0.0 for i in range(count)]

    def move(self, slider: int, value: float) -> None:
        """Slider `slider` set to `value`: along its principal direction (every other component
        kept), or its raw dimension."""
        if self.z is None:
            return
        if self.principal:
            self.z = self.basis.with_coordinate(self.z, slider, value)
        else:
            self.z[self.offset + slider] = value


def principal_directions(latents: Tensor, count: int) -> PrincipalDirections:
    """PCA of (N, D) latents, keeping min(count, N − 1, D) directions; each direction's sign
    is fixed so that its largest component is positive (the same data, the same sliders)."""
    latents = latents.reshape(latents.shape[0], -1).to(torch.float64)
    n, d = latents.shape
    if n < 2:
        raise LatentError("principal directions need at least 2 encoded images")
    mean = latents.mean(0)
    centred = latents - mean
    _u, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    k = max(1, min(count, n - 1, d))
    directions = vh[:k]
    largest = directions.abs().argmax(dim=1)
    signs = torch.sign(directions.gather(1, largest[:, None]))
    directions = directions * signs
    variance = singular.pow(2) / (n - 1)
    total = variance.sum().clamp_min(1e-30)
    std = variance[:k].sqrt().clamp_min(1e-12)  # a flat direction still gets a usable scale
    return PrincipalDirections(mean.float(), directions.float(), std.float(), (variance[:k] / total).float())


# -- the 2-D map ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatentMap:
    """Encoded latents placed in a plane, and the way back from the plane to a latent."""

    points: np.ndarray            # (N, 2) float32, in latent units
    axis_names: tuple[str, str]
    basis: PrincipalDirections | None  # None: the latent is itself 2-D

    def project(self, latents: Tensor) -> np.ndarray:
        """(N, D) latents → (N, 2) plane coordinates: each latent's place on the map."""
        return _plane(latents, self.basis)

    def to_latent(self, x: float, y: float) -> Tensor:
        """The latent at plane point (x, y): mean + x·d₁ + y·d₂ (the point itself for D = 2)."""
        if self.basis is None:
            return torch.tensor([x, y], dtype=torch.float32)
        offset = torch.tensor([x, y], dtype=torch.float32) @ self.basis.directions[:2]
        return self.basis.mean + offset


def latent_map(latents: Tensor) -> LatentMap:
    latents = latents.reshape(latents.shape[0], -1).float()
    if latents.shape[1] == 2:
        return LatentMap(latents.numpy().astype(np.float32), ("z₁", "z₂"), None)
    if latents.shape[1] < 2:
        raise LatentError("a 2-D map needs a latent of at least 2 dimensions")
    basis = principal_directions(latents, 2)
    if basis.count < 2:
        raise LatentError("a 2-D map needs at least 3 encoded images")
    names = tuple(f"PC{i + 1} ({100 * float(basis.explained[i]):.0f}% of variance)" for i in range(2))
    return LatentMap(_plane(latents, basis), names, basis)  # type: ignore[arg-type]


def _plane(latents: Tensor, basis: PrincipalDirections | None) -> np.ndarray:
    """(N, D) latents → (N, 2): offsets from the mean along the top two directions (the
    latent itself without a basis)."""
    latents = latents.reshape(-1, latents.shape[-1]).float()
    if basis is None:
        return latents.numpy().astype(np.float32)
    return ((latents - basis.mean) @ basis.directions[:2].T).numpy().astype(np.float32)


# -- encoding a dataset -----------------------------------------------------------------------


@dataclass
class EncodedSet:
    """A sample of a dataset's images and their latents, row for row."""

    latents: Tensor              # (N, D) float32
    indices: np.ndarray          # (N,) the images' indices in the dataset
    labels: np.ndarray           # (N,) class indices (all 0 without classes)
    class_names: list[str]
    factors: np.ndarray | None   # (N, F) known generating factors in [0, 1] (built-ins only)
    factor_names: list[str] = field(default_factory=list)
    circular_factors: list[str] = field(default_factory=list)
    requested: int = 0           # how many were asked for (more than len when stopped early)

    def __len__(self) -> int:
        return int(self.latents.shape[0])


def choose_images(dataset_size: int, count: int, seed: int) -> np.ndarray:
    """`count` distinct image indices drawn from the dataset by `seed`, in the order drawn."""
    rng = np.random.default_rng(seed)
    return rng.permutation(dataset_size)[: min(count, dataset_size)]


def encode_dataset(
    family: Family,
    dataset: ImageDataset,
    count: int,
    *,
    seed: int = 0,
    batch: int = 100,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> EncodedSet:
    """Encode `count` images of the dataset (chosen by seed) in batches. When should_stop()
    turns true the images encoded so far are returned (none yet: EncodingCancelled)."""
    if Capability.ENCODE not in family.capabilities:
        raise LatentError(f"{family.title} cannot encode images")
    if count < 1:
        raise LatentError("encode at least 1 image")
    if dataset.size != family.spec.size or dataset.channels != family.spec.channels:
        raise LatentError(f"the dataset's images are {dataset.size} px × {dataset.channels} channels, "
                          f"the model's {family.spec.size} px × {family.spec.channels}")
    chosen = choose_images(len(dataset), count, seed)
    parts: list[Tensor] = []
    done = 0
    for start in range(0, len(chosen), batch):
        if should_stop is not None and should_stop():
            break
        rows = chosen[start : start + batch]
        parts.append(_encode_rows(family, dataset, rows))
        done += len(rows)
        if progress is not None:
            progress(done, len(chosen))
    if not parts:
        raise EncodingCancelled
    return _encoded_set(dataset, torch.cat(parts), chosen[:done], len(chosen))


def encode_seconds_per_image(family: Family, dataset: ImageDataset, *, probe: int = 4, seed: int = 0) -> float:
    """Seconds one image takes to encode, timed on the first `probe` images encode_dataset
    would choose: GAN inversion takes seconds per image where an encoder network takes
    microseconds, so a caller can ask before starting a long encoding."""
    rows = choose_images(len(dataset), probe, seed)
    started = time.perf_counter()
    _encode_rows(family, dataset, rows)
    return (time.perf_counter() - started) / len(rows)


def _encode_rows(family: Family, dataset: ImageDataset, rows: np.ndarray) -> Tensor:
    x = torch.from_numpy(dataset.images[rows]).permute(0, 3, 1, 2).float() / 255.0
    labels = torch.from_numpy(dataset.labels[rows]).long() if family.spec.num_classes else None
    # No torch.no_grad() here: inversion-based encoders (the GAN's) optimise with gradients.
    return family.encode(x, labels).reshape(len(rows), -1).float().cpu()


def _encoded_set(dataset: ImageDataset, latents: Tensor, indices: np.ndarray, requested: int) -> EncodedSet:
    return EncodedSet(
        latents=latents,
        indices=indices,
        labels=dataset.labels[indices],
        class_names=list(dataset.class_names),
        factors=None if dataset.factors is None else dataset.factors[indices],
        factor_names=list(dataset.factor_names),
        circular_factors=list(dataset.circular_factors),
        requested=requested,
    )


def save_encoded(path: str | os.PathLike[str], encoded: EncodedSet) -> None:
    """Keep an encoding (latents and image indices only: the rest comes from the dataset) as
    .npz, written atomically, so a slow encoder (GAN inversion) runs once per checkpoint."""
    latents = encoded.latents.numpy().astype(np.float32)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez(f, latents=latents, indices=encoded.indices.astype(np.int64))

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, write)


def load_encoded(path: str | os.PathLike[str], dataset: ImageDataset, latent_dim: int, count: int,
                 seed: int = 0) -> EncodedSet | None:
    """The encoding saved by save_encoded for this dataset, `count` and `seed`, or None when
    there is none or it does not match (another dataset size, a damaged file). Arrays only:
    nothing is unpickled."""
    try:
        # Our own handle: np.load leaves its file open when the archive turns out damaged.
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
            latents, indices = data["latents"], data["indices"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    expected = choose_images(len(dataset), count, seed)
    if (latents.dtype != np.float32 or latents.shape != (len(expected), latent_dim)
            or not np.array_equal(indices, expected) or not np.isfinite(latents).all()):
        return None
    return _encoded_set(dataset, torch.from_numpy(latents), indices, len(expected))


# -- probing known factors ---------------------------------------------------------------------


@dataclass(frozen=True)
class FactorProbe:
    """How well a linear function of the latent predicts one known factor, on held-out images."""

    name: str
    measure: str    # "R²" (continuous factors; circular ones as (cos, sin)) or "accuracy" (class)
    score: float
    chance: float   # what predicting without the latent scores: 0 for R², the majority class rate

    def describe(self) -> str:
        if self.measure == "accuracy":
            return f"{self.name}: accuracy {self.score:.0%} (chance {self.chance:.0%})"
        return f"{self.name}: R² {self.score:.2f}"


def probe_factors(encoded: EncodedSet, *, test_fraction: float = 0.3, seed: int = 0,
                  max_dims: int = 64, ridge: float = 1e-3) -> list[FactorProbe]:
    """A linear probe per known factor (and the class, when there are classes), fitted on part
    of the encoded images and scored on the rest.

    The probe reads the top `max_dims` principal coordinates of the training part's latents
    (all of them when the latent is smaller): for latents as wide as the image (flow,
    diffusion) a probe on every dimension would fit its few hundred training images exactly and
    say nothing. Ridge regression (λ = ridge·N) with a bias; circular factors (hue, rotation)
    are predicted as (cos 2πf, sin 2πf) so that 0.99 and 0.01 count as close."""
    n = len(encoded)
    if n < 10:
        raise LatentError("a factor probe needs at least 10 encoded images")
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(2, int(round(n * test_fraction)))
    test, train = order[:n_test], order[n_test:]
    latents = encoded.latents.to(torch.float64)
    basis = principal_directions(latents[train], max_dims)
    features = ((latents - basis.mean.double()) @ basis.directions.double().T) / basis.std.double()
    features = torch.cat([features, torch.ones(n, 1, dtype=torch.float64)], dim=1)  # bias column

    def fit_predict(targets: np.ndarray) -> np.ndarray:
        y = torch.from_numpy(np.asarray(targets, np.float64).reshape(n, -1))
        x_train = features[train]
        gram = x_train.T @ x_train + ridge * len(train) * torch.eye(x_train.shape[1], dtype=torch.float64)
        weights = torch.linalg.solve(gram, x_train.T @ y[train])
        return (features[test] @ weights).numpy()

    probes = []
    if encoded.factors is not None:
        for j, name in enumerate(encoded.factor_names):
            f = encoded.factors[:, j].astype(np.float64)
            targets = (np.stack([np.cos(2 * np.pi * f), np.sin(2 * np.pi * f)], 1)
                       if name in encoded.circular_factors else f[:, None])
            predicted = fit_predict(targets)
            probes.append(FactorProbe(name, "R²", _r_squared(targets[test], predicted), 0.0))
    if len(encoded.class_names) > 1:
        onehot = np.eye(len(encoded.class_names))[encoded.labels]
        predicted = fit_predict(onehot).argmax(1)
        truth = encoded.labels[test]
        majority = np.bincount(truth, minlength=len(encoded.class_names)).max() / len(truth)
        probes.append(FactorProbe("class", "accuracy", float((predicted == truth).mean()), float(majority)))
    return probes


def _r_squared(truth: np.ndarray, predicted: np.ndarray) -> float:
    """1 − SSE/SST over all target columns together (SST about the held-out mean)."""
    residual = ((truth - predicted) ** 2).sum()
    total = ((truth - truth.mean(0)) ** 2).sum()
    return float(1.0 - residual / total) if total > 0 else 0.0


def encode_images(family: Family, images: Sequence[np.ndarray], label: int | None = None) -> Tensor:
    """Encode uint8 (H, W, C) images at the model's size to latents (len, D)."""
    if Capability.ENCODE not in family.capabilities:
        raise LatentError(f"{family.title} cannot encode images")
    spec = family.spec
    for image in images:
        if image.shape != (spec.size, spec.size, spec.channels):
            raise LatentError(f"an image of shape {image.shape} given to a model of "
                              f"{spec.size}×{spec.size}×{spec.channels}")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    labels = torch.full((len(images),), label or 0, dtype=torch.long) if spec.num_classes else None
    family.eval_mode()
    return family.encode(x, labels).reshape(len(images), -1).float().cpu()


__all__ = [
    "INTERPOLATION_MODES", "EncodedSet", "Endpoint", "EncodingCancelled", "FactorProbe", "LatentError", "LatentMap",
    "PrincipalDirections", "choose_images", "decode_latents", "encode_dataset", "encode_images", "encode_seconds_per_image", "endpoint_latent", "interpolation_frames", "load_encoded", "interpolate", "latent_map", "lerp",
    "principal_directions", "prior_latents", "probe_factors", "save_encoded", "slerp",
]
