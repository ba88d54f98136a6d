"""Tracks from files beside a video or a folder of frames: GPX 1.0/1.1 (with ``gpxpy``), CSV,
TUM trajectories (``t x y z qx qy qz qw``, what ``evo`` reads) and DJI's ``.SRT`` flight
subtitles. Each reader gives a :class:`Track` or one clear line naming the file and the line.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgevpr.core.errors import EdgeVPRError, first_line
from edgevpr.core.extras import install_hint
from edgevpr.core.geo import is_utm_zone
from edgevpr.runtime.tracks.track import EAST_NORTH, LAT_LON, Track, heading_from_quaternion

MAX_TRACK_BYTES = 1 << 30  # a day of 100 Hz GNSS as text is far less


def _text(path: Path) -> str:
    if not path.is_file():
        raise EdgeVPRError(f"track {path} does not exist")
    if path.stat().st_size > MAX_TRACK_BYTES:
        raise EdgeVPRError(f"track {path} is over {MAX_TRACK_BYTES >> 30} GB")
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgeVPRError(f"cannot read track {path}: {first_line(exc)}") from None


def read_gpx(path: Path) -> Track:
    """Track points (else route points, else waypoints) with their times: absolute UTC."""
    try:
        import gpxpy
        import gpxpy.gpx
    except ImportError:
        raise EdgeVPRError(f"reading GPX needs gpxpy: {install_hint('gpxpy')}") from None
    try:
        parsed = gpxpy.parse(_text(path))
    except (gpxpy.gpx.GPXException, ValueError, TypeError) as exc:
        raise EdgeVPRError(f"GPX {path} is damaged: {first_line(exc)}") from None
    points: list[Any] = [p for t in parsed.tracks for s in t.segments for p in s.points]
    points = points or [p for r in parsed.routes for p in r.points] or list(parsed.waypoints)
    if not points:
        raise EdgeVPRError(f"GPX {path} holds no track, route or waypoint")
    if any(p.time is None for p in points):
        raise EdgeVPRError(f"GPX {path} has points without a time: it cannot be aligned")
    return Track(LAT_LON, [p.time.timestamp() for p in points],
                 [(p.latitude, p.longitude) for p in points], f"GPX {path}",
                 altitude=[np.nan if p.elevation is None else p.elevation for p in points],
                 heading=[np.nan if p.course is None else p.course for p in points],
                 absolute=True)  # fmt: skip


CSV_COLUMNS = {
    "time": ("time", "t", "timestamp", "stamp", "seconds"),
    "lat": ("lat", "latitude"),
    "lon": ("lon", "lng", "long", "longitude"),
    "east": ("east", "x", "easting"),
    "north": ("north", "y", "northing"),
    "alt": ("alt", "altitude", "ele", "elevation", "z"),
    "heading": ("heading", "yaw", "course", "bearing"),
    "zone": ("zone", "utm_zone"),
}


def read_csv(path: Path) -> Track:
    """A header row, then one position a row: time (seconds) and lat, lon [, alt, heading],
    or time and east, north (metres) with a ``zone`` column for UTM (without one: a local
    frame)."""
    rows = list(csv.reader(io.StringIO(_text(path))))
    rows = [r for r in rows if r and not r[0].lstrip().startswith("#")]
    if len(rows) < 2:
        raise EdgeVPRError(f"CSV track {path} needs a header row and at least one position")
    header = [h.strip().lower() for h in rows[0]]
    where = {name: next((header.index(a) for a in aliases if a in header), None)
             for name, aliases in CSV_COLUMNS.items()}  # fmt: skip
    planar = where["lat"] is None
    needed = ("time", "east", "north") if planar else ("time", "lat", "lon")
    missing = [n for n in needed if where[n] is None]
    if missing:
        raise EdgeVPRError(
            f"CSV track {path} has no {', '.join(missing)} column (its columns: "
            f"{', '.join(header)}; give time, lat, lon or time, east, north)"
        )
    table = _numbers(rows[1:], [where[n] for n in needed], path)
    extra: dict[str, Any] = {
        n: _numbers(rows[1:], [where[n]], path)[:, 0] if where[n] is not None else ()
        for n in ("alt", "heading")
    }
    zone = _one_zone(rows[1:], where["zone"], path) if planar else None
    return Track(EAST_NORTH if planar else LAT_LON, table[:, 0], table[:, 1:3],
                 f"CSV track {path}", altitude=extra["alt"], heading=extra["heading"],
                 zone=zone, absolute=bool(table[0, 0] > 1e9))  # fmt: skip


def _numbers(rows: list[list[str]], columns: list[int | None], path: Path) -> np.ndarray:
    out = np.empty((len(rows), len(columns)))
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            try:
                out[i, j] = float(row[column])  # type: ignore[index]
            except (IndexError, ValueError, TypeError):
                raise EdgeVPRError(f"CSV track {path}, row {i + 2}: not a number in column "
                                   f"{(column or 0) + 1}") from None  # fmt: skip
    return out


def _one_zone(rows: list[list[str]], column: int | None, path: Path) -> str | None:
    if column is None:
        return None
    zones = {row[column].strip().upper() for row in rows if len(row) > column}
    if len(zones) != 1 or not is_utm_zone(next(iter(zones))):
        raise EdgeVPRError(f"CSV track {path} must name one UTM zone, not {sorted(zones)[:3]}")
    return zones.pop()


def read_tum(path: Path) -> Track:
    """A TUM trajectory: ``timestamp x y z qx qy qz qw`` a line (``#`` comments), metres in
    the trajectory's own frame (east/north without a zone)."""
    rows = []
    for number, line in enumerate(_text(path).splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.replace(",", " ").split()
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise EdgeVPRError(f"TUM track {path}, line {number}: not numbers") from None
        if len(values) != 8:
            raise EdgeVPRError(f"TUM track {path}, line {number}: {len(values)} values, not 8 "
                               "(timestamp x y z qx qy qz qw)")  # fmt: skip
        rows.append(values)
    if not rows:
        raise EdgeVPRError(f"TUM track {path} holds no pose")
    table = np.array(rows)
    headings = [heading_from_quaternion(*q) for q in table[:, 4:8]]
    return Track(EAST_NORTH, table[:, 0], table[:, 1:3], f"TUM track {path}",
                 altitude=table[:, 3], heading=headings,
                 absolute=bool(table[0, 0] > 1e9))  # fmt: skip


SRT_TIME = re.compile(r"(\d+):(\d\d):(\d\d)[,.](\d{1,3})\s*-->")
SRT_BRACKETS = {name: re.compile(rf"\[?\b{name}\s*[:=]\s*(-?\d+(?:\.\d+)?)", re.I)
                for name in ("latitude", "longitude", "rel_alt", "abs_alt")}  # fmt: skip
NUMBER = r"(-?\d+(?:\.\d+)?)"
SRT_GPS = re.compile(rf"GPS\s*\(\s*{NUMBER}\s*,\s*{NUMBER}\s*(?:,\s*{NUMBER})?")


def read_srt(path: Path) -> Track:
    """DJI flight subtitles: one block per video frame (or second), its start time on the
    video's clock, the position as ``[latitude: ..] [longitude: ..] [rel_alt: ..]`` (newer
    drones) or ``GPS(lon, lat, alt)`` (older ones)."""
    times, values, heights = [], [], []
    for block in re.split(r"\n\s*\n", _text(path).replace("\r\n", "\n")):
        started = SRT_TIME.search(block)
        if started is None:
            continue
        h, m, s, ms = (int(g) for g in started.groups())
        position = _srt_position(block)
        if position is None:
            continue
        times.append(h * 3600 + m * 60 + s + int(str(ms).ljust(3, "0")) / 1000)
        values.append(position[:2])
        heights.append(position[2])
    if not times:
        raise EdgeVPRError(f"SRT {path} holds no timed position (not a DJI flight log?)")
    return Track(LAT_LON, times, values, f"SRT {path}", altitude=heights)


def _srt_position(block: str) -> tuple[float, float, float] | None:
    lat, lon = (SRT_BRACKETS[n].search(block) for n in ("latitude", "longitude"))
    if lat and lon:
        alt = SRT_BRACKETS["rel_alt"].search(block) or SRT_BRACKETS["abs_alt"].search(block)
        return float(lat.group(1)), float(lon.group(1)), float(alt.group(1)) if alt else np.nan
    gps = SRT_GPS.search(block)
    if gps:  # GPS(longitude, latitude, altitude)
        return float(gps.group(2)), float(gps.group(1)), float(gps.group(3) or np.nan)
    return None


TRACK_FILES: dict[str, Callable[[Path], Track]] = {
    ".gpx": read_gpx, ".csv": read_csv, ".tum": read_tum, ".txt": read_tum, ".srt": read_srt,
}  # fmt: skip


def read_track_file(path: str | Path) -> Track:
    """A track file, read by its suffix: .gpx, .csv, .tum/.txt (TUM) or .srt (DJI)."""
    path = Path(path)
    reader = TRACK_FILES.get(path.suffix.lower())
    if reader is None:
        raise EdgeVPRError(f"cannot read track {path}: give a {', '.join(TRACK_FILES)} file")
    return reader(path)
