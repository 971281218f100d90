"""Giving memory back to the operating system: freed heap, and pages of the KV pool.

glibc keeps the memory of freed tensors in its per-thread arenas, so a process that ran many
short, cancelled generations on several threads stays at its peak RSS long after. `malloc_trim`
returns the free pages; elsewhere (macOS, musl) it is a no-op. The KV pool's own pages are handed
back one block at a time (`PageArena`).
"""

import ctypes
import ctypes.util
import functools
import math
import mmap

import torch


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


class PageArena:
    """An uninitialised tensor on an anonymous mapping of its own: page-aligned, its pages resident
    only once written, and any whole pages of it can be handed back to the OS (`release`): they then
    read as zeros until written again. The KV pool lives on one, so that the device tier of a CPU-only
    machine is a bounded set of resident pages (engine/kv_tiers.py)."""

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        self.nbytes = math.prod(shape) * dtype.itemsize
        self._mapping = mmap.mmap(-1, max(self.nbytes, mmap.PAGESIZE), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_NOHUGEPAGE"):  # a released range must not sit inside a 2 MiB page
            self._mapping.madvise(mmap.MADV_NOHUGEPAGE)
        self.tensor = torch.frombuffer(self._mapping, dtype=torch.uint8)[: self.nbytes].view(dtype).view(shape)

    def release(self, start: int, length: int) -> None:
        """Hands bytes [start, start + length) back: both must be multiples of mmap.PAGESIZE."""
        assert start % mmap.PAGESIZE == 0 and length % mmap.PAGESIZE == 0
        self._mapping.madvise(mmap.MADV_DONTNEED, start, length)

    def view(self, start: int, length: int) -> memoryview:
        """Bytes [start, start + length) in place: for reading from or writing to a file directly."""
        return memoryview(self._mapping)[start : start + length]
