"""Recall@N with exact nearest-neighbour search, NumPy only.

Recall@N is the share of queries with at least one true positive (a database image within
the radius) among their N nearest database descriptors. Queries without any positive
stay in the denominator and are a miss at every N (they can never be right), as in the
standard benchmark code; their number is reported so a reader can tell.

When N exceeds the database size, the N nearest are the whole database: Recall@N is then
Recall@(database size), and is reported as such (``Recalls.beyond_database``), never as
a hit for queries that have no positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgevpr.core.errors import EdgeVPRError

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


# The rank of a query whose positives are not among its ranked predictions: larger than any N.
MISS = np.iinfo(np.int64).max


def first_hit_rank(predictions: np.ndarray, positives: list[np.ndarray]) -> np.ndarray:
    """0-based rank of the first true positive per query, or ``MISS`` if none is listed."""
    ranks = np.full(len(predictions), MISS, dtype=np.int64)
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
    # The requested N larger than the database: their Recall@N is Recall@(database size).
    beyond_database: tuple[int, ...] = ()
    database_size: int | None = None

    def curve(self, max_n: int) -> np.ndarray:
        """Recall@1..max_n in percent (for plots); limited to the searched depth."""
        n = np.arange(1, max_n + 1)
        return 100.0 * (self.ranks[None, :] < n[:, None]).mean(axis=1)

    def describe(self) -> str:
        """``R@1: 91.2  R@5: 95.0 ...``, with a note when some N exceed the database."""
        text = format_recalls(self.values)
        if self.beyond_database:
            shown = ", ".join(f"R@{n}" for n in self.beyond_database)
            text += f"  ({shown}: the whole database of {self.database_size} images)"
        return text


def recall_at_n(
    predictions: np.ndarray,
    positives: list[np.ndarray],
    ns: tuple[int, ...] = DEFAULT_NS,
    database_size: int | None = None,
) -> Recalls:
    """Recall@N (percent) from ranked predictions (Q x k database indices).

    ``k`` must be at least max(ns), or the whole database: then ``database_size`` says so,
    and Recall@N for N > k is the share of queries with a positive anywhere in it (the N
    nearest of a smaller database are all of it), listed in ``beyond_database``.
    """
    if min(ns, default=0) < 1:
        raise EdgeVPRError(f"Recall@N needs N >= 1, got {ns}")
    if len(predictions) != len(positives):
        raise EdgeVPRError(f"{len(predictions)} query results but {len(positives)} positive lists")
    if len(predictions) == 0:
        raise EdgeVPRError("no queries to evaluate")
    depth = predictions.shape[1]
    too_deep = [n for n in ns if n > depth]
    if too_deep and database_size != depth:
        raise EdgeVPRError(
            f"Recall@{too_deep[0]} needs the {too_deep[0]} nearest database images, but only "
            f"{depth} were searched"
        )
    ranks = first_hit_rank(predictions, positives)
    values = {n: float(100.0 * np.mean(ranks < n)) for n in ns}
    missing = sum(1 for p in positives if len(p) == 0)
    return Recalls(values, ranks, len(predictions), missing, tuple(too_deep), database_size)


def format_recalls(values: dict[int, float]) -> str:
    """``R@1: 91.2  R@5: 95.0  ...``"""
    return "  ".join(f"R@{n}: {v:.1f}" for n, v in sorted(values.items()))
