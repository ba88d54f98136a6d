"""Structured maps grown from real descriptors; exact search; agreement scoring."""

from __future__ import annotations

import numpy as np
import pytest

from edgevpr.bench.descriptors import (
    agreement,
    content_key,
    exact_search,
    grow,
    l2_normalize,
    median_nn_distance,
    query_set,
)


def route(n: int = 120, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Stand-in for real descriptors along a route: a smooth walk on the sphere."""
    rng = np.random.default_rng(seed)
    steps = rng.standard_normal((n, dim)) * 0.2
    return l2_normalize(np.cumsum(steps, axis=0) + 2.0 * rng.standard_normal(dim))


def test_grown_map_is_unit_and_deterministic() -> None:
    real = route()
    a = grow(real, 1000, seed=3)
    b = grow(real, 1000, seed=3)
    assert a.shape == (1000, 64) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, grow(real, 1000, seed=4))


def test_grown_entries_stay_near_the_route() -> None:
    """Every entry is closer to some real keyframe than random directions ever are, and
    the map is denser than the keyframes (the structure HNSW needs)."""
    real = route()
    grown = grow(real, 2000, seed=1)
    nearest_real = (grown @ real.T).max(axis=1)
    random_dirs = l2_normalize(np.random.default_rng(9).standard_normal((2000, 64)))
    assert np.median(nearest_real) > 0.95
    assert np.median(nearest_real) > np.max((random_dirs @ real.T).max(axis=1))
    assert median_nn_distance(grown) < median_nn_distance(real)


def test_queries_change_more_than_map_entries() -> None:
    real = route()
    close = grow(real, 500, seed=1, change=0.5)
    far = grow(real, 500, seed=1, change=2.0)
    assert (far @ real.T).max(axis=1).mean() < (close @ real.T).max(axis=1).mean()


def test_exact_search_matches_a_full_sort() -> None:
    rng = np.random.default_rng(0)
    database = l2_normalize(rng.standard_normal((300, 16)))
    queries = l2_normalize(rng.standard_normal((7, 16)))
    ids, sims = exact_search(database, queries, k=5)
    full = np.argsort(-(queries @ database.T), axis=1)[:, :5]
    np.testing.assert_array_equal(ids, full)
    assert np.all(np.diff(sims, axis=1) <= 0)
    ids_all, _ = exact_search(database[:3], queries, k=10)  # k larger than the map
    assert ids_all.shape == (7, 3)


def test_agreement_counts_hits_misses_and_ties() -> None:
    exact_ids = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]])
    exact_sims = np.array([[0.9, 0.8, 0.7]] * 4)
    approx_ids = np.array(
        [
            [1, 2, 3],  # identical
            [5, 4, 99],  # first differs and is worse; 2 of 3 found
            [42, 7, 8],  # first differs but ties with exact's first (same similarity)
            [99, 98, 97],  # nothing found
        ]
    )
    approx_sims = np.array(
        [[0.9, 0.8, 0.7], [0.8, 0.9, 0.1], [0.9 - 1e-7, 0.9, 0.8], [0.1, 0.1, 0.1]]
    )
    score = agreement(approx_ids, approx_sims, exact_ids, exact_sims, k=3)
    assert score.top1 == pytest.approx(2 / 4)
    assert score.recall_at_k == pytest.approx((3 + 2 + 2 + 0) / 12)
    assert score.k == 3


def test_content_key_changes_with_data_and_parameters() -> None:
    x = np.ones((4, 3), dtype=np.float32)
    assert content_key(x, M=16) == content_key(x.copy(), M=16)
    assert content_key(x, M=16) != content_key(x, M=32)
    y = x.copy()
    y[0, 0] = 2
    assert content_key(x, M=16) != content_key(y, M=16)


def test_query_set_prefers_real_queries() -> None:
    real = route()
    real_queries = route(seed=5)[:50]
    few = query_set(real, real_queries, 20, seed=0)
    assert few.shape == (20, 64)
    # 20 of 50 real queries, evenly spread: each one is a real query descriptor
    assert np.allclose((few @ real_queries.T).max(axis=1), 1.0, atol=1e-5)
    many = query_set(real, real_queries, 80, seed=0)
    np.testing.assert_allclose(many[:50], real_queries, atol=1e-6)
    assert many.shape == (80, 64)
    none = query_set(real, None, 30, seed=0)
    assert none.shape == (30, 64)
    np.testing.assert_allclose(np.linalg.norm(none, axis=1), 1.0, atol=1e-5)
