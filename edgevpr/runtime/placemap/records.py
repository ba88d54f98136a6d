r"""What is known about each place, as columns.

The map keeps :class:`PlaceRecord`\ s (``place_record``) in a :class:`RecordTable`: NumPy
columns in id order (ids only grow, so a
place's row is a binary search away), with removed places kept as tombstones until the map
is rewritten, and the geo columns a prior needs computed once per change.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.geo import PlaceCoordinates, is_utm_zone
from edgevpr.runtime.placemap.place_record import FLOAT_FIELDS, PlaceRecord

TEXT_FIELDS = ("path", "timestamp", "drive")  # timestamps as JSON text: a number or a string
# Columns maps written before drives existed do not have: read as unknown.
OPTIONAL_COLUMNS = ("drive.offsets", "drive.blob", "drive.present", "order", "route_m")
NO_ORDER = -1
NO_SOURCE = -1
MAX_ZONES = 32767


class TextColumn:
    """Optional strings by row: those read from a map file stay encoded (offsets into one
    UTF-8 blob, decoded when a row is read), those added since are a list."""

    def __init__(self, offsets: np.ndarray | None = None, blob: np.ndarray | None = None,
                 present: np.ndarray | None = None) -> None:  # fmt: skip
        self._offsets = np.zeros(1, np.int64) if offsets is None else offsets
        self._blob = np.zeros(0, np.uint8) if blob is None else blob
        self._present = np.zeros(0, bool) if present is None else present
        self._added: list[str | None] = []

    def __len__(self) -> int:
        return len(self._present) + len(self._added)

    def __getitem__(self, row: int) -> str | None:
        base = len(self._present)
        if row >= base:
            return self._added[row - base]
        if not self._present[row]:
            return None
        raw = self._blob[self._offsets[row] : self._offsets[row + 1]].tobytes()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise EdgeVPRError(f"a place's text field is not UTF-8 (row {row})") from None

    def extend(self, values: Iterable[str | None]) -> None:
        self._added.extend(values)

    def encoded(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """``rows`` as (offsets, blob, present) arrays."""
        values = [self[int(r)] for r in rows]
        data = [v.encode("utf-8") if v is not None else b"" for v in values]
        offsets = np.zeros(len(data) + 1, np.int64)
        np.cumsum([len(d) for d in data], out=offsets[1:])
        blob = np.frombuffer(b"".join(data), np.uint8)
        return {"offsets": offsets, "blob": blob,
                "present": np.array([v is not None for v in values], bool)}  # fmt: skip

    @classmethod
    def decoded(cls, arrays: dict[str, np.ndarray], rows: int, name: str) -> TextColumn:
        """From :meth:`encoded`'s arrays, their extents checked (vectorised)."""
        offsets, blob, present = arrays["offsets"], arrays["blob"], arrays["present"]
        if offsets.shape != (rows + 1,) or present.shape != (rows,) or blob.ndim != 1:
            raise EdgeVPRError(f"the {name} column does not fit {rows} places")
        if offsets[0] != 0 or offsets[-1] != len(blob) or (np.diff(offsets) < 0).any():
            raise EdgeVPRError(f"the {name} column's offsets are broken")
        return cls(offsets, blob, present.astype(bool))


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
        self._zones: list[str] = []  # the UTM zones rows name, by code
        self._zone_codes = np.empty(0, np.int16)  # -1: none
        self._text = {name: TextColumn() for name in TEXT_FIELDS}
        self._order = np.empty(0, np.int64)  # NO_ORDER: unknown
        self._route_m = np.empty(0, np.float64)  # NaN: unknown
        self._live = 0
        self._geo: tuple[np.ndarray, PlaceCoordinates] | None = None

    # ------------------------------------------------------------------ size and lookup
    def __len__(self) -> int:
        return self._live

    @property
    def rows(self) -> int:
        """Rows held, tombstones included."""
        return self._rows

    def __contains__(self, place_id: object) -> bool:
        if isinstance(place_id, bool) or not isinstance(place_id, numbers.Integral):
            return False
        row = self._row(int(place_id))
        return row is not None and bool(self._alive[row])

    def live_ids(self) -> np.ndarray:
        """The ids of the places in the map, increasing."""
        return self._ids[: self._rows][self._alive[: self._rows]].copy()

    def live_rows(self) -> np.ndarray:
        return np.flatnonzero(self._alive[: self._rows])

    def alive(self, ids: np.ndarray) -> np.ndarray:
        """Whether each of ``ids`` is a place of the map (vectorised)."""
        ids = np.asarray(ids, np.int64)
        if not self._rows:
            return np.zeros(ids.shape, bool)
        rows = np.minimum(self._rows_of(ids), self._rows - 1)
        return (self._ids[rows] == ids) & self._alive[rows]

    def missing(self, ids: np.ndarray) -> list[int]:
        """Those of ``ids`` that are not places of the map (vectorised: a localizer asks
        about hundreds of ids a frame)."""
        ids = np.asarray(ids, np.int64)
        return ids[~self.alive(ids)].tolist()

    def _row(self, place_id: int) -> int | None:
        row = int(np.searchsorted(self._ids[: self._rows], place_id))
        return row if row < self._rows and self._ids[row] == place_id else None

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Rows of ids known to be in the table."""
        return np.searchsorted(self._ids[: self._rows], np.asarray(ids, np.int64))

    _rows_of = rows_of

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
        values: dict[str, Any] = {"path": self._text["path"][row]}
        code = int(self._zone_codes[row])
        values["utm_zone"] = self._zones[code] if code >= 0 else None
        stamp = self._text["timestamp"][row]
        values["timestamp"] = None if stamp is None else _timestamp(stamp)
        for name in FLOAT_FIELDS:
            value = self._floats[name][row]
            values[name] = None if np.isnan(value) else float(value)
        values["id"] = int(self._ids[row])
        values["drive"] = self._text["drive"][row]
        order, metres = int(self._order[row]), float(self._route_m[row])
        values["order"] = None if order == NO_ORDER else order
        values["route_m"] = None if np.isnan(metres) else metres
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
            planar = live & ~np.isnan(self._floats["east"][: self._rows])
            codes = self._zone_codes[: self._rows][planar]
            zones = frozenset(self._zones[c] for c in np.unique(codes[codes >= 0]).tolist())
            columns = {
                n: self._floats[n][: self._rows][live] for n in ("east", "north", "lat", "lon")
            }
            self._geo = (self.live_ids(), PlaceCoordinates(utm_zones=zones, **columns))
        return self._geo

    def drives(self) -> list[dict[str, Any]]:
        """Each drive the live places were taught from: its name, places, the span of its
        frames' order and the metres travelled along it (in the order first seen)."""
        summary: dict[str, dict[str, Any]] = {}
        for row in self.live_rows().tolist():
            name = self._text["drive"][row]
            if name is None:
                continue
            entry = summary.setdefault(name, {"name": name, "places": 0, "first": None,
                                              "last": None, "metres": 0.0})  # fmt: skip
            entry["places"] += 1
            order, metres = int(self._order[row]), float(self._route_m[row])
            if order != NO_ORDER:
                entry["first"] = order if entry["first"] is None else min(entry["first"], order)
                entry["last"] = order if entry["last"] is None else max(entry["last"], order)
            if not np.isnan(metres):
                entry["metres"] = max(entry["metres"], metres)
        return list(summary.values())

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
    def append(self, ids: np.ndarray, rows: list[PlaceRecord],
               source: int | np.ndarray = NO_SOURCE) -> None:  # fmt: skip
        """Add places whose ids are all larger than any before (``source``: the model that
        embedded them all, or one per place)."""
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
        self._zone_codes[span] = [self._zone_code(r.utm_zone) for r in rows]
        self._text["path"].extend(r.path for r in rows)
        self._text["timestamp"].extend(
            None if r.timestamp is None else json.dumps(r.timestamp) for r in rows
        )
        self._text["drive"].extend(r.drive for r in rows)
        self._order[span] = [NO_ORDER if r.order is None else r.order for r in rows]
        self._route_m[span] = [np.nan if r.route_m is None else r.route_m for r in rows]
        self._rows += count
        self._live += count
        self._geo = None

    def _zone_code(self, zone: str | None) -> int:
        if zone is None:
            return -1
        if zone not in self._zones:
            if len(self._zones) >= MAX_ZONES:
                raise EdgeVPRError(f"a map holds places of at most {MAX_ZONES} UTM zones")
            self._zones.append(zone)
        return self._zones.index(zone)

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
        self._zone_codes = _grown(self._zone_codes, size)
        self._order = _grown(self._order, size)
        self._route_m = _grown(self._route_m, size)
        self._floats = {name: _grown(column, size) for name, column in self._floats.items()}

    # ------------------------------------------------------------------ as columns
    def columns(self, sources: int) -> tuple[dict[str, np.ndarray], list[str]]:
        """The live places as arrays for a map file (and the zone table their codes
        index), in id order."""
        live = self.live_rows()
        arrays = {"ids": self._ids[live], "sources": self._sources[live],
                  "zones": self._zone_codes[live]}  # fmt: skip
        arrays["floats"] = np.stack([self._floats[n][live] for n in FLOAT_FIELDS], axis=1)
        arrays["order"], arrays["route_m"] = self._order[live], self._route_m[live]
        for name in TEXT_FIELDS:
            for part, array in self._text[name].encoded(live).items():
                arrays[f"{name}.{part}"] = array
        return arrays, list(self._zones)

    @classmethod
    def from_columns(
        cls, arrays: dict[str, np.ndarray], zones: list[str], sources: int
    ) -> RecordTable:
        """Back from :meth:`columns`, every value checked at once (a broken file raises
        one EdgeVPRError line)."""
        ids, floats = arrays["ids"], arrays["floats"]
        count = len(ids)
        if ids.ndim != 1 or floats.shape != (count, len(FLOAT_FIELDS)):
            raise EdgeVPRError("the records' columns disagree in length")
        if count and (ids[0] < 0 or (np.diff(ids) <= 0).any()):
            raise EdgeVPRError("record ids are negative or out of order")
        check_float_columns(floats)
        codes, place_sources = arrays["zones"], arrays["sources"]
        if codes.shape != (count,) or place_sources.shape != (count,):
            raise EdgeVPRError("the records' columns disagree in length")
        if not isinstance(zones, list) or not all(isinstance(z, str) and is_utm_zone(z)
                                                 for z in zones):  # fmt: skip
            raise EdgeVPRError("the map's UTM zones are malformed")
        if ((codes < -1) | (codes >= len(zones))).any():
            raise EdgeVPRError("a record names a UTM zone the map does not list")
        if ((place_sources < NO_SOURCE) | (place_sources >= sources)).any():
            raise EdgeVPRError("a record names a source that is absent")
        table = cls()
        table._rows = table._live = count
        table._ids = np.array(ids, np.int64)
        table._alive = np.ones(count, bool)
        table._sources = np.array(place_sources, np.int32)
        table._zone_codes = np.array(codes, np.int16)
        table._zones = list(zones)
        table._floats = {n: np.array(floats[:, i], np.float64) for i, n in enumerate(FLOAT_FIELDS)}
        for name in TEXT_FIELDS:
            parts = {p: arrays.get(f"{name}.{p}") for p in ("offsets", "blob", "present")}
            if any(part is None for part in parts.values()):
                parts = {"offsets": np.zeros(count + 1, np.int64), "blob": np.zeros(0, np.uint8),
                         "present": np.zeros(count, bool)}  # fmt: skip
            table._text[name] = TextColumn.decoded(parts, count, name)  # type: ignore[arg-type]
        table._order, table._route_m = _drive_numbers(arrays, count)
        return table


