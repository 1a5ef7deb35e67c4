"""The C heap around model work: keep freed activations for the next step, hand them back after.

A training step allocates and frees hundreds of megabytes of activations, and so does each
step of a sampler (a diffusion model's 64 images: 50 passes of the network). glibc's defaults
suit that badly, both ways:

- While the work runs it gives the memory back to the kernel too eagerly. A block above its mmap
  threshold (128 KiB at first, raised as such blocks are freed) gets pages of its own, and the
  free space at the top of a heap is returned once it passes the trim threshold (twice the mmap
  threshold). Either way the next step asks the kernel again, and every fresh 4 KiB page costs
  a page fault and zeroing. Measured with the CLI's loop on 2 CPU cores (32 px, batch 64): an
  EBM step made 268,000 page faults and spent 0.58 s of system time; a VAE step 17,000 faults
  and 38 ms, 30% of its time. `keep_freed_memory` raises the mmap threshold to glibc's ceiling
  (32 MiB) and turns trimming off while the work runs, and the faults per step fell to ~0 (the
  EBM's step from 0.75 s to 0.43 s, the VAE's from 115 ms to 79 ms; 64 diffusion samples from
  6.3 s to 4.6 s). Peak memory barely grows: what is kept was in use a step earlier.
  Blocks above that ceiling (a diffusion model's activations at 64 px and batch 64 are 128 MiB
  each) would still get pages of their own, so the block also turns glibc's mmap off
  altogether, and they come from the heap and are reused like the rest. At 64 px, batch 64
  (bare loop, 2 cores): diffusion 2.3 s -> 0.83 s a step (258,000 faults -> 0), VAE 536 ->
  345 ms; 64 DDIM-10 samples 13 -> 19 images/s. The cost is peak memory, as big blocks leave
  holes in the heap: diffusion 1.8 -> 2.3 GiB, VAE +2%. At 32 px, where blocks are at most
  32 MiB, speed and peak memory did not move (diffusion through the CLI). glibc still maps a
  block that its heap cannot hold (sysmalloc's fallback ignores the mmap count). The PixelCNN
  computes its 200 MB of logits in chunks below 32 MiB anyway, which also keeps its peak low.
- Afterwards it keeps too much. Freed memory in the middle of a heap is never returned, so
  an app that had trained a few runs held gigabytes it no longer used: one window training VAE,
  PixelCNN, EBM and flow for 10 steps each stood at 1,441 MiB after the PixelCNN and 549 MiB
  after malloc_trim. So the work ends with that trim, and the trim threshold goes back to 64 MiB,
  where glibc's own adaptive setting ends up.

Training (Trainer.run), every CLI command and every job of the app's workers run inside
`keep_freed_memory`.

A run on a thread other than the main one (the app's) has a third problem: glibc gives such a
thread a heap of its own (an arena) built of 64 MiB pieces, and a piece that falls wholly free
goes back to the kernel whatever the trim threshold. `one_heap_for_all_threads`, called when
the app starts, keeps every thread on the main heap (a diffusion step on a thread: 3,600 page
faults and 4% of its time, none on the main heap).

Where the C library is not glibc this does nothing.

One more pause has nothing to do with the C heap: Python's cyclic garbage collector. Its full
passes walk every tracked object, and torch, its compiler (which torch imports at the first
optimizer, torch/_compile.py), sympy and Qt leave 330,000 of them: a full pass took 160 ms,
holding the GIL, so the app's window and its training stood still that long whenever one came
(one did during a 60-step PixelCNN run in the window: 193 ms). `freeze_imported_objects`, called
by the app once its modules are loaded, moves those out of the collector's reach: a full pass
in the same window then took 2-5 ms. The compiler's share is frozen a moment later, after its
import on a thread of its own (`freeze_the_compiler_in_the_background`): that import takes a
second, which the window no longer waits for.
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
