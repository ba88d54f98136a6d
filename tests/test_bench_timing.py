"""Percentile math on known samples, statistics, spread warnings, peak memory."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgevpr.bench.timing import (
    PeakMemory,
    Timing,
    TimingConfig,
    measure,
    percentile,
    spread_warnings,
    window_spread,
)


def test_percentiles_of_one_to_a_hundred() -> None:
    samples = np.arange(1, 101, dtype=float)  # 1..100
    # Linear interpolation between closest ranks: rank = q/100 * (n - 1).
    assert percentile(samples, 50) == pytest.approx(50.5)
    assert percentile(samples, 90) == pytest.approx(90.1)
    assert percentile(samples, 99) == pytest.approx(99.01)
    assert percentile(samples, 0) == 1.0
    assert percentile(samples, 100) == 100.0


def test_percentiles_of_small_samples() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)  # order does not matter
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0, 3.0], 90) == pytest.approx(2.8)
    with pytest.raises(ValueError):
        percentile([], 50)


def test_timing_summary_and_throughput() -> None:
    timing = Timing(np.array([10.0, 10.0, 20.0, 40.0]), items=8)
    assert timing.mean_ms == pytest.approx(20.0)
    assert timing.p50_ms == pytest.approx(15.0)
    # 8 images per call, 20 ms a call on average -> 400 images/s.
    assert timing.throughput == pytest.approx(400.0)
    # 1 GFLOP per image at 400 images/s is 400 GFLOP/s.
    assert timing.gflops(1e9) == pytest.approx(400.0)
    assert timing.gflops(None) is None
    summary = timing.summary()
    assert summary["iterations"] == 4
    assert summary["p99_ms"] == pytest.approx(timing.p99_ms)


def test_steady_samples_give_no_warning() -> None:
    rng = np.random.default_rng(0)
    samples = 10.0 + rng.normal(0, 0.1, 200)
    assert spread_warnings(samples) == []
    assert window_spread(samples) < 0.05


def test_long_tail_is_warned() -> None:
    samples = np.array([10.0] * 80 + [20.0] * 20)
    warnings = spread_warnings(samples)
    assert any("long tail" in w for w in warnings)


def test_drift_between_windows_is_warned() -> None:
    samples = np.concatenate([np.full(50, 10.0), np.full(50, 12.0)])  # slowed down half-way
    assert window_spread(samples) == pytest.approx(0.2 / 1.0 * 10 / 11, rel=0.2)
    assert any("unstable" in w for w in spread_warnings(samples))


def test_few_samples_are_warned() -> None:
    assert any("only 5 samples" in w for w in spread_warnings(np.full(5, 3.0)))
    assert window_spread(np.full(5, 3.0)) is None


def test_measure_honours_warmup_and_minimum_calls() -> None:
    calls = []
    timing = measure(lambda: calls.append(1), TimingConfig(warmup=4, seconds=0.0, min_iters=7))
    assert timing.count == 7
    assert len(calls) == 11
    assert timing.items == 1


def test_warmup_lasts_a_share_of_the_budget() -> None:
    calls = []

    def slow() -> None:
        calls.append(1)
        time.sleep(0.01)

    config = TimingConfig(warmup=1, seconds=0.2, min_iters=1)
    assert config.warmup_seconds == pytest.approx(0.05)
    timing = measure(slow, config)
    # about 0.05 s of 10 ms calls untimed (not just the 1 asked for), then about 0.2 s timed
    assert len(calls) - timing.count >= 3
    assert TimingConfig(warmup=0, seconds=5.0).warmup_seconds == 0.0


def test_measure_stops_at_max_iters() -> None:
    timing = measure(lambda: None, TimingConfig(warmup=0, seconds=60.0, min_iters=1, max_iters=50))
    assert timing.count == 50


def test_peak_memory_sees_a_large_allocation() -> None:
    with PeakMemory() as before:
        pass
    with PeakMemory() as during:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        block.sum()
        del block
    if during.since_start:
        assert during.peak_mb >= before.peak_mb + 50
    else:
        assert during.peak_mb > 0
