"""The loading thread frees its OpenMP team before the scheduler loop computes (engine/openmp.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# In a fresh process: torch's thread count and OpenMP teams are process state.
TEAM = """
import os, time, torch
from engine.openmp import release_workers
torch.set_num_threads(2)
def threads():
    return len(os.listdir("/proc/self/task"))
def settled():
    seen, steady, deadline = threads(), 0, time.monotonic() + 10
    while steady < 10 and time.monotonic() < deadline:  # the workers leave on their own schedule
        time.sleep(0.02)
        now = threads()
        seen, steady = now, (steady + 1 if now == seen else 0)
    return seen
release_workers()  # importing the engine may have run a parallel operator already
alone = settled()
torch.randn(1000, 1000).sum(1)  # a parallel operator: this thread gets a team of workers
with_team = threads()
released = release_workers()
print(alone, with_team, released, settled())
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir() or (os.cpu_count() or 1) < 2,
                    reason="counts threads in /proc; a team needs two CPUs")
def test_release_workers_ends_the_calling_threads_openmp_team():
    done = subprocess.run([sys.executable, "-c", TEAM], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    alone, with_team, released, after = done.stdout.split()
    assert int(with_team) > int(alone), "a parallel operator should have started OpenMP workers"
    assert released == "True"
    assert int(after) == int(alone)
