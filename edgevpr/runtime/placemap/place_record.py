"""One place as users give and get it: a :class:`PlaceRecord`, checked on construction,
and the records made from image paths (evaluation-layout names carry coordinates) or from
what a caller passes."""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgevpr.core.checks import file_path, real, shown, whole
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.geo import check_latlon, is_utm_zone
from edgevpr.core.layout_names import parse_layout_name

FLOAT_FIELDS = ("east", "north", "lat", "lon", "heading")
MAX_DRIVE_NAME = 200


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
    drive: str | None = None  # the recorded drive it was taught from
    order: int | None = None  # its frame's place in that drive
    route_m: float | None = None  # metres travelled along that drive

    def __post_init__(self) -> None:
        if self.path is not None:
            object.__setattr__(self, "path", str(file_path(self.path, "place path")))
        if self.id is not None:
            object.__setattr__(self, "id", whole(self.id, "place id", 0))
        label = self.path or self.id
        self._check_drive(label)
        for name in FLOAT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, real(value, f"place {label}: {name}"))
        self._check_fields(label)

    def _check_drive(self, label: object) -> None:
        """The drive, the order in it and the metres travelled along it."""
        if self.drive is not None and (
            not isinstance(self.drive, str) or not 0 < len(self.drive) <= MAX_DRIVE_NAME
        ):
            raise EdgeVPRError(f"place {label}: a drive is named by 1 to {MAX_DRIVE_NAME} "
                               f"characters, not {shown(self.drive)}")  # fmt: skip
        if self.order is not None:
            object.__setattr__(self, "order", whole(self.order, f"place {label}: order", 0))
        if self.route_m is not None:
            metres = real(self.route_m, f"place {label}: route_m")
            if metres < 0:
                raise EdgeVPRError(f"place {label}: route_m must be >= 0, not {metres}")
            object.__setattr__(self, "route_m", metres)

    def _check_fields(self, label: object) -> None:
        """The zone, timestamp, coordinate pairs and heading of the record called ``label``."""
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
