"""Timing a callable: warm-up, enough iterations for stable percentiles, the statistics a
latency table reports, a warning when the numbers are not to be trusted, and the process's
peak resident memory during a measurement.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# A run is split into this many consecutive windows; if their medians disagree by more than
# WINDOW_SPREAD_LIMIT the machine changed under the run (throttling, another process).
WINDOWS = 5
WINDOW_SPREAD_LIMIT = 0.10
# p90 this far above p50 means a long tail: an average hides it, a robot's deadline does not.
TAIL_RATIO_LIMIT = 1.3
# Below this many samples p99 is close to the maximum and says little.
FEW_SAMPLES = 20
# Share of the machine's CPU time that other processes may take during a row before the row
# is flagged: on a shared machine their work, not the model, sets the tail.
FOREIGN_CPU_LIMIT = 0.10


# Warm-up lasts at least this share of the timed budget: first calls pay for lazy
# initialisation (oneDNN primitives, memory arenas, caches), which PyTorch eager keeps paying
# for several calls, and a fixed count of calls is too few for fast models.
WARMUP_SHARE = 0.25
MAX_WARMUP_SECONDS = 10.0


@dataclass(frozen=True)
class TimingConfig:
    """How long to measure: at least ``warmup`` untimed calls lasting at least a quarter of
    ``seconds``; then timed calls until ``seconds`` have passed and at least ``min_iters``
    were made (or ``max_iters`` is reached)."""

    warmup: int = 3
    seconds: float = 2.0
    min_iters: int = 5
    max_iters: int = 100_000

    @property
    def warmup_seconds(self) -> float:
        return 0.0 if self.warmup == 0 else min(self.seconds * WARMUP_SHARE, MAX_WARMUP_SECONDS)


def percentile(samples: np.ndarray | list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (NumPy's
    default and the usual definition: the p50 of an even count is the mean of the middle two)."""
    values = np.asarray(samples, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no samples")
    return float(np.percentile(values, q))


@dataclass
class Timing:
    """Latencies of ``items`` images (or queries) per call, in milliseconds.

    ``foreign_cpu``: the share of all CPUs' time that other processes used while this was
    measured (None where the OS does not say)."""

    samples_ms: np.ndarray
    items: int = 1
    warnings: list[str] = field(default_factory=list)
    foreign_cpu: float | None = None

    def __post_init__(self) -> None:
        self.samples_ms = np.asarray(self.samples_ms, dtype=np.float64)
        if self.samples_ms.size == 0:
            raise ValueError("a timing needs at least one sample")
        self.warnings = self.warnings or spread_warnings(self.samples_ms)
        if self.foreign_cpu is not None and self.foreign_cpu > FOREIGN_CPU_LIMIT:
            self.warnings.insert(
                0, f"other processes used {self.foreign_cpu:.0%} of the CPUs meanwhile"
            )

    @property
    def count(self) -> int:
        return int(self.samples_ms.size)

    @property
    def mean_ms(self) -> float:
        return float(self.samples_ms.mean())

    @property
    def p50_ms(self) -> float:
        return percentile(self.samples_ms, 50)

    @property
    def p90_ms(self) -> float:
        return percentile(self.samples_ms, 90)

    @property
    def p99_ms(self) -> float:
        return percentile(self.samples_ms, 99)

    @property
    def throughput(self) -> float:
        """Sustained items per second: items per call over the mean call time."""
        return self.items * 1000.0 / self.mean_ms

    def gflops(self, flop_per_item: float | None) -> float | None:
        """Achieved GFLOP/s given the work per item (sustained, from the mean)."""
        if not flop_per_item:
            return None
        return flop_per_item * self.throughput / 1e9

    def summary(self) -> dict[str, float | int]:
        return {
            "mean_ms": self.mean_ms,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "throughput": self.throughput,
            "iterations": self.count,
        }


def window_spread(samples_ms: np.ndarray, windows: int = WINDOWS) -> float | None:
    """(max - min) of the medians of consecutive windows, over the overall median; None when
    there are too few samples for two samples a window."""
    if samples_ms.size < 2 * windows:
        return None
    medians = [float(np.median(chunk)) for chunk in np.array_split(samples_ms, windows)]
    overall = float(np.median(samples_ms))
    return (max(medians) - min(medians)) / overall if overall > 0 else None


def spread_warnings(samples_ms: np.ndarray) -> list[str]:
    """Why these numbers may not be stable (empty when they look fine)."""
    found = []
    p50 = percentile(samples_ms, 50)
    p90 = percentile(samples_ms, 90)
    if p50 > 0 and p90 / p50 > TAIL_RATIO_LIMIT:
        found.append(f"long tail: p90 is {p90 / p50:.2f}x p50")
    spread = window_spread(samples_ms)
    if spread is not None and spread > WINDOW_SPREAD_LIMIT:
        found.append(f"unstable: medians of {WINDOWS} windows differ by {spread:.0%}")
    if samples_ms.size < FEW_SAMPLES:
        found.append(f"only {samples_ms.size} samples: p99 is about the max (raise --seconds)")
    return found


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    values = [int(v) for v in fields[1:9]]
    busy = sum(values) - values[3] - values[4]
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds this process (all its threads) has used."""
    return time.process_time()


class CpuContention:
    """``with CpuContention() as c: ...`` then ``c.foreign_share``: the share of all CPUs'
    time that other processes were busy during the block (None off Linux)."""

    def __enter__(self) -> CpuContention:
        self.start = (busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter())
        self.foreign_share: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        busy, own, wall = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
        if busy is None or self.start[0] is None:
            return
        capacity = (wall - self.start[2]) * (os.cpu_count() or 1)
        foreign = (busy - self.start[0]) - (own - self.start[1])
        if capacity > 0:
            self.foreign_share = min(max(foreign / capacity, 0.0), 1.0)


def measure(fn: Callable[[], object], config: TimingConfig, items: int = 1) -> Timing:
    """Warm ``fn`` up untimed, then time it (see TimingConfig)."""
    start = time.perf_counter()
    calls = 0
    while calls < config.warmup or (
        calls < config.max_iters and time.perf_counter() - start < config.warmup_seconds
    ):
        fn()
        calls += 1
    with CpuContention() as contention:
        samples = timed_calls(fn, config)
    return Timing(np.asarray(samples), items=items, foreign_cpu=contention.foreign_share)


def timed_calls(fn: Callable[[], object], config: TimingConfig) -> list[float]:
    samples: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        samples.append((t1 - t0) * 1000.0)
        enough = len(samples) >= config.min_iters and t1 - start >= config.seconds
        if enough or len(samples) >= config.max_iters:
            break
    return samples


# --- peak memory ---------------------------------------------------------------------------

PEAK_MEMORY_MEANING = (
    "peak resident host memory (RSS high-water mark, reset before each row) of the worker "
    "process running the row: interpreter, libraries, the loaded model or index and its "
    "working buffers; GPU memory is not included"
)


def read_status_kib(field_name: str) -> int | None:
    """A ``VmHWM``/``VmRSS``-style field of /proc/self/status, in KiB (None off Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux: clear_refs 5), so
    that the next reading is the peak of what follows; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """The process's RSS high-water mark in MB (10^6 bytes; since the last reset where
    resets work)."""
    kib = read_status_kib("VmHWM")
    if kib is not None:
        return kib * 1024 / 1e6
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in bytes on macOS, KiB elsewhere.
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


class PeakMemory:
    """``with PeakMemory() as mem: ...`` then ``mem.peak_mb``: the process's peak RSS during
    the block (MB); ``mem.since_start`` is False where the high-water mark could not be reset
    (it then covers the whole process lifetime)."""

    def __enter__(self) -> PeakMemory:
        self.since_start = reset_peak_rss()
        self.peak_mb = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak_mb = peak_rss_mb()
