"""The in-memory dataset every family trains on, and the errors/skip records around it."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

# Integer weights of ITU-R 601 luma exactly as Pillow's RGB->"L" conversion uses them, so a
# greyscale dataset derived here matches what a user would get from PIL; they sum to 2**16,
# which keeps a grey pixel (R == G == B) exactly unchanged.
_LUMA_WEIGHTS = np.array([19595, 38470, 7471], dtype=np.uint32)

# How many class names describe() spells out before eliding the rest.
_NAMES_SHOWN = 6


class DatasetError(Exception):
    """A dataset cannot be used; the message is one sentence meant for the user."""


class DatasetCancelled(DatasetError):
    """Loading was stopped by the caller's should_stop()."""

    def __init__(self) -> None:
        super().__init__("cancelled")


@dataclass(frozen=True)
class SkippedFile:
    path: str  # relative to the source folder, printable even when the name is not UTF-8
    reason: str  # "category" or "category: detail" or "category (detail)"

    def __post_init__(self) -> None:
        # Safe to print wherever it goes (terminal, list, cache): a name's control characters
        # could otherwise erase lines, retitle the window or forge a line of the report.
        object.__setattr__(self, "path", printable(self.path))
        object.__setattr__(self, "reason", printable(self.reason))

    @property
    def category(self) -> str:
        """The reason without its detail, so skips can be counted by kind."""
        return self.reason.split(" (", 1)[0].split(":", 1)[0]


@dataclass
class ImageDataset:
    images: np.ndarray  # uint8 (N, H, W, C), C in {1, 3}, H == W
    labels: np.ndarray  # int64 (N,); all 0 when there are no classes
    class_names: list[str]  # [] when unconditional
    source: str  # "builtin:NAME" or the absolute folder path
    skipped: list[SkippedFile]
    factors: np.ndarray | None = None  # builtins only: float32 (N, F) in [0, 1]
    factor_names: list[str] = field(default_factory=list)
    circular_factors: list[str] = field(default_factory=list)  # of factor_names: 0 and 1 coincide
    files: list[str] = field(default_factory=list)  # folders: relative source path per image

    def fingerprint(self) -> str:
        """A short hash of which images these are, in order (their files and classes, or the
        built-in's count): a run stores it to notice when its folder has changed."""
        digest = hashlib.sha256(f"{len(self.images)}\n{self.class_names}\n".encode())
        for name in self.files:
            digest.update(name.encode("utf-8", "surrogateescape") + b"\n")
        digest.update(self.labels.astype("<i8").tobytes())
        return digest.hexdigest()[:16]

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def skipped_summary(self) -> str:
        """E.g. "3 skipped: 2 not an image, 1 truncated image"; "" when nothing was skipped."""
        if not self.skipped:
            return ""
        return f"{len(self.skipped)} skipped: {count_by_category(self.skipped)}"

    def describe(self) -> str:
        """One line for a status bar."""
        colour = "RGB" if self.channels == 3 else "greyscale"
        line = f"{printable(self.source)} — {len(self)} images, {self.size}×{self.size} {colour}, "
        line += _describe_classes(self.class_names)
        if self.skipped:
            line += f"; {len(self.skipped)} skipped"
        return line


def printable(name: str) -> str:
    """A file name as text a person can read and a terminal shows as it is: bytes that are not
    valid UTF-8 and control characters (escape sequences, newlines, …) written as escapes."""
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def count_by_category(skipped: list[SkippedFile]) -> str:
    """E.g. "2 not an image, 1 truncated image": commonest first, then by name."""
    counts = Counter(s.category for s in skipped)
    kinds = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{n} {k}" for k, n in kinds)


def _describe_classes(names: list[str]) -> str:
    if not names:
        return "no classes"
    shown = ", ".join(names[:_NAMES_SHOWN]) + (", …" if len(names) > _NAMES_SHOWN else "")
    noun = "class" if len(names) == 1 else "classes"
    return f"{len(names)} {noun} ({shown})"


# Images converted at a time: the luma sum needs uint32 temporaries, 12 bytes per pixel, which
# over a whole 70,000-image folder at 28 px would be 660 MB for a 55 MB result.
_CHUNK = 4096


def is_greyscale(rgb: np.ndarray) -> bool:
    """True when every pixel of every (…, 3) image has R == G == B."""
    for start in range(0, len(rgb), _CHUNK):
        part = rgb[start:start + _CHUNK]
        if not (np.array_equal(part[..., 0], part[..., 1]) and np.array_equal(part[..., 1], part[..., 2])):
            return False
    return True


def to_channels(rgb: np.ndarray, channels: int | None) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, H, W, C); None picks 1 when the data is grey, else 3."""
    if channels is None:
        channels = 1 if is_greyscale(rgb) else 3
    if channels == 3:
        return np.ascontiguousarray(rgb)
    grey = np.empty((*rgb.shape[:-1], 1), np.uint8)
    for start in range(0, len(rgb), _CHUNK):
        luma = rgb[start:start + _CHUNK].astype(np.uint32) @ _LUMA_WEIGHTS  # (n, H, W)
        grey[start:start + _CHUNK, ..., 0] = (luma + 0x8000) >> 16
    return grey
