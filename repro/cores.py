"""The CPU cores this process may run on: its affinity mask, not the machine's count.

Under Slurm (cgroup or affinity plugin), `taskset` or a container's cpuset, a process is confined to some of the
machine's cores while ``os.cpu_count()`` still reports all of them; sizing thread pools from that count runs, say,
64 threads on a 4-core allocation.
"""
from __future__ import annotations

import os


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity API (macOS, Windows)
        return os.cpu_count() or 1
