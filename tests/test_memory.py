"""curator/memory.py: freed heap pages go back to the system."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from curator.memory import give_back_freed_memory


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_arrays_leave_the_resident_memory():
    # 64 KiB arrays come from the heap (below any mmap threshold); the last one, kept, pins the heap's top, so
    # freeing the others leaves their pages resident until they are handed back
    arrays = [np.ones(8192) for _ in range(4000)]  # 256 MiB
    pin = np.ones(8192)
    del arrays
    before = _rss_mib()
    assert give_back_freed_memory() is True
    assert before - _rss_mib() > 200
    assert pin.sum() == 8192
