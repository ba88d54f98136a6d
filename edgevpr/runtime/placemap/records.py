"""What is known about each place, as columns.

A :class:`PlaceRecord` is one place as users give and get it (checked on construction). The
map keeps them in a :class:`RecordTable`: NumPy columns in id order (ids only grow, so a
place's row is a binary search away), with removed places kept as tombstones until the map
is rewritten, and the geo columns a prior needs computed once per change.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevpr.errors import EdgeVPRError
from edgevpr.runtime.checks import file_path, real, shown, whole
from edgevpr.runtime.geo import PlaceCoordinates, check_latlon, is_utm_zone
from edgevpr.runtime.layout_names import parse_layout_name

FLOAT_FIELDS = ("east", "north", "lat", "lon", "heading")
OBJECT_FIELDS = ("path", "utm_zone", "timestamp")
NO_SOURCE = -1


@dataclass(frozen=True)
class PlaceRecord:
    """What is known about one reference image. ``id`` is assigned by the map."""

    path: str | None = None
    east: float | None = None
    north: float | None = None
    lat: float | None = None
    lon: float | None = None
    utm_zone: str | None = None
    heading: float | None = None
    timestamp: float | str | None = None
    id: int | None = None

    def __post_init__(self) -> None:
        if self.path is not None:
            object.__setattr__(self, "path", str(file_path(self.path, "place path")))
        if self.id is not None:
            object.__setattr__(self, "id", whole(self.id, "place id", 0))
        label = self.path or self.id
        for name in FLOAT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, real(value, f"place {label}: {name}"))
        if self.utm_zone is not None and (
            not isinstance(self.utm_zone, str) or not is_utm_zone(self.utm_zone)
        ):
            zone = shown(self.utm_zone)
            raise EdgeVPRError(f"place {label}: {zone} is not a UTM zone (e.g. 32V)")
        if isinstance(self.timestamp, numbers.Real) and not isinstance(self.timestamp, bool):
            if not isinstance(self.timestamp, int):
                object.__setattr__(self, "timestamp", real(self.timestamp, "timestamp"))
        elif self.timestamp is not None and not isinstance(self.timestamp, str):
            raise EdgeVPRError(f"place {label}: timestamp must be a number or a string")
        if (self.east is None) != (self.north is None):
            raise EdgeVPRError(f"place {label}: give both east and north, or neither")
        if (self.lat is None) != (self.lon is None):
            raise EdgeVPRError(f"place {label}: give both lat and lon, or neither")
        if self.lat is not None:
            check_latlon(self.lat, self.lon, f"place {label}:")  # type: ignore[arg-type]
        if self.heading is not None and not 0.0 <= self.heading < 360.0:
            raise EdgeVPRError(f"place {label}: heading {self.heading} is not in [0, 360) degrees")

    @classmethod
    def checked(cls, values: dict[str, Any]) -> PlaceRecord:
        """A record from values that were checked when they entered the map (read back from
        its columns): built without checking them again, which costs 30 us a record."""
        record = object.__new__(cls)
        for name in cls.__dataclass_fields__:
            object.__setattr__(record, name, values.get(name))
        return record

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlaceRecord:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise EdgeVPRError(f"unknown place fields: {', '.join(sorted(unknown))}")
        return cls(**data)


def record_for(path: str | os.PathLike[str]) -> PlaceRecord:
    """A place record from an image path; coordinates, heading and time from evaluation-
    layout names (``@east@north@...``) when the name has them."""
    path = Path(path)
    parsed = parse_layout_name(path.name)
    if parsed is None:
        return PlaceRecord(path=str(path))
    return PlaceRecord(
        path=str(path),
        east=parsed.east,
        north=parsed.north,
        lat=parsed.lat,
        lon=parsed.lon,
        utm_zone=parsed.utm_zone,
        heading=parsed.heading,
        timestamp=parsed.timestamp,
    )


def as_record(item: Any) -> PlaceRecord:
    if isinstance(item, PlaceRecord):
        return item
    if isinstance(item, dict):
        return PlaceRecord.from_dict(item)
    raise EdgeVPRError(f"a place record must be a PlaceRecord or a dict, not {type(item).__name__}")


def records_for(
    count: int, records: Iterable[PlaceRecord | dict[str, Any]] | None
) -> list[PlaceRecord]:
    """``count`` checked records from what a caller gave (blank ones for None)."""
    if records is None:
        return [PlaceRecord()] * count
    if isinstance(records, (PlaceRecord, dict, str, bytes)):
        raise EdgeVPRError("records must be a list with one PlaceRecord (or dict) per place")
    try:
        items = list(records)
    except TypeError:
        raise EdgeVPRError(f"records must be a list, not {type(records).__name__}") from None
    rows = [as_record(r) for r in items]
    if len(rows) != count:
        raise EdgeVPRError(f"{count} descriptors but {len(rows)} place records")
    return rows


class RecordTable:
    """Place records as columns, rows in increasing id order; removed rows are tombstones.

    Not thread-safe by itself: the place map's lock guards it.
    """

    def __init__(self) -> None:
        self._rows = 0
        self._ids = np.empty(0, np.int64)
        self._alive = np.empty(0, bool)
        self._sources = np.empty(0, np.int32)
        self._floats = {name: np.empty(0, np.float64) for name in FLOAT_FIELDS}
        self._objects: dict[str, list[Any]] = {name: [] for name in OBJECT_FIELDS}
        self._live = 0
        self._geo: tuple[np.ndarray, PlaceCoordinates] | None = None

    # ------------------------------------------------------------------ size and lookup
    def __len__(self) -> int:
        return self._live

    def __contains__(self, place_id: object) -> bool:
        if isinstance(place_id, bool) or not isinstance(place_id, numbers.Integral):
            return False
        row = self._row(int(place_id))
        return row is not None and bool(self._alive[row])

    def live_ids(self) -> np.ndarray:
        """The ids of the places in the map, increasing."""
        return self._ids[: self._rows][self._alive[: self._rows]].copy()

    def missing(self, ids: np.ndarray) -> list[int]:
        """Those of ``ids`` that are not places of the map (vectorised: a localizer asks
        about hundreds of ids a frame)."""
        ids = np.asarray(ids, np.int64)
        if not self._rows:
            return ids.tolist()
        rows = np.minimum(self._rows_of(ids), self._rows - 1)
        known = (self._ids[rows] == ids) & self._alive[rows]
        return ids[~known].tolist()

    def _row(self, place_id: int) -> int | None:
        row = int(np.searchsorted(self._ids[: self._rows], place_id))
        return row if row < self._rows and self._ids[row] == place_id else None

    def _rows_of(self, ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self._ids[: self._rows], ids)

    # ------------------------------------------------------------------ reading
    def record(self, place_id: int) -> PlaceRecord | None:
        row = self._row(place_id)
        if row is None or not self._alive[row]:
            return None
        return self._record_at(row)

    def records(self, ids: Sequence[int] | np.ndarray) -> list[PlaceRecord]:
        """Records of places known to be in the map, in the order given."""
        return [self._record_at(int(row)) for row in self._rows_of(np.asarray(ids, np.int64))]

    def _record_at(self, row: int) -> PlaceRecord:
        values: dict[str, Any] = {n: self._objects[n][row] for n in OBJECT_FIELDS}
        for name in FLOAT_FIELDS:
            value = self._floats[name][row]
            values[name] = None if np.isnan(value) else float(value)
        values["id"] = int(self._ids[row])
        return PlaceRecord.checked(values)

    def source_of(self, place_id: int) -> int | None:
        """Index of the model that embedded a place in the map's sources (None: unknown)."""
        row = self._row(place_id)
        if row is None or not self._alive[row] or self._sources[row] == NO_SOURCE:
            return None
        return int(self._sources[row])

    def source_counts(self, sources: int) -> np.ndarray:
        live = self._sources[: self._rows][self._alive[: self._rows]]
        return np.bincount(live[live != NO_SOURCE], minlength=sources)

    def coordinates(self) -> tuple[np.ndarray, PlaceCoordinates]:
        """(live ids, their coordinates as columns); computed once per change."""
        if self._geo is None:  # two readers may both compute it, harmlessly
            live = self._alive[: self._rows]
            zones = {
                z
                for z, east, alive in zip(
                    self._objects["utm_zone"], self._floats["east"], live, strict=False
                )
                if alive and z and not np.isnan(east)
            }
            columns = {
                n: self._floats[n][: self._rows][live] for n in ("east", "north", "lat", "lon")
            }
            self._geo = (self.live_ids(), PlaceCoordinates(utm_zones=frozenset(zones), **columns))
        return self._geo

    def coordinate_kind(self) -> str | None:
        """'east/north', 'lat/lon', both joined by '+', or None when no place has any."""
        live = self._alive[: self._rows]
        kinds = [
            name
            for name, column in (("east/north", "east"), ("lat/lon", "lat"))
            if np.isfinite(self._floats[column][: self._rows][live]).any()
        ]
        return "+".join(kinds) or None

    def without_coordinates(self, ids: np.ndarray) -> int:
        """How many of the places ``ids`` have neither east/north nor lat/lon."""
        rows = self._rows_of(np.asarray(ids, np.int64))
        east, lat = self._floats["east"][rows], self._floats["lat"][rows]
        return int(np.count_nonzero(np.isnan(east) & np.isnan(lat)))

    # ------------------------------------------------------------------ changing
    def append(self, ids: np.ndarray, rows: list[PlaceRecord], source: int = NO_SOURCE) -> None:
        """Add places whose ids are all larger than any before."""
        count = len(rows)
        if count == 0:
            return
        if self._rows and ids[0] <= self._ids[self._rows - 1]:
            raise EdgeVPRError("place ids must grow")
        self._reserve(self._rows + count)
        span = slice(self._rows, self._rows + count)
        self._ids[span] = ids
        self._alive[span] = True
        self._sources[span] = source
        for name in FLOAT_FIELDS:
            self._floats[name][span] = [
                np.nan if getattr(r, name) is None else getattr(r, name) for r in rows
            ]
        for name in OBJECT_FIELDS:
            self._objects[name].extend(getattr(r, name) for r in rows)
        self._rows += count
        self._live += count
        self._geo = None

    def delete(self, ids: np.ndarray) -> None:
        """Remove places known to be in the map."""
        self._alive[self._rows_of(ids)] = False
        self._live -= len(ids)
        self._geo = None

    def _reserve(self, rows: int) -> None:
        if rows <= len(self._ids):
            return
        size = max(rows, 2 * len(self._ids), 64)
        self._ids = _grown(self._ids, size)
        self._alive = _grown(self._alive, size)
        self._sources = _grown(self._sources, size)
        self._floats = {name: _grown(column, size) for name, column in self._floats.items()}

    # ------------------------------------------------------------------ as plain data
    def to_dicts(self) -> list[dict[str, Any]]:
        """Every live place as a dict (with ``source`` where known), in id order."""
        out = []
        for row in np.flatnonzero(self._alive[: self._rows]).tolist():
            data = self._record_at(row).to_dict()
            if self._sources[row] != NO_SOURCE:
                data["source"] = int(self._sources[row])
            out.append(data)
        return out


def _grown(array: np.ndarray, size: int) -> np.ndarray:
    out = np.empty(size, array.dtype)
    out[: len(array)] = array
    return out
