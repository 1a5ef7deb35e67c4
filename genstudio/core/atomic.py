"""Atomic file writes: a temporary file in the same folder, fsync, then os.replace.

A crash at any moment leaves either the old file or the new one, never a torn one, and no
temporary file survives a failed write. A process killed outright (SIGKILL, power loss) cannot
clean up, so writers of files that matter call remove_stale_temps first."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success it replaces `target` atomically."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def temp_pattern(target: str | os.PathLike) -> str:
    """The glob matching atomic_path's temporary files for `target`."""
    return f".{Path(target).name}.*.tmp"


def remove_stale_temps(target: str | os.PathLike) -> None:
    """Delete temporary files of writes to `target` that were killed midway. Only for a file
    with one writer at a time (a run's checkpoint): it would break a concurrent write."""
    target = Path(target)
    for stale in target.parent.glob(temp_pattern(target)):
        with contextlib.suppress(OSError):
            stale.unlink()


def write_atomic(target: str | os.PathLike, write: Callable[[Path], None]) -> None:
    with atomic_path(target) as tmp:
        write(tmp)


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    write_atomic(target, lambda p: p.write_text(text, encoding="utf-8"))


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (e.g. Windows).
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
