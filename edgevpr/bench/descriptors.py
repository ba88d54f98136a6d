"""Place maps of any size with the structure of real ones, grown from the descriptors of a
few hundred real images, and how an approximate search is scored against exact search.

HNSW recall means something only on descriptors with neighbourhood structure: on uniform
random vectors every point is about equally far from every other and recall collapses. So
map entries are made the way a route is mapped: between two consecutive real keyframes
(interpolated), plus appearance change drawn from the real descriptors' own differences
(so it stays in the subspace real images span), plus a little isotropic noise; then
renormalised. Queries are the real query images' own descriptors where there are enough
(topped up by draws around them), else draws around the real database descriptors with a
larger change (a revisit under other conditions).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# Appearance change per entry, in units of the median nearest-neighbour distance of the real
# descriptors: maps get small changes (nearby frames), queries larger ones (a revisit).
MAP_CHANGE = 0.5
QUERY_CHANGE = 1.0
ISOTROPIC_SHARE = 0.1  # of the change, in directions no real image spans (sensor noise)
DIFFERENCES_PER_ENTRY = 4
CHUNK = 2048
PLACE_SPACING_M = 2.0  # route length per grown place
ROW_GAP_M = 200.0  # between the serpentine's rows (a city's blocks)
# Two results are the same place when their similarities agree to float32 rounding:
# a tie broken differently is not a search error.
TIE_TOLERANCE = 1e-5


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def median_nn_distance(real: np.ndarray, sample: int = 512) -> float:
    """Median Euclidean distance from a real descriptor to its nearest other one."""
    rows = real[:sample]
    sims = rows @ real.T
    for i in range(len(rows)):
        sims[i, i] = -np.inf
    nearest = np.clip(sims.max(axis=1), -1.0, 1.0)
    return float(np.median(np.sqrt(np.maximum(2.0 - 2.0 * nearest, 0.0))))


def rms_difference(real: np.ndarray, rng: np.random.Generator, pairs: int = 1024) -> float:
    a = rng.integers(0, len(real), pairs)
    b = rng.integers(0, len(real), pairs)
    return float(np.sqrt(np.mean(np.sum((real[a] - real[b]) ** 2, axis=1))) + 1e-12)


def grow(real: np.ndarray, count: int, seed: int, change: float = MAP_CHANGE) -> np.ndarray:
    """``count`` unit descriptors (float32) spread along and around the real ones (see the
    module docstring); ``real`` is N x D unit rows in route order, N >= 2."""
    parts = [vectors for vectors, _ in grow_chunks(real, count, seed, change)]
    return np.concatenate(parts) if parts else np.zeros((0, real.shape[1]), np.float32)


def grow_chunks(
    real: np.ndarray, count: int, seed: int, change: float = MAP_CHANGE, chunk: int = CHUNK
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """What :func:`grow` makes, ``chunk`` rows at a time (a million 4096-d rows are 16 GB),
    each with its route position: the real keyframe it follows plus the fraction of the way
    to the next (the same rows whatever the chunk size, for one seed)."""
    real = l2_normalize(np.asarray(real, dtype=np.float32))
    n, dim = real.shape
    if n < 2:
        raise ValueError("need at least two real descriptors to grow a map")
    rng = np.random.default_rng(seed)
    target = change * median_nn_distance(real)
    # A sum of k weighted differences has about sqrt(k) times the RMS difference as norm.
    scale = target / (rms_difference(real, rng) * np.sqrt(DIFFERENCES_PER_ENTRY))
    rows, positions = [], []
    for start in range(0, count, CHUNK):
        m = min(CHUNK, count - start)
        left = rng.integers(0, n - 1, m)
        t = rng.random((m, 1), dtype=np.float32)
        entries = (1.0 - t) * real[left] + t * real[left + 1]
        a = rng.integers(0, n, (m, DIFFERENCES_PER_ENTRY))
        b = rng.integers(0, n, (m, DIFFERENCES_PER_ENTRY))
        weights = rng.standard_normal((m, DIFFERENCES_PER_ENTRY), dtype=np.float32)
        entries += scale * np.einsum("mk,mkd->md", weights, real[a] - real[b])
        isotropic = rng.standard_normal((m, dim), dtype=np.float32)
        entries += (ISOTROPIC_SHARE * target / np.sqrt(dim)) * isotropic
        rows.append(l2_normalize(entries))
        positions.append(left + t[:, 0].astype(np.float64))
        if sum(len(r) for r in rows) >= chunk or start + m >= count:
            yield np.concatenate(rows), np.concatenate(positions)
            rows, positions = [], []


def route_xy(positions: np.ndarray, keyframes: int, places: int) -> np.ndarray:
    """Planar positions (metres) for route positions in [0, keyframes - 1]: the route laid
    out as a serpentine of rows ``ROW_GAP_M`` apart over a square, long enough for one place
    every ``PLACE_SPACING_M`` (a million places cover about 20 x 20 km)."""
    length = places * PLACE_SPACING_M
    side = np.sqrt(length * ROW_GAP_M)
    along = positions / max(keyframes - 1, 1) * length
    row = np.floor(along / side)
    x = np.mod(along, side)
    x = np.where(row % 2 == 1, side - x, x)
    return np.stack([x, row * ROW_GAP_M], axis=1)


def query_set(
    real_database: np.ndarray, real_queries: np.ndarray | None, count: int, seed: int
) -> np.ndarray:
    """``count`` query descriptors: real ones first (evenly spread), then grown ones."""
    if real_queries is None or len(real_queries) < 2:
        return grow(real_database, count, seed, change=QUERY_CHANGE)
    real_queries = l2_normalize(np.asarray(real_queries, dtype=np.float32))
    if len(real_queries) >= count:
        picks = np.linspace(0, len(real_queries) - 1, count).round().astype(int)
        return real_queries[picks]
    extra = grow(real_queries, count - len(real_queries), seed, change=MAP_CHANGE)
    return np.concatenate([real_queries, extra])


def content_key(*arrays: np.ndarray, **params: object) -> str:
    """A short hash of arrays and parameters: the name of a cached artifact built from them."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str(array.shape).encode())
        digest.update(str(array.dtype).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(repr(sorted(params.items())).encode())
    return digest.hexdigest()[:20]


def exact_search(
    database: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by inner product (= cosine on unit rows): (ids, similarities), best first."""
    sims = queries @ database.T
    k = min(k, database.shape[0])
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    part_sims = np.take_along_axis(sims, part, axis=1)
    order = np.argsort(-part_sims, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_sims, order, axis=1)


@dataclass(frozen=True)
class Agreement:
    """How well an approximate search reproduces exact search on the same queries."""

    top1: float  # share of queries whose first result is exact's first (or ties with it)
    recall_at_k: float  # mean share of exact's top-k found in the approximate top-k
    k: int


def agreement(
    approx_ids: np.ndarray,
    approx_sims: np.ndarray,
    exact_ids: np.ndarray,
    exact_sims: np.ndarray,
    k: int,
) -> Agreement:
    """Score approximate results against exact ones (both N x >=k, best first)."""
    approx_ids, exact_ids = approx_ids[:, :k], exact_ids[:, :k]
    same_first = approx_ids[:, 0] == exact_ids[:, 0]
    tied_first = approx_sims[:, 0] >= exact_sims[:, 0] - TIE_TOLERANCE
    found = [
        len(set(a.tolist()) & set(e.tolist())) / k
        for a, e in zip(approx_ids, exact_ids, strict=True)
    ]
    return Agreement(
        top1=float(np.mean(same_first | tied_first)),
        recall_at_k=float(np.mean(found)),
        k=k,
    )
