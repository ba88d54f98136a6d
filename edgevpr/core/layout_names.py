"""Coordinates carried in evaluation-layout file names, read without torch.

The common VPR layout names each image ``@east@north@zone@band@lat@lon@pano@tile@heading@
pitch@roll@height@timestamp@note@.ext`` (fields split on ``@``; empty fields are unknown),
e.g. ``@0@10.00@@@@@0000001@@@@@@@@.jpg``. Names in any other form carry no coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgevpr.core.geo import is_utm_zone

FIELD_EAST, FIELD_NORTH, FIELD_ZONE, FIELD_BAND = 1, 2, 3, 4
FIELD_LAT, FIELD_LON, FIELD_PANO = 5, 6, 7
FIELD_HEADING, FIELD_TIMESTAMP = 9, 13


@dataclass(frozen=True)
class LayoutName:
    """What a layout file name says; None where a field is empty or malformed."""

    east: float | None = None
    north: float | None = None
    utm_zone: str | None = None
    lat: float | None = None
    lon: float | None = None
    heading: float | None = None
    timestamp: str | None = None
    stem: str | None = None


def _number(fields: list[str], index: int) -> float | None:
    if index >= len(fields) or not fields[index].strip():
        return None
    try:
        value = float(fields[index])
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _text(fields: list[str], index: int) -> str | None:
    return fields[index].strip() or None if index < len(fields) else None


def parse_layout_name(name: str) -> LayoutName | None:
    """Parse a file name (not a path) in the layout; None when it is not one."""
    if not name.startswith("@"):
        return None
    fields = name.split("@")
    east, north = _number(fields, FIELD_EAST), _number(fields, FIELD_NORTH)
    lat, lon = _number(fields, FIELD_LAT), _number(fields, FIELD_LON)
    if (east is None) != (north is None):
        east = north = None
    if (lat is None) != (lon is None) or (
        lat is not None and not (-90 <= lat <= 90 and -180 <= lon <= 180)  # type: ignore[operator]
    ):
        lat = lon = None
    zone = f"{_text(fields, FIELD_ZONE) or ''}{_text(fields, FIELD_BAND) or ''}"
    heading = _number(fields, FIELD_HEADING)
    return LayoutName(
        east=east,
        north=north,
        utm_zone=zone if zone and is_utm_zone(zone) else None,
        lat=lat,
        lon=lon,
        heading=None if heading is None else heading % 360.0,
        timestamp=_text(fields, FIELD_TIMESTAMP),
        stem=_text(fields, FIELD_PANO),
    )
