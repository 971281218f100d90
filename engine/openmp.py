"""OpenMP worker teams, and why the thread that loads the model frees its own.

libgomp (torch's OpenMP on Linux) keeps a team of workers for every thread that has run a parallel
operator. While all teams' workers fit the CPUs, a worker spins between parallel regions; once they
outnumber the CPUs, libgomp throttles the spinning, and each small parallel kernel waits for its
workers to wake. Decode's int8 GEMVs take ~50 µs each: with the loading thread's team alive beside
the scheduler loop's, a decode step at 2k took 29 ms instead of 18 (2 cores, measured), as if one
thread ran it. So the loading thread frees its team (`omp_pause_resource_all`, OpenMP 5.0) and leaves
the CPUs' workers to the loop. Not on every submit as well: tried, 50 chat clients were then served out
of arrival order (tests/chat/test_load.py; why, not yet understood).
"""

import ctypes
import glob
import os

import torch

OMP_PAUSE_HARD = 2  # omp_pause_resource_t: free the calling thread's team and its threads


def _libgomp() -> ctypes.CDLL | None:
    """The OpenMP runtime torch loaded (its own copy), or None where it ships another (macOS: libomp)."""
    found = glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp*.so*"))
    try:
        return ctypes.CDLL(found[0]) if found else None  # the loaded copy: dlopen returns the same handle
    except OSError:
        return None


_LIBGOMP = _libgomp()


def release_workers() -> bool:
    """Frees the calling thread's OpenMP team (a later parallel operator here builds a new one).
    Returns whether a runtime was there to ask; cheap when the thread has no team."""
    if _LIBGOMP is None:
        return False
    return _LIBGOMP.omp_pause_resource_all(OMP_PAUSE_HARD) == 0
