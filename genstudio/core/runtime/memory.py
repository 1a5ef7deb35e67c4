"""The C heap around model work: keep freed activations for the next step, hand them back after.

A training step allocates and frees hundreds of megabytes of activations, and so does each
step of a sampler. glibc's defaults suit that badly, both ways:

- While the work runs it gives memory back to the kernel too eagerly: a block above the mmap
  threshold gets pages of its own, and free space at the top of a heap is returned past the
  trim threshold, so the next step faults in and zeroes fresh pages again.
  `keep_freed_memory` raises the mmap threshold to glibc's ceiling (32 MiB), turns trimming
  off, and turns mmap off altogether, so that even bigger blocks (a diffusion model's
  activations at 64 px) come from the heap and are reused. Peak memory grows a little at
  large sizes, as big blocks leave holes in the heap.
- Afterwards it keeps too much: freed memory in the middle of a heap is never returned. So the
  work ends with malloc_trim, and the trim threshold goes back to where glibc's own adaptive
  setting ends up.

Training (Trainer.run), every CLI command and every job of the app's workers run inside
`keep_freed_memory`.

A thread other than the main one gets a heap of its own (an arena) built of 64 MiB pieces, and
a piece that falls wholly free goes back to the kernel whatever the trim threshold:
`one_heap_for_all_threads`, called when the app starts, keeps every thread on the main heap.

Python's cyclic garbage collector is the other source of pauses: its full passes walk every
tracked object, and torch, its compiler, sympy and Qt leave hundreds of thousands of them, a
pass long enough to stall the window and its training. `freeze_imported_objects`, called once
the app's modules are loaded, moves those out of the collector's reach; the compiler's share
is frozen after its import on a thread of its own (`freeze_the_compiler_in_the_background`).

Where the C library is not glibc the heap settings do nothing. What each of these measured is
in docs/performance.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import sys
import threading
from collections.abc import Iterator

# mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
M_ARENA_MAX = -8
MMAP_THRESHOLD = 32 * 2**20        # glibc's ceiling for it on 64-bit (half its 64 MiB heap size)
SETTLED_TRIM_THRESHOLD = 64 * 2**20  # twice that: where glibc's adaptive trim threshold ends up
NO_TRIMMING = -1                     # "disables trimming completely" (mallopt(3))
DEFAULT_MMAP_MAX = 65536             # glibc's default number of blocks with pages of their own

_lock = threading.Lock()
_open_blocks = 0  # keep_freed_memory blocks open in this process (the app's jobs overlap)
_one_heap = False  # one_heap_for_all_threads succeeded (the app's start-up; a test checks it)


@functools.cache
def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        # The symbols already loaded into this process, libc's among them: no library search
        # (ctypes.util.find_library runs ldconfig, and fails in a run closed at interpreter exit).
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc's alone (musl's mallopt does nothing)
        return libc
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> bool:
    """Return the C heap's free pages to the system; True when there was a way to do it."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def one_heap_for_all_threads() -> bool:
    """Make every thread allocate from the main heap; True where that could be done (glibc).

    Call it first thing, before any thread has allocated: a thread keeps the arena it was given
    at its first allocation. Small blocks still come from each thread's own cache, without a
    lock, so threads hardly wait on each other."""
    global _one_heap
    libc = _glibc()
    done = libc is not None and libc.mallopt(M_ARENA_MAX, 1) == 1
    _one_heap = _one_heap or done
    return done


def freeze_imported_objects(compiler: bool = True) -> int:
    """Exempt every object alive now from Python's cyclic garbage collector, for good; returns
    how many there are. Call it once the program's modules are imported and before it builds
    anything it may later drop: a frozen object in a reference cycle is never freed, which is
    harmless for modules, classes and functions, which live as long as the process anyway.

    `compiler`: import torch's compiler first, to freeze it with the rest (torch imports it at
    its first optimizer anyway). It takes a second; the app leaves it to
    `freeze_the_compiler_in_the_background` instead, so its window shows that much sooner."""
    if compiler:
        import torch._dynamo  # noqa: F401

    gc.freeze()
    return gc.get_freeze_count()


def freeze_the_compiler_in_the_background() -> threading.Thread:
    """Import torch's compiler on a thread of its own, then freeze every object alive then.

    For a program already frozen without it (`freeze_imported_objects(compiler=False)`) that
    wants its window up first: the compiler's 120,000 objects would otherwise stay in the
    collector's full passes (40-70 ms each). The second freeze also takes whatever the program
    holds at that moment; of that, only objects in a reference cycle that are dropped later stay
    allocated, once. A thread that builds an optimizer meanwhile waits for the import to end."""

    def work() -> None:
        import torch._dynamo  # noqa: F401

        gc.freeze()

    thread = threading.Thread(target=work, name="import torch._dynamo", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def keep_freed_memory() -> Iterator[bool]:
    """Keep freed memory in the process while the block runs, hand it back when it ends.

    Yields whether the allocator could be tuned (glibc). Blocks may nest or overlap across
    threads: the settings change on the first entry and go back on the last exit."""
    global _open_blocks
    libc = _glibc()
    with _lock:
        _open_blocks += 1
        if libc is not None and _open_blocks == 1:
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            libc.mallopt(M_TRIM_THRESHOLD, NO_TRIMMING)
            libc.mallopt(M_MMAP_MAX, 0)  # and blocks above the threshold from the heap too
    try:
        yield libc is not None
    finally:
        with _lock:
            _open_blocks -= 1
            if libc is not None and _open_blocks == 0:
                libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                libc.mallopt(M_TRIM_THRESHOLD, SETTLED_TRIM_THRESHOLD)
                release_freed_memory()  # what the work freed and kept: 0.3-3 ms
