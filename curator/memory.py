"""Giving freed memory back to the operating system.

numpy's arrays are allocated by glibc's malloc. Freed blocks above its mmap threshold go back to the system at
once, but the threshold grows with every large block freed (up to 32 MiB), so the tens-of-MiB arrays of a
global stage's later steps come from the heap, and the heap keeps its free pages: the process's resident
memory, which is what a bounded engine promises, stays at its high-water mark after the arrays are gone.
`malloc_trim(0)` hands those pages back; the stream engine calls it between its heavy steps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None  # glibc only


def give_back_freed_memory() -> bool:
    """Return the heap's free pages to the system (glibc); False where the C library has no malloc_trim."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
