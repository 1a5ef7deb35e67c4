"""Atomic file writes: a temporary file in the same folder, fsync, then os.replace; and
appends that add a whole line or nothing.

A crash at any moment leaves either the old file or the new one, never a torn one, and no
temporary file survives a failed write. A process killed outright (SIGKILL, power loss) cannot
clean up, so writers of files that matter call remove_stale_temps first. Temporary files carry
TEMP_TAG in their names, so that cleaning up only ever deletes files this program made."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

TEMP_TAG = ".genstudio-"  # temporary files are named .NAME.genstudio-RANDOM.tmp


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success it becomes `target` atomically.
    `replace=False`: an existing `target` is kept and FileExistsError raised instead."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = _new_temp_file(target)
    except OSError as exc:  # name the file being written, not a temporary name nobody knows
        raise OSError(exc.errno, exc.strerror, str(target)) from None
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, target)
        else:
            _move_unless_taken(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _new_temp_file(target: Path) -> Path:
    """An empty file of our own beside `target`, with the permissions the user's umask gives a
    new file (tempfile.mkstemp's are 0600, which the final file would keep)."""
    for _ in range(100):
        tmp = target.parent / f".{target.name}{TEMP_TAG}{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(target))


def _move_unless_taken(tmp: Path, target: Path) -> None:
    try:
        os.link(tmp, target)  # fails if target exists, atomically
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links (FAT): check, then move
        if target.exists():
            raise FileExistsError(errno.EEXIST, "file exists", str(target)) from None
        os.replace(tmp, target)
        return
    tmp.unlink()


def temp_pattern(target: str | os.PathLike) -> str:
    """The glob matching atomic_path's temporary files for `target`."""
    return f".{glob.escape(Path(target).name)}{TEMP_TAG}*.tmp"


def remove_stale_temps(target: str | os.PathLike) -> None:
    """Delete temporary files of writes to `target` that were killed midway. Only for a file
    with one writer at a time (a run's checkpoint): it would break a concurrent write."""
    target = Path(target)
    for stale in target.parent.glob(temp_pattern(target)):
        with contextlib.suppress(OSError):
            stale.unlink()


def write_atomic(target: str | os.PathLike, write: Callable[[Path], None], replace: bool = True) -> None:
    with atomic_path(target, replace) as tmp:
        write(tmp)


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    write_atomic(target, lambda p: p.write_text(text, encoding="utf-8"))


def append_line(target: str | os.PathLike, line: str) -> None:
    """Append `line` and a newline to a text file, whole or not at all: a fragment left at the
    end by an earlier append that failed (a full disk, a crash) is cut off first, so it cannot
    swallow this line, and a write that fails part-way is undone."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        end = _end_of_last_line(fd)
        os.ftruncate(fd, end)
        os.lseek(fd, end, os.SEEK_SET)
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, end)
            raise
    finally:
        os.close(fd)


def _end_of_last_line(fd: int, chunk: int = 65536) -> int:
    """The offset just past the file's last newline (0 when it has none)."""
    position = os.lseek(fd, 0, os.SEEK_END)
    while position > 0:
        start = max(0, position - chunk)
        block = os.pread(fd, position - start, start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        position = start
    return 0


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (e.g. Windows).
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
