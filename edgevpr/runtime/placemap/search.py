"""How a place map answers a query, whatever its index kind.

Without a prior: the index (over projected, possibly quantised vectors) proposes the best
``rerank`` places, and their full-precision descriptors rank them exactly (maps built with
``--store none`` return the index's own order and scores).

With a prior (only places within a radius), by how many places the circle may hold, which
the geo grid counts without looking at them:

- few places: exact search among them (cost proportional to their number);
- more: the index's own filtered search where the kind has one (faiss: a bitmap of the
  candidates the grid finds), for up to half the map;
- a large share of the map (or more than a few places, for kinds without a filter): the
  index is asked for proportionally more places and those outside the circle are dropped
  (no candidate list is built at all).

Anything the index cannot answer (too few live places in its walk) is answered exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgevpr.core.geo import (
    GeoPrior,
    LocalProjection,
    PlaceCoordinates,
    distances_m,
    latlon_to_utm,
)
from edgevpr.runtime.placemap.geogrid import GeoGrid
from edgevpr.runtime.placemap.kinds import FewerThanK, IndexKind, SearchIndex
from edgevpr.runtime.placemap.projection import Projection
from edgevpr.runtime.placemap.records import RecordTable
from edgevpr.runtime.placemap.vectors import VectorStore

DEFAULT_RERANK = 32
# Exact search among a prior's candidates up to this many floats (candidates x dimension):
# about a millisecond of NumPy here.
EXACT_PRIOR_BUDGET = 1 << 21
# Circles with more places than EXACT_PRIOR_BUDGET allows to score, holding this share of
# the map or more, are over-fetched: the work then does not grow with the circle (at 1M
# places, faiss-ivf, a 5 km prior holding about 20 % of the map took 14 ms through the native
# filter, most of it listing and measuring its candidates). Smaller circles go to the native
# filter; kinds without one over-fetch whenever scoring the candidates exactly would cost
# more than EXACT_PRIOR_BUDGET.
OVERFETCH_SHARE = 0.05
OVERFETCH_FACTOR = 2.0  # ask for this many times the places the share predicts
MAX_OVERFETCH = 4096


@dataclass(frozen=True)
class Found:
    """One query's answer: ids and scores, best first, and distances to a prior."""

    ids: np.ndarray
    scores: np.ndarray
    distances_m: np.ndarray | None = None


