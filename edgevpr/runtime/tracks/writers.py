"""Tracks out: a localisation run's fixes in the formats robotics and mapping tools read.

``TRACK_FORMATS`` is the one table of them, read by ``localize --out`` (by suffix, or
``--format``) and its help. Formats that describe a run (JSON lines, CSV, a ROS 2 bag)
hold every frame with its state and confidence; formats that describe a path (TUM, GPX,
GeoJSON, KML) hold the accepted fixes only, the positions a robot would act on. Every
format is written atomically: a failed run leaves the path as it was.

Positions go out in the frame each format defines: TUM in metres (UTM east/north, the map's
local frame, or metres along the route), GPX/GeoJSON/KML in WGS84 latitude/longitude
(east/north converted through the map's UTM zone), the bag as
``geometry_msgs/PoseWithCovarianceStamped`` in the map's metres (frame ``utm`` where the
map is in UTM, else ``map``) or ``sensor_msgs/NavSatFix`` for latitude/longitude maps.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO
from xml.sax.saxutils import escape

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.extras import install_hint
from edgevpr.core.files import atomic_open
from edgevpr.core.geo import latlon_to_utm, utm_to_latlon, utm_zone_for
from edgevpr.runtime.localize.fix import EAST_NORTH, LAT_LON, ROUTE_M, Fix
from edgevpr.runtime.localize.rosmsg import navsat_fields, pose_fields
from edgevpr.runtime.tracks.bags import MCAP, ROS1, SQLITE3, BagOut, bag_written

# Times from 1980 on (the GPS epoch) are dates; earlier ones are a clock that started with
# the stream (a video's position in seconds), which date-stamped formats leave out.
FIRST_DATE_S = 315_964_800.0
STDOUT = "-"  # --out -: JSON lines on standard output, as they come
POSE_TOPIC, FIX_TOPIC = "/edgevpr/pose", "/edgevpr/fix"
CONFIDENCE_TOPIC, STATE_TOPIC = "/edgevpr/confidence", "/edgevpr/state"


@dataclass(frozen=True)
class TrackFrame:
    """What the fixes' positions are: ``kind`` (east/north, lat/lon or route metres, None
    for a map without positions) and, for east/north, whether a UTM zone goes with them."""

    kind: str | None
    utm: bool = False


class TrackWriter(ABC):
    """Fixes to one track, in order."""

    every_frame = True  # False: only accepted fixes with a position are written
    # the position kinds the format can hold (None: a map whose places have none)
    needs: tuple[str | None, ...] = (None, EAST_NORTH, LAT_LON, ROUTE_M)
    needs_utm = False  # east/north only with a UTM zone (converted to latitude/longitude)

    def __init__(self, frame: TrackFrame) -> None:
        self.frame = frame

    def add(self, fix: Fix) -> None:
        if self.every_frame or (fix.accepted and fix.position is not None):
            self.write(fix)

    @abstractmethod
    def write(self, fix: Fix) -> None: ...

    def finish(self) -> None:
        """Called once after the last fix (formats with a closing part write it here)."""
        return


class FileTrackWriter(TrackWriter, ABC):
    """A track written to one open (temporary, atomically renamed) file."""

    def __init__(self, fh: BinaryIO, frame: TrackFrame) -> None:
        super().__init__(frame)
        self.fh = fh


class JsonLinesWriter(FileTrackWriter):
    """One JSON object a frame (Fix.to_dict): everything the localizer said."""

    def write(self, fix: Fix) -> None:
        self.fh.write((json.dumps(fix.to_dict()) + "\n").encode())


class LiveJsonLinesWriter(JsonLinesWriter):
    """JSON lines to standard output, each flushed as it is written (``--out -``)."""

    def write(self, fix: Fix) -> None:
        super().write(fix)
        self.fh.flush()


CSV_COLUMNS = ("frame", "name", "timestamp", "state", "accepted", "confidence", "margin",
               "east", "north", "utm_zone", "lat", "lon", "route_m", "uncertainty_m",
               "heading", "place_id", "reason")  # fmt: skip


class CsvWriter(FileTrackWriter):
    """One row a frame (CSV_COLUMNS); latitude/longitude filled in from UTM and back."""

    def __init__(self, fh: BinaryIO, frame: TrackFrame) -> None:
        super().__init__(fh, frame)
        self._row(CSV_COLUMNS)

    def _row(self, values: tuple[Any, ...] | list[Any]) -> None:
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerow(values)
        self.fh.write(text.getvalue().encode())

    def write(self, fix: Fix) -> None:
        fields: dict[str, Any] = {name: getattr(fix, name, None) for name in CSV_COLUMNS}
        fields.update(_position_columns(fix))
        fields["confidence"] = round(fix.confidence, 4)
        fields["margin"] = round(fix.margin, 4) if math.isfinite(fix.margin) else None
        self._row(["" if fields.get(c) is None else fields[c] for c in CSV_COLUMNS])


class TumWriter(FileTrackWriter):
    """``timestamp tx ty tz qx qy qz qw`` a line (the TUM RGB-D format that evo reads):
    metres, yaw from the heading; the frame index stands in for a missing timestamp."""

    every_frame = False
    needs = (EAST_NORTH, LAT_LON, ROUTE_M)

    def __init__(self, fh: BinaryIO, frame: TrackFrame) -> None:
        super().__init__(fh, frame)
        self._zone: str | None = None  # latitude/longitude maps: the first fix's UTM zone
        fh.write(b"# timestamp tx ty tz qx qy qz qw\n")

    def write(self, fix: Fix) -> None:
        assert fix.position is not None
        x, y = self._metres(fix)
        qz, qw = (0.0, 1.0) if fix.heading is None else _yaw_quaternion(fix.heading)
        stamp = fix.timestamp if fix.timestamp is not None else float(fix.frame)
        self.fh.write(f"{stamp:.9f} {x:.4f} {y:.4f} 0 0 0 {qz:.9f} {qw:.9f}\n".encode())

    def _metres(self, fix: Fix) -> tuple[float, float]:
        position = fix.position
        assert position is not None
        if position.kind == LAT_LON:
            if self._zone is None:
                self._zone = utm_zone_for(position.lat, position.lon)
            return latlon_to_utm(position.lat, position.lon, self._zone)
        return position.first, position.second


class _LatLonWriter(FileTrackWriter):
    """Formats in WGS84: accepted fixes, east/north through the map's UTM zone."""

    every_frame = False
    needs = (EAST_NORTH, LAT_LON)
    needs_utm = True

    def __init__(self, fh: BinaryIO, frame: TrackFrame) -> None:
        super().__init__(fh, frame)
        self.points: list[tuple[Fix, float, float]] = []

    def write(self, fix: Fix) -> None:
        self.points.append((fix, *_lat_lon(fix)))


