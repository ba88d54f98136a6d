"""The CPU cores this process may use (its affinity, not the machine's count: a container or
``taskset`` may give it fewer)."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
