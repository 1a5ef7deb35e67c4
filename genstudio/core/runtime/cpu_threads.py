"""Torch's CPU threads for work made of many tiny operations.

Every OS thread that runs torch's CPU operations gets an OpenMP team of its own (and MKL's
threads beside it). In the app more than one thread does (training, the gallery's sampling, the
explorer), and once a process has more OpenMP threads than cores, libgomp stops spinning between
parallel regions and puts its threads to sleep instead, so every operation pays a wake-up: on 2
cores a (16 × 96) · (96 × 64) matrix product took 45–60 µs on a second thread against 5 µs on
the first. Large operations do not notice; a PixelCNN's sampler, which runs tens of small
operations per subpixel, ran 4× slower in a worker thread than in the CLI.

`one_intra_op_thread()` runs the calling thread's operations on that thread alone while a block
runs, by the thread's own OpenMP and MKL settings. Not `torch.set_num_threads(1)`: that also
changes the default that every thread starting meanwhile takes up, so a training run started
then would keep a single thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Iterator

import torch


@functools.cache
def _runtime() -> ctypes.CDLL | None:
    """libtorch_cpu, whose handle also finds the OpenMP runtime it links (dlsym searches a
    library's dependencies); None where it cannot be opened (another platform's file names)."""
    try:
        return ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
    except OSError:
        return None


def _function(name: str):
    runtime = _runtime()
    try:
        return None if runtime is None else getattr(runtime, name)
    except AttributeError:
        return None


@contextlib.contextmanager
def one_intra_op_thread() -> Iterator[None]:
    """The calling thread's torch CPU operations run on it alone inside the block; other
    threads, and threads started meanwhile, keep theirs. Does nothing where the OpenMP
    runtime cannot be reached (the work is then only slower)."""
    omp_get, omp_set = _function("omp_get_max_threads"), _function("omp_set_num_threads")
    mkl_set = _function("MKL_Set_Num_Threads_Local")  # the C entry point (lower case is Fortran's)
    if omp_get is None or omp_set is None:
        yield
        return
    # torch sets a thread's count from its global default at the thread's first parallel
    # operation; asking for it now does that first, so that it cannot undo the setting below.
    torch.get_num_threads()
    before = omp_get()
    omp_set(1)
    mkl_before = mkl_set(1) if mkl_set is not None else None
    try:
        yield
    finally:
        omp_set(before)
        if mkl_before is not None:
            mkl_set(mkl_before)
