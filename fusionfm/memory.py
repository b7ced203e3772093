"""glibc heap settings for a long-running server (the web app): memory that stays flat over many calls.

By default glibc raises its mmap threshold after large frees (up to 32 MB) and gives each worker thread an arena, so
the full-size float images of every call stay in the heap: the app's resident size doubled over 100 calls
(benchmarks/app_memory.py). With two arenas, blocks of 8 MB and more always mmapped, and free heap pages handed back
after each call, it stays flat after the first few dozen calls; a smaller threshold (1 MB) was as flat but made
every call slower (each mmapped block is page-faulted afresh). Elsewhere (macOS, musl) nothing is changed.
"""

from __future__ import annotations

import ctypes

_M_ARENA_MAX = -8
_M_MMAP_THRESHOLD = -3
_libc: ctypes.CDLL | None = None


def keep_memory_flat() -> None:
    """glibc only: at most two malloc arenas and blocks of 8 MB and more always mmapped (so freed at once)."""
    global _libc
    try:
        _libc = ctypes.CDLL("libc.so.6")
        _libc.mallopt(_M_ARENA_MAX, 2)
        _libc.mallopt(_M_MMAP_THRESHOLD, 8 << 20)
    except (OSError, AttributeError):
        _libc = None


def trim_memory() -> None:
    """Return the heap's free pages to the system (glibc ``malloc_trim``; nothing elsewhere or before
    :func:`keep_memory_flat`)."""
    if _libc is not None:
        _libc.malloc_trim(0)
