"""Search among some of a map's places (those a geo prior leaves): exactly where they are few,
else the index's own walk restricted to them, exactly again where that walk finds too few."""

from __future__ import annotations

import numpy as np

from edgevpr.runtime.placemap.hnsw import FewerThanK, HnswIndex

# Below this many floats (candidates x dimension) a geo-prior query is answered by exact
# search over the candidates in range: exact, and cheaper than a filtered graph walk.
EXACT_PRIOR_BUDGET = 1 << 22


def among(
    index: HnswIndex, queries: np.ndarray, candidates: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The k best of ``candidates`` (place ids, k <= their number) for each query."""
    if len(candidates) * index.dim <= EXACT_PRIOR_BUDGET:
        return exact(index, queries, candidates, k)
    allowed = np.zeros(int(candidates.max()) + 1, dtype=bool)
    allowed[candidates] = True
    try:
        return index.search(queries, k, lambda i: i < len(allowed) and bool(allowed[i]))
    except FewerThanK:
        return exact(index, queries, candidates, k)


def exact(
    index: HnswIndex, queries: np.ndarray, candidates: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k among ``candidates`` by their stored vectors; ties broken by id, so the
    answer is deterministic."""
    scores = queries @ index.vectors(candidates).T
    order = np.lexsort((np.broadcast_to(candidates, scores.shape), -scores), axis=1)[:, :k]
    return candidates[order], np.take_along_axis(scores, order, axis=1).astype(np.float32)