class GpxWriter(_LatLonWriter):
    """GPX 1.1: one track segment of the accepted fixes (times where they are dates)."""

    def finish(self) -> None:
        try:
            import gpxpy.gpx
        except ImportError:
            raise EdgeVPRError(f"writing GPX needs gpxpy: {install_hint('gpxpy')}") from None
        document = gpxpy.gpx.GPX()
        document.creator = "edgevpr"
        track = gpxpy.gpx.GPXTrack(name="edgevpr localize")
        segment = gpxpy.gpx.GPXTrackSegment()
        for fix, lat, lon in self.points:
            segment.points.append(gpxpy.gpx.GPXTrackPoint(
                lat, lon, time=_date(fix.timestamp), name=str(fix.frame),
                comment=f"confidence {fix.confidence:.4f}"))  # fmt: skip
        track.segments.append(segment)
        document.tracks.append(track)
        self.fh.write(document.to_xml(version="1.1").encode())


class GeoJsonWriter(_LatLonWriter):
    """RFC 7946 GeoJSON: the path as a LineString and each fix as a Point with its frame,
    time, confidence, uncertainty and heading."""

    def finish(self) -> None:
        line = [[round(lon, 8), round(lat, 8)] for _, lat, lon in self.points]
        features: list[dict[str, Any]] = [{
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": line},
            "properties": {"name": "edgevpr localize", "fixes": len(line)},
        }]  # fmt: skip
        for (fix, _, _), coordinates in zip(self.points, line, strict=True):
            features.append({
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": coordinates},
                "properties": {"frame": fix.frame, "name": fix.name, "time": fix.timestamp,
                               "confidence": round(fix.confidence, 4),
                               "uncertainty_m": fix.uncertainty_m, "heading": fix.heading,
                               "place_id": fix.place_id},
            })  # fmt: skip
        self.fh.write(json.dumps({"type": "FeatureCollection", "features": features}).encode())


class KmlWriter(_LatLonWriter):
    """KML 2.2 (Google Earth): the path as a LineString and each fix as a placemark."""

    def finish(self) -> None:
        path = " ".join(f"{lon:.8f},{lat:.8f},0" for _, lat, lon in self.points)
        marks = [self._placemark(fix, lat, lon) for fix, lat, lon in self.points]
        self.fh.write(
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<kml xmlns="http://www.opengis.net/kml/2.2"><Document>'
            "<name>edgevpr localize</name>"
            f"<Placemark><name>track</name><LineString><tessellate>1</tessellate>"
            f"<coordinates>{path}</coordinates></LineString></Placemark>"
            f"<Folder><name>fixes</name>{''.join(marks)}</Folder>"
            "</Document></kml>\n".encode()
        )

    @staticmethod
    def _placemark(fix: Fix, lat: float, lon: float) -> str:
        date = _date(fix.timestamp)
        when = "" if date is None else f"<TimeStamp><when>{date.isoformat()}</when></TimeStamp>"
        about = escape(f"{fix.name or ''} confidence {fix.confidence:.4f}")
        return (f"<Placemark><name>{fix.frame}</name><description>{about}</description>"
                f"{when}<Point><coordinates>{lon:.8f},{lat:.8f},0</coordinates></Point>"
                "</Placemark>")  # fmt: skip


