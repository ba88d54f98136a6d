"""How a map's places lie for tracking: their traversal order, positions in metres, and
whether they form a route.

A map is a route when its places were recorded in travel order: by their drive and their
order in it where every place was taught from a recorded drive (each drive a segment of its
own: a route never runs from the end of one drive into the next), else by their timestamps
where every place has one, else by the natural order of their file names (``frame2`` before
``frame10``), else by id. Where places carry coordinates, the order is taken as a route
only if consecutive places are mostly neighbours; a map without coordinates can only be a
route.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from edgevpr.core.geo import LocalProjection, PlaceCoordinates
from edgevpr.core.layout_names import parse_layout_name
from edgevpr.runtime.localize.fix import ROUTE_M
from edgevpr.runtime.localize.route import MAX_PACE, MIN_PACE
from edgevpr.runtime.placemap import PlaceMap, PlaceRecord

# Consecutive places count as neighbours within this multiple of the typical spacing, and a
# route needs this share of its steps to be between neighbours.
NEIGHBOUR_FACTOR = 3.0
ROUTE_SHARE = 0.9
NEAR_IN_X = 50


@dataclass(frozen=True)
class PlaceLayout:
    """A map's places in traversal order (index = route position)."""

    ids: np.ndarray  # place ids, in traversal order
    xy: np.ndarray  # N x 2 metres in one flat frame; NaN rows without a position
    records: list[PlaceRecord]
    coordinates: PlaceCoordinates  # as the records give them, in traversal order
    projection: LocalProjection
    kind: str | None  # "east/north", "lat/lon", "route metres" or None: how positions are reported
    spacing_m: float | None  # typical distance between neighbouring places
    is_route: bool
    ordered_by: str  # "drive", "timestamp", "name" or "id"
    segments: np.ndarray  # per place, the number of its drive (all 0 without drives)
    # median frames of the recorded drive from one place to the next (more than 1 where the
    # drive was keyframed); None where the places were not taught from drives
    frames_per_place: float | None = None
    # median seconds between the recorded drive's frames, where its places have times
    frame_period_s: float | None = None

    @property
    def drives(self) -> int:
        """How many drives (segments of the route) the places come from."""
        return int(self.segments.max()) + 1 if len(self.segments) else 0

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def pace(self) -> float:
        """Route places a frame of a stream recorded as the map's drives were (1 where
        the map does not say; within the paces a route is searched at)."""
        if not self.frames_per_place:
            return 1.0
        return min(max(1.0 / self.frames_per_place, MIN_PACE), MAX_PACE)

    def index_of(self, place_ids: np.ndarray) -> np.ndarray:
        """Route positions of place ids (all must be places of the map)."""
        return self._lookup[np.asarray(place_ids, np.int64)]

    @property
    def _lookup(self) -> np.ndarray:
        lookup = getattr(self, "_index_cache", None)
        if lookup is None:
            lookup = np.full(int(self.ids.max()) + 1 if len(self.ids) else 0, -1, np.int64)
            lookup[self.ids] = np.arange(len(self.ids))
            object.__setattr__(self, "_index_cache", lookup)
        return lookup

    @classmethod
    def of(cls, placemap: PlaceMap) -> PlaceLayout:
        records = placemap.records()
        order, ordered_by = traversal_order(records)
        records = [records[i] for i in order]
        ids = np.asarray([r.id for r in records], np.int64)
        coordinates = PlaceCoordinates(
            east=_column(records, "east"),
            north=_column(records, "north"),
            lat=_column(records, "lat"),
            lon=_column(records, "lon"),
            utm_zones=frozenset(r.utm_zone for r in records if r.utm_zone),
        )
        projection = LocalProjection.of(coordinates)
        xy = projection.metres(coordinates)
        kind = placemap.coordinate_kind()
        kind = None if kind is None else kind.split("+")[0]
        route_m = _column(records, "route_m")
        if kind is None and len(records) and np.isfinite(route_m).all():
            xy, kind = np.stack([route_m, np.zeros_like(route_m)], axis=1), ROUTE_M
        segments = drive_segments(records) if ordered_by == "drive" else np.zeros(len(ids), int)
        # drives of one road lie on top of each other: the nearest place is the same spot in
        # another drive, so their spacing is the step along each drive
        spacing = drive_spacing(xy, segments) if ordered_by == "drive" else typical_spacing(xy)
        frames_per_place, frame_period_s = (
            drive_frames(records, segments) if ordered_by == "drive" else (None, None)
        )
        return cls(
            ids=ids,
            xy=xy,
            records=records,
            coordinates=coordinates,
            projection=projection,
            kind=kind,
            spacing_m=spacing,
            is_route=is_route(xy, spacing, segments),
            ordered_by=ordered_by,
            segments=segments,
            frames_per_place=frames_per_place,
            frame_period_s=frame_period_s,
        )


def _column(records: list[PlaceRecord], name: str) -> np.ndarray:
    values = (getattr(r, name) for r in records)
    return np.fromiter((np.nan if v is None else v for v in values), np.float64, len(records))