def _drive_numbers(arrays: dict[str, np.ndarray], count: int) -> tuple[np.ndarray, np.ndarray]:
    """The order and route-metre columns (unknown throughout in maps made before drives)."""
    order = arrays.get("order")
    metres = arrays.get("route_m")
    order = np.full(count, NO_ORDER, np.int64) if order is None else np.array(order, np.int64)
    metres = np.full(count, np.nan) if metres is None else np.array(metres, np.float64)
    if order.shape != (count,) or metres.shape != (count,):
        raise EdgeVPRError("the records' drive columns disagree in length")
    if (order < NO_ORDER).any() or np.isinf(metres).any() or (metres < 0).any():
        raise EdgeVPRError("a record has a negative order or route metres")
    return order, metres


def check_float_columns(floats: np.ndarray) -> None:
    """The numeric record fields of many places at once, as :class:`PlaceRecord` checks one."""
    east, north, lat, lon, heading = (floats[:, i] for i in range(len(FLOAT_FIELDS)))
    with np.errstate(invalid="ignore"):
        if (np.isinf(floats)).any():
            raise EdgeVPRError("a place has an infinite coordinate")
        if (np.isnan(east) != np.isnan(north)).any() or (np.isnan(lat) != np.isnan(lon)).any():
            raise EdgeVPRError("a place has half a coordinate pair")
        if (np.abs(lat) > 90).any() or (np.abs(lon) > 180).any():
            raise EdgeVPRError("a place has latitude/longitude out of range")
        if ((heading < 0) | (heading >= 360)).any():
            raise EdgeVPRError("a place has a heading outside [0, 360) degrees")


def _timestamp(text: str) -> float | int | str:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise EdgeVPRError(f"a place's timestamp is malformed ({text[:40]!r})") from None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise EdgeVPRError(f"a place's timestamp is malformed ({text[:40]!r})")
    return value


def _grown(array: np.ndarray, size: int) -> np.ndarray:
    out = np.empty(size, array.dtype)
    out[: len(array)] = array
    return out
