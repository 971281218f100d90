"""Giving freed memory back to the operating system.

glibc keeps the memory of freed tensors in its per-thread arenas, so a process that ran many
short, cancelled generations on several threads stays at its peak RSS long after. `malloc_trim`
returns the free pages; elsewhere (macOS, musl) it is a no-op.
"""

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def trim_heap() -> bool:
    """Returns freed heap memory to the OS; whether anything could be done."""
    trim = _malloc_trim()
    return bool(trim is not None and trim(0))
