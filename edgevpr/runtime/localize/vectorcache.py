"""The descriptors a tracker scores, kept between frames.

Hypotheses move about a place a frame, so most places a frame scores were scored the frame
before; fetching a descriptor from hnswlib costs about 30 us (measured: 8 of a frame's
11.6 ms on a 4096-d map before this cache). The cache is a fixed ring of rows: its memory
is set by a byte budget, never by the map's size.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

DEFAULT_BUDGET_BYTES = 32 * 2**20
MIN_ROWS = 1024  # at least a frame's worth of places (the default beam scores a few hundred)


class VectorCache:
    """Descriptors of route positions: ``fetch(positions)`` on a miss, rows kept in a ring.

    Args:
        fetch: the descriptors (float32, one row each) of an array of positions.
        places: positions there are (0 .. places - 1).
        dim: descriptor size.
        budget_bytes: memory for the rows (at least ``MIN_ROWS`` rows are kept).
    """

    def __init__(
        self,
        fetch: Callable[[np.ndarray], np.ndarray],
        places: int,
        dim: int,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
    ) -> None:
        self._fetch = fetch
        self.capacity = max(MIN_ROWS, budget_bytes // (4 * dim))
        self._slot = np.full(places, -1, np.int64)
        self._owner = np.full(self.capacity, -1, np.int64)
        self._rows = np.empty((self.capacity, dim), np.float32)
        self._next = 0
        self.hits = self.misses = 0

    def dots(self, positions: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Cosines of ``query`` to the descriptors at ``positions`` (unique positions)."""
        positions = np.asarray(positions, np.int64)
        slots = self._slot[positions]
        hit = slots >= 0
        out = np.empty(len(positions), np.float32)
        out[hit] = self._rows[slots[hit]] @ query
        missing = positions[~hit]
        self.hits += int(hit.sum())
        self.misses += len(missing)
        if len(missing):
            fetched = np.asarray(self._fetch(missing), np.float32)
            out[~hit] = fetched @ query
            self._keep(missing[: self.capacity], fetched[: self.capacity])
        return out

    def _keep(self, positions: np.ndarray, rows: np.ndarray) -> None:
        """Store rows in the next slots of the ring, evicting whatever held them."""
        slots = (self._next + np.arange(len(positions))) % self.capacity
        evicted = self._owner[slots]
        self._slot[evicted[evicted >= 0]] = -1
        self._owner[slots] = positions
        self._slot[positions] = slots
        self._rows[slots] = rows
        self._next = int((self._next + len(positions)) % self.capacity)
