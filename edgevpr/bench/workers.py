"""Each measurement runs in a fresh spawned process, so that one backend's libraries, threads
and memory never colour another's numbers, and a crashing backend costs its own rows only."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from edgevpr.core.errors import EdgeVPRError, first_line


def in_worker(fn: Callable[[Any], Any], job: Any, isolate: bool) -> Any:
    """Run ``fn(job)`` in a fresh spawned process (or here when ``isolate`` is False)."""
    if not isolate:
        return fn(job)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, job).result()


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, EdgeVPRError):
        return str(exc)
    if isinstance(exc, BrokenProcessPool):
        return "the worker process crashed (see stderr)"
    return f"{type(exc).__name__}: {first_line(exc, 200)}"
