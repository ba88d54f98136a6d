"""Recall@N with exact nearest-neighbour search, NumPy only.

Recall@N is the share of queries with at least one true positive (a database image within
the radius) among their N nearest database descriptors. Queries without any positive
stay in the denominator (they can never be right), as in the standard benchmark code;
their number is reported so a reader can tell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgevpr.errors import EdgeVPRError

DEFAULT_NS = (1, 5, 10, 20)
CHUNK_QUERIES = 1024


def nearest(database: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest database rows (squared L2) for every query, nearest first.

    Ties are broken by database index, so the result is the same on every run.
    """
    database = np.asarray(database, dtype=np.float32)
    queries = np.asarray(queries, dtype=np.float32)
    if database.ndim != 2 or queries.ndim != 2 or database.shape[1] != queries.shape[1]:
        raise EdgeVPRError(
            f"descriptor shapes do not match: database {database.shape}, queries {queries.shape}"
        )
    if len(database) == 0:
        raise EdgeVPRError("the database is empty")
    if not (np.isfinite(database).all() and np.isfinite(queries).all()):
        raise EdgeVPRError("descriptors contain NaN or infinity (the model diverged?)")
    k = min(k, len(database))
    db_sq = np.einsum("ij,ij->i", database, database)
    indices = np.empty((len(queries), k), dtype=np.int64)
    distances = np.empty((len(queries), k), dtype=np.float32)
    for start in range(0, len(queries), CHUNK_QUERIES):
        chunk = queries[start : start + CHUNK_QUERIES]
        dist = db_sq[None, :] - 2.0 * (chunk @ database.T)
        dist += np.einsum("ij,ij->i", chunk, chunk)[:, None]
        # Sorting the whole row is exact and keeps ties in index order; it costs
        # O(N log N) per query, which is small beside the matrix product for N <= ~10^6.
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        indices[start : start + len(chunk)] = order
        distances[start : start + len(chunk)] = np.maximum(
            np.take_along_axis(dist, order, axis=1), 0.0
        )
    return indices, distances


def first_hit_rank(predictions: np.ndarray, positives: list[np.ndarray]) -> np.ndarray:
    """0-based rank of the first true positive per query, or k (= miss) if none in the list."""
    k = predictions.shape[1]
    ranks = np.full(len(predictions), k, dtype=np.int64)
    for q, (row, pos) in enumerate(zip(predictions, positives, strict=True)):
        hits = np.flatnonzero(np.isin(row, pos))
        if len(hits):
            ranks[q] = hits[0]
    return ranks


@dataclass(frozen=True)
class Recalls:
    """Recall@N in percent for the requested N, and the per-query first-hit ranks."""

    values: dict[int, float]
    ranks: np.ndarray
    queries: int
    queries_without_positives: int

    def curve(self, max_n: int) -> np.ndarray:
        """Recall@1..max_n in percent (for plots); limited to the searched depth."""
        n = np.arange(1, max_n + 1)
        return 100.0 * (self.ranks[None, :] < n[:, None]).mean(axis=1)


def recall_at_n(
    predictions: np.ndarray, positives: list[np.ndarray], ns: tuple[int, ...] = DEFAULT_NS
) -> Recalls:
    """Recall@N (percent) from ranked predictions (Q x k database indices).

    ``k`` must be at least max(ns), or the whole database (then Recall@N for N > k is the
    share of queries with a positive anywhere, which is what it means).
    """
    if min(ns, default=0) < 1:
        raise EdgeVPRError(f"Recall@N needs N >= 1, got {ns}")
    if len(predictions) != len(positives):
        raise EdgeVPRError(f"{len(predictions)} query results but {len(positives)} positive lists")
    if len(predictions) == 0:
        raise EdgeVPRError("no queries to evaluate")
    ranks = first_hit_rank(predictions, positives)
    values = {n: float(100.0 * np.mean(ranks < n)) for n in ns}
    missing = sum(1 for p in positives if len(p) == 0)
    return Recalls(values, ranks, len(predictions), missing)


def format_recalls(values: dict[int, float]) -> str:
    """``R@1: 91.2  R@5: 95.0  ...``"""
    return "  ".join(f"R@{n}: {v:.1f}" for n, v in sorted(values.items()))
