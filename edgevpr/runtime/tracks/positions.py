"""Where each frame of a recorded drive was taken: one family of readers behind one question
(``Positions.of(frame)``), used to teach maps (``index build``/``index add``) and as the
ground truth of a localisation run (``localize --truth``).

- a track file beside a video or a folder (GPX, CSV, TUM, DJI SRT; ``files``), a bag's
  position topic (NavSatFix, Odometry, poses, /tf; ``bags``): the frame's time, shifted by
  ``--time-offset``, looked up in the track (``track``);
- geotagged photos: each photo's own EXIF GPS or DJI XMP (``photos``);
- evaluation-layout names (``@east@north@...``): as the folder builds always did;
- none of these: distance travelled, frame index x ``--spacing`` metres (a route map).

Latitude/longitude become UTM east/north in the drive's first zone.
"""

from __future__ import annotations

import math
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.geo import latlon_to_utm, utm_zone_for
from edgevpr.runtime.localize.layout import timestamp_value
from edgevpr.runtime.localize.stream import StreamFrame
from edgevpr.runtime.placemap.place_record import record_for
from edgevpr.runtime.tracks.bags import read_bag_track
from edgevpr.runtime.tracks.files import read_track_file
from edgevpr.runtime.tracks.photos import PhotoPosition
from edgevpr.runtime.tracks.track import (
    DEFAULT_MAX_GAP_S,
    EAST_NORTH,
    LAT_LON,
    ROUTE_M,
    Track,
)

MP4_EPOCH = datetime(1904, 1, 1, tzinfo=timezone.utc).timestamp()


@dataclass(frozen=True)
class FramePosition:
    """One frame's position: ``kind`` EAST_NORTH (``zone`` None: a local frame) or ROUTE_M
    (``first`` = metres travelled), with what else the source knew."""

    kind: str
    first: float
    second: float
    zone: str | None = None
    heading: float | None = None
    altitude: float | None = None
    variance: float | None = None

    def record_fields(self) -> dict[str, Any]:
        """The fields of a PlaceRecord at this position."""
        if self.kind == ROUTE_M:
            return {"route_m": self.first}
        heading = None if self.heading is None or math.isnan(self.heading) else self.heading
        return {"east": self.first, "north": self.second, "utm_zone": self.zone,
                "heading": heading}  # fmt: skip


@dataclass(frozen=True)
class PositionOptions:
    """Where positions come from (see the module's docstring)."""

    track: Path | None = None  # a track file
    position_topic: str | None = None  # a bag's position topic
    frames: str | None = None  # /tf: "parent:child"
    max_gap: float = DEFAULT_MAX_GAP_S  # seconds from a track sample a frame may be
    time_offset: float = 0.0  # seconds added to the track's times
    start_time: float | None = None  # the source's first frame, seconds since 1970
    spacing: float | None = None  # metres between frames where nothing gives a position


class Positions(ABC):
    """Positions of a drive's frames, and why a frame got none: all of one ``kind``, in one
    ``zone`` (None: a local frame); ``base`` puts the frames' own times on the positions'
    clock (absolute where the positions are)."""

    description: str
    kind: str = EAST_NORTH
    zone: str | None = None
    base: float = 0.0
    # Whether a frame without a position is bad input (a photo without GPS: refused, or
    # listed and skipped with --skip-unreadable) rather than one the drive passes by.
    required: bool = False

    @abstractmethod
    def of(self, frame: StreamFrame, index: int) -> FramePosition | None: ...

    @abstractmethod
    def reason(self) -> str:
        """Why a frame without a position got none."""

    def coverage(self) -> str:
        """What the positions cover against the frames seen (for a drive none was placed)."""
        return ""

    def unplaced(self) -> list[str]:
        """Frames known before any is embedded to have no position (photos without GPS)."""
        return []


class TrackPositions(Positions):
    """The track at each frame's time (``base`` added to relative frame times)."""

    def __init__(self, track: Track, options: PositionOptions, base: float) -> None:
        self.track = track.in_utm() if track.kind == LAT_LON else track
        self.kind, self.zone = self.track.kind, self.track.zone
        self.max_gap, self.base = options.max_gap, base
        self.description = f"{self.track.source}, {len(self.track)} positions"
        self._seen: list[float] = []  # the first and last frame time, on the track's clock

    def of(self, frame: StreamFrame, index: int) -> FramePosition | None:
        if frame.timestamp is None:
            raise EdgeVPRError(f"frame {frame.name} has no time: it cannot be placed on the track")
        moment = frame.timestamp + self.base
        self._seen = [moment] if not self._seen else [self._seen[0], moment]
        sample = self.track.at(np.array([moment]), self.max_gap)
        if not sample.valid[0]:
            return None
        first, second = (float(v) for v in sample.values[0])
        return FramePosition(self.track.kind, first, second, zone=sample.zone,
                        heading=_finite(sample.heading[0]), altitude=_finite(sample.altitude[0]),
                        variance=_finite(sample.variance[0]))  # fmt: skip

    def reason(self) -> str:
        return f"more than {self.max_gap:g} s from the track"

    def coverage(self) -> str:
        if not self._seen:
            return ""
        first, last = self.track.span
        shown = _moment if self.track.absolute else (lambda t: f"{t:.3f} s")
        return (f"; the track runs {shown(first)} to {shown(last)}, the frames "
                f"{shown(self._seen[0])} to {shown(self._seen[-1])} (give --time-offset, "
                "or --start-time for a video)")  # fmt: skip