class MapSearch:
    """Search over a map's parts (the map holds its lock while this runs)."""

    def __init__(
        self,
        kind: IndexKind,
        index: SearchIndex,
        records: RecordTable,
        store: VectorStore,
        projection: Projection | None,
        rerank: int,
    ) -> None:
        self.kind, self.index, self.records, self.store = kind, index, records, store
        self.projection, self.rerank = projection, rerank
        self._grid: tuple[object, GeoGrid | None, MetricFrame | None] | None = None

    # ------------------------------------------------------------------ without a prior
    def knn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        depth = min(max(k, self.rerank) if self.store.keeps else k, len(self.records))
        try:
            ids, scores = self._proposed(queries, depth)
        except FewerThanK:
            return self.exact(queries, self.records.live_ids(), k)
        return self._ranked(queries, ids, scores, k)

    def _projected(self, queries: np.ndarray) -> np.ndarray:
        return queries if self.projection is None else self.projection.apply(queries)

    def _proposed(
        self, queries: np.ndarray, depth: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The index's best ``depth`` live places per query: removed places it still holds
        (as faiss HNSW does until compaction) are skipped, and an id the records do not
        know is never passed on."""
        stale = self.records.rows - len(self.records)
        asked = depth + min(stale, depth) if stale else depth
        ids, scores = self.index.search(self._projected(queries), asked, allowed)
        alive = self.records.alive(ids)
        if not alive.all():
            if (alive.sum(axis=1) < depth).any():
                raise FewerThanK
            order = np.argsort(~alive, axis=1, kind="stable")
            ids, scores = np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1)
        return ids[:, :depth], scores[:, :depth]

    def _ranked(
        self, queries: np.ndarray, ids: np.ndarray, scores: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best k of each row of candidates: by exact cosine where the map keeps
        full-precision descriptors, else as the index scored them."""
        if self.store.keeps:
            rows = self.records.rows_of(ids.ravel())
            vectors = self.store.get(rows).reshape(*ids.shape, -1)
            scores = np.einsum("qd,qcd->qc", queries, vectors)
        return _top(ids, scores, k)

    def exact(
        self, queries: np.ndarray, candidates: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among ``candidates`` (place ids, k <= their number); ties broken by
        id, so the answer is deterministic."""
        k = min(k, len(candidates))
        if self.store.keeps:
            scores = queries @ self.store.get(self.records.rows_of(candidates)).T
        else:
            scores = self._projected(queries) @ self.index.vectors(candidates).T
        ids = np.broadcast_to(candidates, scores.shape)
        return _top(ids, scores, k)

    # ------------------------------------------------------------------ with a prior
    def with_prior(self, queries: np.ndarray, k: int, prior: GeoPrior) -> list[Found]:
        """Each query's best k places within the prior's circle. Whatever path found them,
        every answer is checked against the circle here: a query whose answer holds a
        place outside it (an index that ignored its filter) is answered exactly instead."""
        found = self._searched_with_prior(queries, k, prior)
        out = []
        for row, answer in enumerate(found):
            distance = np.nan_to_num(np.asarray(answer.distances_m), nan=np.inf)
            if (distance > prior.radius_m).any():
                answer = self._exact_in_circle(queries[row : row + 1], k, prior)[0]
            out.append(answer)
        return out

    def _searched_with_prior(self, queries: np.ndarray, k: int, prior: GeoPrior) -> list[Found]:
        point = self._point(prior)
        if point is not None:
            grid, _ = self._geo()
            inside = grid.count(*point, prior.radius_m)  # type: ignore[union-attr]
            share = inside / max(len(self.records), 1)
            # few places are scored exactly, whatever share of the map they are
            many = inside * self.store.dim > EXACT_PRIOR_BUDGET
            if many and (share >= OVERFETCH_SHARE or not self.kind.filters):
                found = self._overfetched(queries, k, prior, share)
                if found is not None:
                    return found
        return self._in_circle(queries, k, prior, point, exact=False)

    def _exact_in_circle(self, queries: np.ndarray, k: int, prior: GeoPrior) -> list[Found]:
        return self._in_circle(queries, k, prior, self._point(prior), exact=True)

    def _point(self, prior: GeoPrior) -> tuple[float, float] | None:
        """The prior's position in the grid's frame (None: no grid, or not placeable)."""
        grid, frame = self._geo()
        return None if grid is None or frame is None else in_frame(prior, frame)

    def _in_circle(
        self, queries: np.ndarray, k: int, prior: GeoPrior, point: tuple[float, float] | None,
        exact: bool,
    ) -> list[Found]:  # fmt: skip
        """Search among the places inside the circle, listed (by the grid where there is
        one) and measured exactly."""
        if point is not None:
            grid, _ = self._geo()
            candidates, rows = grid.within(*point, prior.radius_m)  # type: ignore[union-attr]
        else:
            candidates = self.records.live_ids()
            rows = np.arange(len(candidates))
        distance = self._distances(prior, rows=rows)
        inside = np.nan_to_num(distance, nan=np.inf) <= prior.radius_m
        candidates = candidates[inside]
        if not len(candidates):
            nothing = Found(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0))
            return [nothing] * len(queries)
        if exact:
            ids, scores = self.exact(queries, candidates, min(k, len(candidates)))
        else:
            ids, scores = self._among(queries, candidates, k)
        pairs = zip(ids, scores, strict=True)
        return [Found(i, s, self._distances(prior, ids=i)) for i, s in pairs]

    def _among(
        self, queries: np.ndarray, candidates: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(candidates))
        if len(candidates) * self.store.dim <= EXACT_PRIOR_BUDGET:
            return self.exact(queries, candidates, k)
        depth = min(max(k, self.rerank) if self.store.keeps else k, len(candidates))
        if not self.kind.filters:
            return self._two_stage(queries, candidates, depth, k)
        try:
            ids, scores = self._proposed(queries, depth, np.sort(candidates))
        except FewerThanK:
            return self._two_stage(queries, candidates, depth, k)
        return self._ranked(queries, ids, scores, k)

    def _two_stage(
        self, queries: np.ndarray, candidates: np.ndarray, depth: int, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """All candidates scored on the index's own compact vectors, the best ``depth``
        re-ranked exactly: a fraction of the bytes of scoring them all at full precision."""
        if not self.kind.keeps_vectors or not self.store.keeps:
            return self.exact(queries, candidates, k)
        scores = self._projected(queries) @ self.index.vectors(candidates).T
        ids = np.broadcast_to(candidates, scores.shape)
        best, _ = _top(ids, scores, depth)
        return self._ranked(queries, best, np.zeros(best.shape, np.float32), k)

    def _overfetched(
        self, queries: np.ndarray, k: int, prior: GeoPrior, share: float
    ) -> list[Found] | None:
        """Ask the index for more places than needed and keep those inside the circle;
        None when some query kept too few (the caller then searches among candidates)."""
        depth = min(max(k, self.rerank) if self.store.keeps else k, len(self.records))
        asked = min(MAX_OVERFETCH, len(self.records),
                    math.ceil(depth * OVERFETCH_FACTOR / max(share, 1e-9)))  # fmt: skip
        try:
            ids, scores = self._proposed(queries, asked)
        except FewerThanK:
            return None
        distance = self._distances(prior, ids=ids.ravel()).reshape(ids.shape)
        inside = np.nan_to_num(distance, nan=np.inf) <= prior.radius_m
        if (inside.sum(axis=1) < min(depth, k)).any():
            return None
        out = []
        for row in range(len(queries)):
            keep = np.flatnonzero(inside[row])[:depth]
            best, best_scores = self._ranked(queries[row : row + 1], ids[row : row + 1, keep],
                                             scores[row : row + 1, keep], k)  # fmt: skip
            out.append(Found(best[0], best_scores[0], self._distances(prior, ids=best[0])))
        return out

    def _distances(
        self, prior: GeoPrior, ids: np.ndarray | None = None, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """Metres from the prior to places given by id, or by row of the live places'
        coordinates (what the grid returns: no lookup)."""
        all_ids, coordinates = self.records.coordinates()
        if rows is None:
            rows = np.searchsorted(all_ids, np.asarray(ids))
        subset = PlaceCoordinates(
            east=coordinates.east[rows], north=coordinates.north[rows],
            lat=coordinates.lat[rows], lon=coordinates.lon[rows],
            utm_zones=coordinates.utm_zones,
        )  # fmt: skip
        return distances_m(prior, subset)

    def _geo(self) -> tuple[GeoGrid | None, MetricFrame | None]:
        """The grid over the places' positions and its frame (built once per change)."""
        current = self.records.coordinates()
        if self._grid is None or self._grid[0] is not current:
            ids, coordinates = current
            frame = metric_frame(coordinates)
            grid = None if frame is None else GeoGrid(ids, frame[0].metres(coordinates))
            self._grid = (current, grid, frame)
        return self._grid[1], self._grid[2]


MetricFrame = tuple[LocalProjection, frozenset]  # the flat frame of a map's places, its UTM zones


def metric_frame(coordinates: PlaceCoordinates) -> MetricFrame | None:
    """One flat frame (metres) for every place with a position, or None for maps that mix
    east/north places with latitude/longitude-only ones."""
    planar = np.isfinite(coordinates.east)
    geographic = np.isfinite(coordinates.lat) & ~planar
    if planar.any() and geographic.any():
        return None
    return LocalProjection.of(coordinates), coordinates.utm_zones


def in_frame(prior: GeoPrior, frame: MetricFrame) -> tuple[float, float] | None:
    """The prior's position in a frame, or None where it cannot be placed there."""
    projection, zones = frame
    if projection.planar:
        if not prior.is_latlon:
            return prior.east, prior.north  # type: ignore[return-value]
        if len(zones) != 1:
            return None
        (zone,) = zones
        return latlon_to_utm(prior.lat, prior.lon, zone)  # type: ignore[arg-type]
    if not prior.is_latlon:
        return None
    point = PlaceCoordinates(east=np.array([np.nan]), north=np.array([np.nan]),
                             lat=np.array([prior.lat]), lon=np.array([prior.lon]),
                             utm_zones=frozenset())  # fmt: skip
    x, y = projection.metres(point)[0]
    return float(x), float(y)


def _top(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's best k by score, ties by the smaller id."""
    order = np.lexsort((ids, -scores), axis=1)[:, :k]
    return np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1).astype(
        np.float32
    )
