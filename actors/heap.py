"""Give the C heap's free pages back to the kernel (glibc ``malloc_trim``).

After a checkpoint the memory freed by the many short-lived objects of a busy
stage stays in glibc's arenas as free chunks among live ones (fragmentation:
~40 MiB in the soak's processing bulkhead); ``malloc_trim(0)`` returns the
whole free pages among them. Measured: a few ms, done in a worker thread
(ctypes releases the GIL for the call).
"""

from __future__ import annotations

import ctypes
import os

try:
    _malloc_trim = ctypes.CDLL(None).malloc_trim
    _malloc_trim.argtypes = [ctypes.c_size_t]
except (OSError, AttributeError):  # not glibc
    _malloc_trim = None

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def trim() -> int:
    """Release the heap's free pages; returns how much the resident memory shrank
    (bytes, 0 when it did not or without glibc; other threads allocate meanwhile)."""
    if _malloc_trim is None:
        return 0
    before = rss_bytes()
    _malloc_trim(0)
    return max(0, before - rss_bytes())
