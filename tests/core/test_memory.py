"""release_freed_memory hands the C heap's free pages back (glibc), which training relies on to
not keep gigabytes of freed activations after a run."""

import sys

import pytest

from genstudio.core.memory import release_freed_memory


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's (Linux)")
def test_freed_heap_memory_goes_back_to_the_system():
    # 200 MB in 10 kB blocks: below glibc's mmap threshold, so they live in the heap, and
    # freeing them does not shrink the process by itself (the top block stays in use).
    blocks = [bytearray(10_000) for _ in range(20_000)]
    keep = bytearray(10_000)  # allocated last: pins the top of the heap
    del blocks
    before = _rss_mib()
    assert release_freed_memory()
    after = _rss_mib()
    assert before - after > 100, (before, after)
    del keep
