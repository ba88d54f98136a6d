"""Recall@N with exact search, against values worked out by hand and brute force."""

from __future__ import annotations

import numpy as np
import pytest

from edgevpr.core.errors import EdgeVPRError
from edgevpr.eval.recall import MISS, first_hit_rank, format_recalls, nearest, recall_at_n


def test_nearest_matches_brute_force_and_breaks_ties_by_index() -> None:
    rng = np.random.default_rng(0)
    database = rng.normal(size=(300, 16)).astype(np.float32)
    queries = rng.normal(size=(50, 16)).astype(np.float32)
    indices, distances = nearest(database, queries, k=7)
    full = ((queries[:, None, :] - database[None]) ** 2).sum(-1)
    assert np.array_equal(indices, np.argsort(full, axis=1, kind="stable")[:, :7])
    assert np.allclose(distances, np.sort(full, axis=1)[:, :7], atol=1e-4)
    twins = np.zeros((4, 2), dtype=np.float32)  # all equally far from every query
    assert nearest(twins, np.ones((1, 2), np.float32), k=4)[0].tolist() == [[0, 1, 2, 3]]


def test_nearest_caps_k_at_the_database_size() -> None:
    indices, _ = nearest(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), k=20)
    assert indices.shape == (3, 3) and indices[:, 0].tolist() == [0, 1, 2]


def test_recall_by_hand() -> None:
    # 4 queries, ranked database indices (k = 3):
    predictions = np.array([[5, 1, 2], [0, 3, 4], [9, 8, 7], [2, 6, 1]])
    positives = [np.array([5]), np.array([4, 1]), np.array([], dtype=np.int64), np.array([1])]
    # First hits: query 0 at rank 0, query 1 at rank 2, query 2 never, query 3 at rank 2.
    assert first_hit_rank(predictions, positives).tolist() == [0, 2, MISS, 2]
    result = recall_at_n(predictions, positives, ns=(1, 2, 3))
    assert result.values == {1: 25.0, 2: 25.0, 3: 75.0}
    assert result.queries_without_positives == 1  # counted as a miss, and reported
    assert result.curve(3).tolist() == [25.0, 25.0, 75.0]
    assert format_recalls(result.values) == "R@1: 25.0  R@2: 25.0  R@3: 75.0"


def test_recall_beyond_the_database_size_counts_the_whole_database() -> None:
    predictions = np.array([[1, 0], [0, 1]])  # k = database size = 2
    result = recall_at_n(predictions, [np.array([0]), np.array([1])], ns=(1, 5), database_size=2)
    assert result.values == {1: 0.0, 5: 100.0}
    assert result.beyond_database == (5,)
    assert "whole database of 2 images" in result.describe()


def test_queries_without_positives_never_count_when_n_exceeds_the_database() -> None:
    """8 database images, 20 queries of which 4 have no positive: R@10 is 80, not 100."""
    rng = np.random.default_rng(3)
    database = rng.normal(size=(8, 16)).astype(np.float32)
    queries = rng.normal(size=(20, 16)).astype(np.float32)
    predictions, _ = nearest(database, queries, k=10)
    assert predictions.shape == (20, 8)
    positives = [np.array([q % 8]) for q in range(16)] + [np.array([], np.int64)] * 4
    result = recall_at_n(predictions, positives, ns=(1, 5, 10), database_size=8)
    assert result.values[10] == 80.0
    assert result.values[5] <= 80.0
    assert result.queries_without_positives == 4
    assert result.beyond_database == (10,)


def test_n_beyond_the_searched_depth_of_a_larger_database_is_refused() -> None:
    predictions = np.array([[1, 0], [0, 1]])  # only 2 of 100 searched
    with pytest.raises(EdgeVPRError, match="only 2 were searched"):
        recall_at_n(predictions, [np.array([0]), np.array([1])], ns=(1, 5), database_size=100)
    with pytest.raises(EdgeVPRError, match="only 2 were searched"):
        recall_at_n(predictions, [np.array([0]), np.array([1])], ns=(5,))


@pytest.mark.parametrize(
    ("database", "queries", "message"),
    [
        (np.zeros((0, 4)), np.zeros((1, 4)), "empty"),
        (np.zeros((2, 4)), np.zeros((1, 3)), "do not match"),
        (np.full((2, 4), np.nan), np.zeros((1, 4)), "NaN"),
    ],
)
def test_search_errors(database: np.ndarray, queries: np.ndarray, message: str) -> None:
    with pytest.raises(EdgeVPRError, match=message):
        nearest(database, queries, 1)


def test_recall_errors() -> None:
    with pytest.raises(EdgeVPRError, match="no queries"):
        recall_at_n(np.zeros((0, 1), dtype=np.int64), [])
    with pytest.raises(EdgeVPRError, match="N >= 1"):
        recall_at_n(np.zeros((1, 1), dtype=np.int64), [np.array([0])], ns=(0,))