class RosBagWriter(TrackWriter):
    """A ROS 2 bag (CDR) or a ROS 1 bag: the pose (``PoseWithCovarianceStamped``, accepted
    fixes) or the NavSatFix (every frame, status NO_FIX where not accepted), the confidence
    (``std_msgs/Float32``) and the state (``std_msgs/String``), every frame, stamped with
    the frame's time (the frame index in seconds where it has none)."""

    needs = (EAST_NORTH, LAT_LON)

    def __init__(self, bag: BagOut, frame: TrackFrame) -> None:
        super().__init__(frame)
        # a bag, not a file: the bag's storage writes its own files
        self.bag, self.types = bag, bag.types
        if frame.kind == LAT_LON:
            self.position = bag.topic(FIX_TOPIC, "sensor_msgs/msg/NavSatFix")
        else:
            self.position = bag.topic(POSE_TOPIC, "geometry_msgs/msg/PoseWithCovarianceStamped")
        self.confidence = bag.topic(CONFIDENCE_TOPIC, "std_msgs/msg/Float32")
        self.state = bag.topic(STATE_TOPIC, "std_msgs/msg/String")
        self.frame_id = "utm" if frame.utm else "map"

    def write(self, fix: Fix) -> None:
        seconds = fix.timestamp if fix.timestamp is not None else float(fix.frame)
        stamp_ns = max(int(round(seconds * 1e9)), 0)
        t, header = self.types, self.bag.header(stamp_ns, self.frame_id)
        if self.frame.kind == LAT_LON and fix.position is not None:
            self.bag.write(self.position, stamp_ns, self._navsat(header, fix))
        elif fix.accepted and fix.position is not None:
            self.bag.write(self.position, stamp_ns, self._pose(header, fix))
        self.bag.write(self.confidence, stamp_ns, t["std_msgs/msg/Float32"](data=fix.confidence))
        self.bag.write(self.state, stamp_ns, t["std_msgs/msg/String"](
            data=f"{fix.state}{' accepted' if fix.accepted else ''}"))  # fmt: skip

    def _pose(self, header: Any, fix: Fix) -> Any:
        import numpy as np

        t, fields = self.types, pose_fields(fix)
        x, y, z = fields["position"]
        qx, qy, qz, qw = fields["orientation"]
        pose = t["geometry_msgs/msg/Pose"](
            position=t["geometry_msgs/msg/Point"](x=x, y=y, z=z),
            orientation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))  # fmt: skip
        return t["geometry_msgs/msg/PoseWithCovarianceStamped"](
            header=header, pose=t["geometry_msgs/msg/PoseWithCovariance"](
                pose=pose, covariance=np.asarray(fields["covariance"], np.float64)))  # fmt: skip

    def _navsat(self, header: Any, fix: Fix) -> Any:
        import numpy as np

        t, fields = self.types, navsat_fields(fix)
        return t["sensor_msgs/msg/NavSatFix"](
            header=header,
            status=t["sensor_msgs/msg/NavSatStatus"](status=fields["status"], service=1),
            latitude=fields["latitude"], longitude=fields["longitude"],
            altitude=fields["altitude"],
            position_covariance=np.asarray(fields["position_covariance"], np.float64),
            position_covariance_type=fields["position_covariance_type"])  # fmt: skip


@dataclass(frozen=True)
class TrackFormat:
    """One way a track goes out: its name (``--format``), the suffixes that choose it, and
    its writer; ``storage``: for a bag, its storage (bags.MCAP, SQLITE3 or ROS1)."""

    name: str
    suffixes: tuple[str, ...]
    writer: type[FileTrackWriter] | type[RosBagWriter]
    about: str
    storage: str | None = None


