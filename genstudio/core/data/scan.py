"""Finding the image files of a folder: classes, symlinks, duplicates and odd file types.

Rules (each real file is considered once, nothing is ever opened here):
- Immediate, non-hidden subfolders of the root are the classes (sorted by name) and everything
  below one belongs to it. When the root has class subfolders, images lying directly in the
  root belong to no class and are skipped as "not in a class folder"; with no subfolders the
  root's own images form one unconditional set.
- Names starting with "." are ignored, as are files whose extension is not an image extension
  (README, .json, ...): those are counted in `ignored`, not reported as skips.
- Only regular files are candidates: a FIFO, socket or device is reported without being opened
  (opening a FIFO would block forever).
- Symlinks are followed, but every real folder is walked at most once and real folders are
  walked before linked ones, so a link loop ends and a folder reached both ways is listed under
  its real place. A file reached twice (symlink or hard link) is kept once, preferring a path
  with no link in it, and the other path is reported as a duplicate.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

from .dataset import DatasetError, SkippedFile, printable

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)


@dataclass(frozen=True)
class FolderEntry:
    path: str  # absolute path to open (may hold surrogate escapes for non-UTF-8 names)
    parts: tuple[str, ...]  # path components relative to the root, as the OS gave them
    class_index: int  # index into FolderScan.class_names; 0 when there are no classes
    size: int  # bytes
    mtime_ns: int

    @property
    def rel(self) -> str:
        return "/".join(printable(p) for p in self.parts)


@dataclass
class FolderScan:
    root: str  # absolute
    class_names: list[str]  # printable names of the class subfolders, sorted; [] if none
    entries: list[FolderEntry]  # image candidates in deterministic order
    skipped: list[SkippedFile] = field(default_factory=list)
    ignored: int = 0  # files that are not images by extension


def resolve_root(folder: str | os.PathLike[str]) -> str:
    """The absolute folder path, or DatasetError saying why it cannot be a dataset folder."""
    root = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    if not os.path.exists(root):
        raise DatasetError(f"Folder not found: {printable(root)}.")
    if not os.path.isdir(root):
        raise DatasetError(
            f"{printable(root)} is a file, not a folder: choose the folder that holds the images."
        )
    return root


def scan_folder(folder: str | os.PathLike[str]) -> FolderScan:
    """List the candidate images of `folder` (see the module docstring for the rules)."""
    root = resolve_root(folder)
    try:
        top = _list_dir(root)
    except OSError as exc:
        raise DatasetError(f"Cannot read folder {printable(root)}: {exc.strerror}.") from None
    walker = _Walker(root)
    class_dirs = [e for e in top if not _hidden(e) and _is_dir(e)]
    for entry in top:
        if entry not in class_dirs:
            walker.visit(entry, (), None if class_dirs else 0, via_link=False)
    for index, entry in enumerate(class_dirs):
        walker.visit(entry, (), index, via_link=False)
    walker.drain_linked_dirs()
    entries, duplicates = _dedupe(walker.found)
    return FolderScan(
        root=root,
        class_names=[printable(e.name) for e in class_dirs],
        entries=entries,
        skipped=sorted(walker.skipped + duplicates, key=lambda s: s.path),
        ignored=walker.ignored,
    )


@dataclass
class _Found:
    entry: FolderEntry
    file_id: tuple[int, int]  # (st_dev, st_ino): the same real file however it was reached
    via_link: bool


class _Walker:
    def __init__(self, root: str) -> None:
        self.root = root
        self.visited_dirs = {os.path.realpath(root)}
        self.linked_dirs: list[tuple[str, tuple[str, ...], int | None]] = []
        self.found: list[_Found] = []
        self.skipped: list[SkippedFile] = []
        self.ignored = 0

    def visit(self, entry: os.DirEntry, parent: tuple[str, ...], cls: int | None, via_link: bool):
        if _hidden(entry):
            return
        parts = (*parent, entry.name)
        if _is_dir(entry):
            if entry.is_symlink():
                self.linked_dirs.append((entry.path, parts, cls))  # walked after real folders
            else:
                self.walk_dir(entry.path, parts, cls, via_link)
            return
        if os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTENSIONS:
            self.ignored += 1
            return
        self._consider_file(entry, parts, cls, via_link)

    def walk_dir(self, path: str, parts: tuple[str, ...], cls: int | None, via_link: bool):
        real = os.path.realpath(path)
        if real in self.visited_dirs:  # a link back into a folder already walked: a loop
            return
        self.visited_dirs.add(real)
        try:
            children = _list_dir(path)
        except OSError as exc:
            self._skip(parts, f"unreadable folder: {exc.strerror}")
            return
        for child in children:
            self.visit(child, parts, cls, via_link)

    def drain_linked_dirs(self) -> None:
        while self.linked_dirs:
            path, parts, cls = self.linked_dirs.pop(0)
            self.walk_dir(path, parts, cls, via_link=True)

    def _consider_file(self, entry: os.DirEntry, parts: tuple[str, ...], cls, via_link: bool):
        try:
            st = entry.stat()  # follows a symlink; stat never opens, so FIFOs cannot block
        except FileNotFoundError:
            self._skip(parts, "broken link")
            return
        except OSError as exc:
            loop = exc.errno == errno.ELOOP
            self._skip(parts, "broken link (loop)" if loop else f"unreadable: {exc.strerror}")
            return
        if not stat.S_ISREG(st.st_mode):
            self._skip(parts, "not a regular file")
        elif cls is None:
            self._skip(parts, "not in a class folder")
        else:
            item = FolderEntry(entry.path, parts, cls, st.st_size, st.st_mtime_ns)
            is_link = via_link or entry.is_symlink()
            self.found.append(_Found(item, (st.st_dev, st.st_ino), is_link))

    def _skip(self, parts: tuple[str, ...], reason: str) -> None:
        self.skipped.append(SkippedFile("/".join(printable(p) for p in parts), reason))


def _dedupe(found: list[_Found]) -> tuple[list[FolderEntry], list[SkippedFile]]:
    """Keep each real file once, preferring a path without links, then the first in order."""
    found = sorted(found, key=lambda f: f.entry.parts)
    winners: dict[tuple[int, int], _Found] = {}
    for item in sorted(found, key=lambda f: f.via_link):  # stable: keeps path order within
        winners.setdefault(item.file_id, item)
    kept = [f.entry for f in found if winners[f.file_id] is f]
    duplicates = [
        SkippedFile(f.entry.rel, f"duplicate (same file as {winners[f.file_id].entry.rel})")
        for f in found
        if winners[f.file_id] is not f
    ]
    return kept, duplicates


def _list_dir(path: str) -> list[os.DirEntry]:
    with os.scandir(path) as it:
        return sorted(it, key=lambda e: e.name)


def _hidden(entry: os.DirEntry) -> bool:
    return entry.name.startswith(".")


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links; False for a broken or looping link
    except OSError:
        return False
