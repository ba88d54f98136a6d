"""A grid over the places' planar positions: which places a prior's circle may hold, and
how many, without looking at every place.

Places are sorted by cell (row-major), so the cells a circle's bounding box covers on one
grid row are one contiguous run: the candidates of a prior are a few slices, and a
summed-area table counts them in constant time (which decides how a prior is searched).
"""

from __future__ import annotations

import math

import numpy as np

PLACES_PER_CELL = 32  # the mean over occupied cells, about
MAX_CELLS = 1 << 22  # the count table's size cap: sparse maps get larger cells
MARGIN_M = 1.0  # added to a radius: the grid's frame may differ from the exact distance's


class GeoGrid:
    """Square cells over places at planar positions ``xy`` (metres; NaN rows: unknown).
    Places are named by their row in ``xy`` (``ids`` passed in are returned as given)."""

    def __init__(self, ids: np.ndarray, xy: np.ndarray) -> None:
        known = np.isfinite(xy).all(axis=1)
        rows = np.flatnonzero(known)
        ids, xy = ids[known], xy[known]
        self.places = len(ids)
        self._origin = xy.min(axis=0) if len(xy) else np.zeros(2)
        extent = (xy.max(axis=0) - self._origin) if len(xy) else np.zeros(2)
        occupied = max(self.places / PLACES_PER_CELL, 1.0)
        self.cell_m = max(math.sqrt(max(extent[0] * extent[1], 1.0) / occupied), 1.0)
        while (extent[0] / self.cell_m + 1) * (extent[1] / self.cell_m + 1) > MAX_CELLS:
            self.cell_m *= 2
        self._nx = int(extent[0] // self.cell_m) + 1
        self._ny = int(extent[1] // self.cell_m) + 1
        cells = self._cells(xy)
        order = np.argsort(cells, kind="stable")
        self._ids = ids[order]
        self._rows = rows[order]
        self._xy = xy[order]
        counts = np.bincount(cells, minlength=self._nx * self._ny).reshape(self._ny, self._nx)
        self._start = np.concatenate([[0], np.cumsum(counts.ravel())])
        self._table = np.zeros((self._ny + 1, self._nx + 1), np.int64)
        self._table[1:, 1:] = counts.cumsum(axis=0).cumsum(axis=1)

    def _cells(self, xy: np.ndarray) -> np.ndarray:
        c = np.floor((xy - self._origin) / self.cell_m).astype(np.int64)
        return c[:, 1] * self._nx + c[:, 0]

    def _box(self, x: float, y: float, radius: float) -> tuple[int, int, int, int] | None:
        """Cell columns and rows (inclusive) the circle's bounding box covers, or None."""
        reach = radius + MARGIN_M
        low = np.floor((np.array([x, y]) - reach - self._origin) / self.cell_m).astype(np.int64)
        high = np.floor((np.array([x, y]) + reach - self._origin) / self.cell_m).astype(np.int64)
        x0, y0 = max(int(low[0]), 0), max(int(low[1]), 0)
        x1, y1 = min(int(high[0]), self._nx - 1), min(int(high[1]), self._ny - 1)
        if not self.places or x0 > x1 or y0 > y1:
            return None
        return x0, x1, y0, y1

    def count(self, x: float, y: float, radius: float) -> int:
        """Places in the cells the circle's bounding box covers (an upper bound)."""
        box = self._box(x, y, radius)
        if box is None:
            return 0
        x0, x1, y0, y1 = box
        t = self._table
        return int(t[y1 + 1, x1 + 1] - t[y0, x1 + 1] - t[y1 + 1, x0] + t[y0, x0])

    def candidates(self, x: float, y: float, radius: float) -> np.ndarray:
        """Positions (in this grid's sorted order) of the places in the circle's
        bounding-box cells."""
        box = self._box(x, y, radius)
        if box is None:
            return np.zeros(0, np.int64)
        x0, x1, y0, y1 = box
        rows = np.arange(y0, y1 + 1)
        starts = self._start[rows * self._nx + x0]
        ends = self._start[rows * self._nx + x1 + 1]
        return np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])

    def within(self, x: float, y: float, radius: float) -> tuple[np.ndarray, np.ndarray]:
        """(ids, rows in ``xy``) of the places within ``radius`` (plus the margin) of (x, y)
        in this frame."""
        picks = self.candidates(x, y, radius)
        xy = self._xy[picks]
        picks = picks[np.hypot(xy[:, 0] - x, xy[:, 1] - y) <= radius + MARGIN_M]
        return self._ids[picks], self._rows[picks]