def natural_key(text: str) -> list[object]:
    """'img10.jpg' after 'img9.jpg': digit runs compare as numbers."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text)]


def name_key(path: str) -> list[object]:
    """The natural order key of an image's name: of its original stem where the name is in
    the evaluation layout (``@east@north@...@stem@...``: the coordinates that lead such a
    name are not the travel order), else of the whole name."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    parsed = parse_layout_name(name)
    return natural_key(parsed.stem if parsed is not None and parsed.stem else name)


def timestamp_value(value: float | str | None) -> float | None:
    """A record's timestamp as seconds: numbers as they are, ISO 8601 text parsed."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def traversal_order(records: list[PlaceRecord]) -> tuple[list[int], str]:
    """Indices of ``records`` in travel order, and what ordered them."""
    if records and all(r.drive is not None and r.order is not None for r in records):
        rank = _drive_ranks(records)
        return sorted(range(len(records)),
                      key=lambda i: (rank[records[i].drive], records[i].order,
                                     records[i].id or 0)), "drive"  # fmt: skip
    times = [timestamp_value(r.timestamp) for r in records]
    if records and all(t is not None for t in times):
        return sorted(range(len(records)), key=lambda i: (times[i], records[i].id)), "timestamp"
    if records and all(r.path for r in records):
        keys = [name_key(r.path) for r in records]  # type: ignore[arg-type]
        return sorted(range(len(records)), key=lambda i: (keys[i], records[i].id)), "name"
    return sorted(range(len(records)), key=lambda i: records[i].id or 0), "id"


def _drive_ranks(records: list[PlaceRecord]) -> dict[str | None, int]:
    """Drives numbered in the order their first place joined the map (lowest id)."""
    first: dict[str | None, int] = {}
    for record in records:
        first[record.drive] = min(first.get(record.drive, record.id or 0), record.id or 0)
    return {drive: rank for rank, drive in enumerate(sorted(first, key=first.__getitem__))}


def drive_segments(records: list[PlaceRecord]) -> np.ndarray:
    """Per record (already in traversal order), the number of its drive."""
    rank = _drive_ranks(records)
    return np.fromiter((rank[r.drive] for r in records), np.int64, len(records))


def drive_spacing(xy: np.ndarray, segments: np.ndarray) -> float | None:
    """Median distance between consecutive places of each drive (steps of 0 left out: a
    place recorded twice at one spot)."""
    steps = np.linalg.norm(np.diff(xy, axis=0), axis=1)[np.diff(segments) == 0]
    steps = steps[np.isfinite(steps) & (steps > 0)]
    return float(np.median(steps)) if len(steps) else None


def drive_frames(
    records: list[PlaceRecord], segments: np.ndarray
) -> tuple[float | None, float | None]:
    """From consecutive places of each drive (records in traversal order): the median step
    in recorded frame order between them (1 where every frame became a place, 4 where a
    drive of frames 20 m apart was keyframed every 80 m), and the median seconds a recorded
    frame took, where the places have times (None where unknown)."""
    same = np.diff(segments) == 0
    frames = np.diff(_column(records, "order"))[same]
    times = np.fromiter((np.nan if (t := timestamp_value(r.timestamp)) is None else t
                         for r in records), np.float64, len(records))  # fmt: skip
    seconds = np.diff(times)[same]
    stepped = np.isfinite(frames) & (frames > 0)
    timed = stepped & np.isfinite(seconds) & (seconds > 0)
    gap = float(np.median(frames[stepped])) if stepped.any() else None
    period = float(np.median(seconds[timed] / frames[timed])) if timed.any() else None
    return gap, period


def typical_spacing(xy: np.ndarray) -> float | None:
    """Median distance from a place to its nearest other place, over a sample of up to 2000
    places, each compared with its NEAR_IN_X neighbours in east order (the nearest place is
    among them on routes and grids alike; cost independent of the map's size)."""
    known = xy[np.isfinite(xy).all(axis=1)]
    if len(known) < 2:
        return None
    known = known[np.argsort(known[:, 0], kind="stable")]
    picks = np.random.default_rng(0).permutation(len(known))[:2000]
    offsets = np.arange(-NEAR_IN_X, NEAR_IN_X + 1)
    offsets = offsets[offsets != 0]
    others = np.clip(picks[:, None] + offsets[None, :], 0, len(known) - 1)
    distance = np.linalg.norm(known[others] - known[picks][:, None, :], axis=2)
    distance[(distance == 0) | (others == picks[:, None])] = np.inf
    nearest = distance.min(axis=1)
    nearest = nearest[np.isfinite(nearest)]
    return float(np.median(nearest)) if len(nearest) else None


def is_route(xy: np.ndarray, spacing: float | None, segments: np.ndarray) -> bool:
    """Whether consecutive places of each drive are mostly neighbours (always, without
    coordinates)."""
    known = np.isfinite(xy).all(axis=1)
    if known.sum() < 2 or spacing is None:
        return True
    same = np.diff(segments[known]) == 0
    if not same.any():
        return True
    steps = np.linalg.norm(np.diff(xy[known], axis=0), axis=1)[same]
    return float(np.mean(steps <= NEIGHBOUR_FACTOR * max(spacing, 1e-9))) >= ROUTE_SHARE
