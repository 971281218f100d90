"""The machine a benchmark ran on, for its JSON line."""

import os
import platform


def machine() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
        ram = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))) / 2**20
    except (OSError, StopIteration):
        ram = 0
    return {"cpu": cpu, "cores": os.cpu_count(), "ram": f"{ram:.0f} GiB"}
