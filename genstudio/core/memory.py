"""Handing freed memory back to the operating system after a training run.

glibc keeps what a process frees in its heaps (one arena per thread) and returns it only from
the top of a heap. A training step allocates and frees hundreds of megabytes of activations (a
PixelCNN's 50 M logits), so an app that had trained a few runs held gigabytes it no longer
used: one window training VAE, PixelCNN, EBM and flow for 10 steps each stood at 1,441 MiB
after the PixelCNN and 549 MiB after malloc_trim, and a second round of the same four stayed at
640-654 MiB after trimming (memory kept, not leaked). `release_freed_memory` is that trim; it
does nothing where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import functools
import sys


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        # The symbols already loaded into this process, libc's among them: no library search
        # (ctypes.util.find_library runs ldconfig, and fails in a run closed at interpreter exit).
        return ctypes.CDLL(None).malloc_trim  # glibc only; musl and others have none
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> bool:
    """Return the C heap's free pages to the system; True when there was a way to do it."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
