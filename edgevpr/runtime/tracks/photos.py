"""Where a geotagged photo was taken: EXIF GPS as phones write it (latitude, longitude,
altitude, ``GPSImgDirection`` as the heading, ``DateTimeOriginal`` + ``SubSecTimeOriginal``
for the order), read with ``exifread``; and DJI's XMP as drones write it (``drone-dji:``
GPS, flight and gimbal yaw, relative altitude), read from the XMP packet itself.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgevpr.core.errors import EdgeVPRError, first_line
from edgevpr.core.extras import install_hint

XMP_BYTES = 1 << 20  # DJI writes its XMP packet in the first kilobytes of a JPEG
DJI_FIELDS = {
    "lat": ("GpsLatitude",),
    "lon": ("GpsLongitude", "GpsLongtitude"),  # DJI firmware spells it both ways
    "alt": ("RelativeAltitude", "AbsoluteAltitude"),
    "heading": ("GimbalYawDegree", "FlightYawDegree"),
}
# exifread logs "file does not have exif data" for every plain image: a photo without EXIF
# is an answer here (None), not a warning the user should see
logging.getLogger("exifread").setLevel(logging.ERROR)


@dataclass(frozen=True)
class PhotoPosition:
    """Where and when one photo was taken (``time`` in seconds since 1970, UTC as the
    camera's clock says it; None where the photo has none)."""

    lat: float
    lon: float
    altitude: float | None
    heading: float | None
    time: float | None
    source: str  # "exif" or "dji-xmp"


def photo_position(path: Path) -> PhotoPosition | None:
    """The photo's position (DJI's XMP first, where present, then EXIF GPS), or None."""
    return _dji_xmp(path) or _exif_gps(path)


def _exif_gps(path: Path) -> PhotoPosition | None:
    try:
        import exifread
    except ImportError:
        raise EdgeVPRError(f"reading EXIF GPS needs exifread: {install_hint('exifread')}") from None
    try:
        with open(path, "rb") as fh:
            tags = exifread.process_file(fh, details=False, extract_thumbnail=False)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise EdgeVPRError(f"cannot read the EXIF of {path}: {first_line(exc)}") from None
    lat = _degrees(tags.get("GPS GPSLatitude"), tags.get("GPS GPSLatitudeRef"), "S")
    lon = _degrees(tags.get("GPS GPSLongitude"), tags.get("GPS GPSLongitudeRef"), "W")
    if lat is None or lon is None:
        return None
    altitude = _number(tags.get("GPS GPSAltitude"))
    if altitude is not None and _number(tags.get("GPS GPSAltitudeRef")) == 1:
        altitude = -altitude  # below sea level
    return PhotoPosition(lat, lon, altitude, _number(tags.get("GPS GPSImgDirection")),
                         _exif_time(tags), "exif")  # fmt: skip


def _ratio(value: Any) -> float:
    """An EXIF rational (exifread's ``Ratio``: ``num``/``den``) or a plain number."""
    numerator, denominator = getattr(value, "num", value), getattr(value, "den", 1)
    return float(numerator) / float(denominator) if float(denominator) else float("nan")


def _number(tag: object) -> float | None:
    values = getattr(tag, "values", None)
    if not values:
        return None
    value = _ratio(values[0])
    return value if value == value else None


def _degrees(tag: object, ref: object, negative: str) -> float | None:
    """Degrees, minutes, seconds (rationals) to signed degrees."""
    values = getattr(tag, "values", None)
    if not values or len(values) != 3:
        return None
    d, m, s = (_ratio(v) for v in values)
    degrees = d + m / 60 + s / 3600
    if degrees != degrees:
        return None
    return -degrees if str(ref).strip().upper().startswith(negative) else degrees


def _exif_time(tags: dict) -> float | None:
    text = str(tags.get("EXIF DateTimeOriginal") or tags.get("Image DateTime") or "").strip()
    try:
        moment = datetime.strptime(text, "%Y:%m:%d %H:%M:%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    subsec = str(tags.get("EXIF SubSecTimeOriginal") or "").strip()
    fraction = float(f"0.{subsec}") if subsec.isdigit() else 0.0
    return moment.timestamp() + fraction


def _dji_xmp(path: Path) -> PhotoPosition | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(XMP_BYTES)
    except OSError as exc:
        raise EdgeVPRError(f"cannot read {path}: {exc.strerror or exc}") from None
    start, end = head.find(b"<x:xmpmeta"), head.find(b"</x:xmpmeta>")
    if start < 0 or end < 0 or b"drone-dji:" not in head[start:end]:
        return None
    packet = head[start:end].decode("utf-8", "replace")
    found = {name: _xmp_value(packet, tags) for name, tags in DJI_FIELDS.items()}
    if found["lat"] is None or found["lon"] is None:
        return None
    exif = _exif_gps(path)
    return PhotoPosition(found["lat"], found["lon"], found["alt"],
                         None if found["heading"] is None else found["heading"] % 360.0,
                         exif.time if exif else None, "dji-xmp")  # fmt: skip


def _xmp_value(packet: str, names: tuple[str, ...]) -> float | None:
    """``drone-dji:Name="value"`` (attribute) or ``<drone-dji:Name>value<`` (element)."""
    for name in names:
        match = re.search(rf'drone-dji:{name}\s*=\s*"([^"]*)"', packet) or re.search(
            rf"<drone-dji:{name}>([^<]*)<", packet
        )
        if match:
            try:
                return float(match.group(1))
            except ValueError:
                return None
    return None