class PhotoPositions(Positions):
    """Each photo's EXIF GPS or DJI XMP (read once for the whole folder), in the first
    placed photo's UTM zone."""

    description = "the photos' EXIF GPS / DJI XMP"
    required = True

    def __init__(self, found: dict[str, PhotoPosition | None]) -> None:
        first = next((p for p in found.values() if p is not None), None)
        if first is None:
            raise EdgeVPRError("no photo has a GPS position in its EXIF or XMP")
        self.found, self.zone = found, utm_zone_for(first.lat, first.lon)

    def of(self, frame: StreamFrame, index: int) -> FramePosition | None:
        found = self.found.get(str(frame.image))
        if found is None:
            return None
        east, north = latlon_to_utm(found.lat, found.lon, self.zone)
        return FramePosition(EAST_NORTH, east, north, self.zone, found.heading, found.altitude)

    def reason(self) -> str:
        return "no GPS position in its EXIF or XMP"

    def unplaced(self) -> list[str]:
        return [name for name, found in self.found.items() if found is None]


class NamePositions(Positions):
    """Coordinates in evaluation-layout file names (``@east@north@...``)."""

    description = "the frames' file names"

    def __init__(self, first: FramePosition) -> None:
        self.zone = first.zone

    def of(self, frame: StreamFrame, index: int) -> FramePosition | None:
        found = name_position(frame)
        if found is None or found.zone != self.zone:
            return None
        return found

    def reason(self) -> str:
        return "no coordinates in its name"


class RoutePositions(Positions):
    """No positions: the distance travelled, frame index x spacing."""

    kind = ROUTE_M

    def __init__(self, spacing: float) -> None:
        self.spacing = spacing
        self.description = f"route metres, {spacing:g} m a frame"

    def of(self, frame: StreamFrame, index: int) -> FramePosition | None:
        return FramePosition(ROUTE_M, index * self.spacing, 0.0)

    def reason(self) -> str:
        return "no position"


def open_positions(source: Path, frames_kind: str, first_frames: list[StreamFrame],
                   options: PositionOptions) -> Positions:  # fmt: skip
    """The positions of a drive read from ``source`` (a "folder", "video" or "bag"), given
    its first frames (for their names)."""
    if options.track is not None:
        track = read_track_file(options.track).shifted(options.time_offset)
        return TrackPositions(track, options, _base(source, frames_kind, track, options))
    if frames_kind == "bag" and (options.position_topic or options.spacing is None):
        track = read_bag_track(source, options.position_topic, options.frames)
        return TrackPositions(track.shifted(options.time_offset), options, 0.0)
    if options.position_topic is not None:
        raise EdgeVPRError("--position-topic applies to bags only")
    named = next((p for f in first_frames if (p := name_position(f)) is not None), None)
    if frames_kind == "folder" and named is not None:
        return NamePositions(named)
    if options.spacing is not None:
        return RoutePositions(options.spacing)
    raise EdgeVPRError(f"{source} gives no positions: add --track FILE (GPX, CSV, TUM, SRT), "
                       "--position-topic (bags) or --spacing METRES (a route map)")  # fmt: skip


def name_position(frame: StreamFrame) -> FramePosition | None:
    """The position an evaluation-layout name carries (lat/lon in its UTM zone)."""
    record = record_for(str(frame.name or frame.image))
    if record.east is not None and record.north is not None:
        return FramePosition(EAST_NORTH, record.east, record.north, record.utm_zone, record.heading)
    if record.lat is not None and record.lon is not None:
        zone = utm_zone_for(record.lat, record.lon)
        east, north = latlon_to_utm(record.lat, record.lon, zone)
        return FramePosition(EAST_NORTH, east, north, zone, record.heading)
    return None


def _base(source: Path, frames_kind: str, track: Track, options: PositionOptions) -> float:
    """Seconds to add to the frames' own times to put them on the track's clock: a video's
    clock starts at 0, an absolute track (GPX) needs its start (``--start-time`` or the
    video's creation time)."""
    if options.start_time is not None:
        return options.start_time
    if frames_kind != "video" or not track.absolute:
        return 0.0
    created = mp4_creation_time(source)
    if created is None:
        raise EdgeVPRError(
            f"{track.source} has absolute times and {source} says not when it started: give "
            "--start-time (ISO 8601 or seconds since 1970)"
        )
    return created


def mp4_creation_time(path: Path) -> float | None:
    """An MP4/MOV's creation time from its ``moov/mvhd`` box (seconds since 1970), or None
    (not an MP4, or the field left at zero)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(64 << 20)
    except OSError:
        return None
    moov = _box(data, b"moov")
    mvhd = _box(moov, b"mvhd") if moov is not None else None
    if mvhd is None or len(mvhd) < 12:
        return None
    seconds = struct.unpack(">Q", mvhd[4:12])[0] if mvhd[0] == 1 else struct.unpack(
        ">I", mvhd[4:8])[0]  # fmt: skip
    return MP4_EPOCH + seconds if seconds else None


def _box(data: bytes, name: bytes) -> bytes | None:
    """The body of the first box ``name`` at the top level of ``data``."""
    position = 0
    while position + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[position : position + 8])
        header = 8
        if size == 1 and position + 16 <= len(data):
            size, header = struct.unpack(">Q", data[position + 8 : position + 16])[0], 16
        if size < header:
            return None
        if kind == name:
            return data[position + header : position + size]
        position += size
    return None


def parse_start_time(text: str | None) -> float | None:
    """``--start-time``: ISO 8601 (UTC unless it says otherwise) or seconds since 1970."""
    if text is None:
        return None
    value = timestamp_value(text)
    if value is None:
        raise EdgeVPRError(f"--start-time {text!r} is neither ISO 8601 nor seconds since 1970")
    if not any(c in text for c in "+Z") and "T" in text and value == value:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            value = moment.replace(tzinfo=timezone.utc).timestamp()
    return value


def _moment(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")


def _finite(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)