TRACK_FORMATS: dict[str, TrackFormat] = {f.name: f for f in (
    TrackFormat("jsonl", (".jsonl", ".ndjson"), JsonLinesWriter, "every frame, as JSON lines"),
    TrackFormat("csv", (".csv",), CsvWriter, "every frame, one row each"),
    TrackFormat("tum", (".tum",), TumWriter, "accepted fixes, TUM trajectory (evo)"),
    TrackFormat("gpx", (".gpx",), GpxWriter, "accepted fixes, GPX 1.1"),
    TrackFormat("geojson", (".geojson",), GeoJsonWriter, "accepted fixes, GeoJSON"),
    TrackFormat("kml", (".kml",), KmlWriter, "accepted fixes, KML"),
    TrackFormat("mcap", (".mcap",), RosBagWriter, "every frame, a ROS 2 bag in one MCAP file",
                storage=MCAP),
    TrackFormat("rosbag2", (), RosBagWriter, "every frame, a ROS 2 bag folder (sqlite3)",
                storage=SQLITE3),
    TrackFormat("rosbag1", (".bag",), RosBagWriter, "every frame, a ROS 1 bag (Noetic types)",
                storage=ROS1),
)}  # fmt: skip


def track_format(path: Path, name: str | None = None) -> TrackFormat:
    """The format named, else the one the path's suffix chooses (JSON lines for ``-``)."""
    if name is not None:
        if name not in TRACK_FORMATS:
            raise EdgeVPRError(f"track format must be one of {', '.join(TRACK_FORMATS)}, "
                               f"not {name!r}")  # fmt: skip
        return TRACK_FORMATS[name]
    if str(path) == STDOUT:
        return TRACK_FORMATS["jsonl"]
    suffix = path.suffix.lower()
    for found in TRACK_FORMATS.values():
        if suffix in found.suffixes:
            return found
    known = ", ".join(s for f in TRACK_FORMATS.values() for s in f.suffixes)
    raise EdgeVPRError(f"{path}: the track format is not known from its suffix ({known}); "
                       "give --format")  # fmt: skip


def check_writable(fmt: TrackFormat, frame: TrackFrame, path: Path) -> None:
    """Refuse, before any frame is read, a format that cannot hold these positions."""
    writer = fmt.writer
    if frame.kind is None and None not in writer.needs:
        raise EdgeVPRError(f"{fmt.name} holds positions and the map's places have none: write "
                           "jsonl or csv")  # fmt: skip
    if frame.kind not in writer.needs:
        raise EdgeVPRError(f"{fmt.name} cannot hold {frame.kind} positions: write jsonl, csv "
                           "or tum")  # fmt: skip
    if writer.needs_utm and frame.kind == EAST_NORTH and not frame.utm:
        raise EdgeVPRError(f"{fmt.name} holds latitude/longitude and the map's east/north has "
                           "no UTM zone to convert from: write jsonl, csv or tum")  # fmt: skip
    if fmt.storage == SQLITE3 and path.exists() and not (path / "metadata.yaml").is_file():
        raise EdgeVPRError(f"{path} exists and is not a ROS 2 bag: it is left as it is")


@contextlib.contextmanager
def track_writer(path: Path, fmt: TrackFormat, frame: TrackFrame) -> Iterator[TrackWriter]:
    """``with track_writer(path, fmt, frame) as w: w.add(fix)``: the track appears at
    ``path`` only when the block ends without an exception; ``-``: JSON lines to standard
    output as they come."""
    if str(path) == STDOUT:
        if fmt.name != "jsonl":
            raise EdgeVPRError(f"--out - streams JSON lines; {fmt.name} goes to a file")
        yield LiveJsonLinesWriter(sys.stdout.buffer, frame)
        return
    check_writable(fmt, frame, path)
    if fmt.storage is not None:
        with bag_written(path, fmt.storage) as bag:
            yield RosBagWriter(bag, frame)
        return
    assert issubclass(fmt.writer, FileTrackWriter)
    with atomic_open(path) as fh:
        writer = fmt.writer(fh, frame)
        yield writer
        writer.finish()


def _position_columns(fix: Fix) -> dict[str, Any]:
    position = fix.position
    if position is None:
        return {}
    if position.kind == ROUTE_M:
        return {"route_m": position.route_m}
    if position.kind == LAT_LON:
        return {"lat": position.lat, "lon": position.lon}
    columns = {"east": position.east, "north": position.north, "utm_zone": position.utm_zone}
    if position.utm_zone:
        columns["lat"], columns["lon"] = utm_to_latlon(position.east, position.north,
                                                       position.utm_zone)  # fmt: skip
    return columns


def _lat_lon(fix: Fix) -> tuple[float, float]:
    position = fix.position
    assert position is not None
    if position.kind == LAT_LON:
        return position.lat, position.lon
    if not position.utm_zone:
        raise EdgeVPRError(f"frame {fix.frame}: its east/north has no UTM zone")
    return utm_to_latlon(position.east, position.north, position.utm_zone)


def _yaw_quaternion(heading: float) -> tuple[float, float]:
    """(qz, qw) of an ENU yaw from a compass heading (clockwise from north)."""
    yaw = math.radians(90.0 - heading)
    return math.sin(yaw / 2), math.cos(yaw / 2)


def _date(seconds: float | None) -> datetime | None:
    if seconds is None or seconds < FIRST_DATE_S:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc)
