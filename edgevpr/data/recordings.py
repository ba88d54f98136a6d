"""Frames written as a robot records them: a ROS 2 bag (``sensor_msgs/Image`` and
``sensor_msgs/NavSatFix``, with rosbags), a video with a GPX track of its positions, or
JPEG photos with EXIF GPS (with Pillow). The demo teaches maps from these, and the tests and
benchmarks check that each gives the map a folder of named images gives.

Positions are latitude/longitude (``core.geo.utm_to_latlon`` converts evaluation-layout
east/north).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.extras import install_hint
from edgevpr.core.geo import utm_to_latlon
from edgevpr.core.images import list_images
from edgevpr.core.layout_names import parse_layout_name
from edgevpr.runtime.localize.layout import name_key
from edgevpr.runtime.tracks.bags import MCAP, ROS1, SQLITE3, bag_written

IMAGE_TOPIC, FIX_TOPIC = "/camera/image_raw", "/gps/fix"
BAG_RECORDINGS = {"bag": SQLITE3, "mcap": MCAP, "rosbag1": ROS1}  # kind -> bag storage
RECORDINGS = (*BAG_RECORDINGS, "video", "photos")


def record_drive(folder: Path, out: Path, kind: str, zone: str, start: float,
                 period: float) -> list[Path]:  # fmt: skip
    """Record a folder of evaluation-layout images (east/north in ``zone``), in the natural
    order of their names, as a drive of ``kind`` (RECORDINGS): a ROS 2 bag (sqlite3 or
    MCAP) or a ROS 1 bag with NavSatFix, a video with a GPX track beside it (``out`` with
    .gpx), or geotagged photos; frame ``i`` taken at ``start + i * period``. Returns what
    it wrote."""
    if kind not in RECORDINGS:
        raise EdgeVPRError(f"a recording is one of {', '.join(RECORDINGS)}, not {kind!r}")
    if out.exists():
        raise EdgeVPRError(f"{out} exists: record into a new path")
    frames, latlon, times = drive_of(folder, zone, start, period)
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind in BAG_RECORDINGS:
        return [record_bag(out, frames, times, latlon, BAG_RECORDINGS[kind])]
    if kind == "video":
        track = out.with_suffix(".gpx")
        return [record_video(out, frames, 1.0 / period), write_gpx(track, times, latlon)]
    return record_photos(out, frames, times, latlon)


def drive_of(
    folder: Path, zone: str, start: float, period: float, shift: tuple[float, float] = (0, 0),
) -> tuple[list[np.ndarray], list[tuple[float, float]], list[float]]:  # fmt: skip
    """The placed images of an evaluation-layout folder in the natural order of their names
    as a drive: BGR frames, lat/lon (east/north plus ``shift``, in ``zone``) and times
    ``start + i * period``."""
    paths = sorted(list_images(folder), key=lambda p: name_key(p.name))
    named = [(p, parse_layout_name(p.name)) for p in paths]
    placed = [(p, n) for p, n in named if n is not None and n.east is not None]
    if not placed:
        raise EdgeVPRError(f"no image in {folder} is named with its east/north (@east@north@)")
    latlon = [utm_to_latlon(n.east + shift[0], n.north + shift[1], zone)  # type: ignore[operator]
              for _, n in placed]  # fmt: skip
    return [_read(p) for p, _ in placed], latlon, [start + i * period for i in range(len(placed))]


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise EdgeVPRError(f"cannot read the image {path}")
    return image


def record_bag(
    path: Path, frames: Sequence[np.ndarray], times: Sequence[float],
    latlon: Sequence[tuple[float, float]] | None, storage: str = SQLITE3, fix_status: int = 0,
) -> Path:  # fmt: skip
    """A bag of BGR ``frames`` on IMAGE_TOPIC and, where ``latlon`` is given, a NavSatFix a
    frame on FIX_TOPIC (``fix_status`` -1: a receiver without a fix), stamped ``times``
    (seconds since 1970), stored as ``storage`` (bags.SQLITE3: a ROS 2 bag folder; MCAP: one
    bare ``.mcap`` file; ROS1: a ROS 1 ``.bag``)."""
    with bag_written(path, storage) as bag:
        types = bag.types
        images = bag.topic(IMAGE_TOPIC, "sensor_msgs/msg/Image")
        fixes = None if latlon is None else bag.topic(FIX_TOPIC, "sensor_msgs/msg/NavSatFix")
        for i, (frame, seconds) in enumerate(zip(frames, times, strict=True)):
            stamp_ns = int(round(seconds * 1e9))
            header = bag.header(stamp_ns, "camera")
            height, width = frame.shape[:2]
            image = types["sensor_msgs/msg/Image"](
                header=header, height=height, width=width, encoding="bgr8", is_bigendian=0,
                step=width * 3, data=np.ascontiguousarray(frame).reshape(-1))  # fmt: skip
            bag.write(images, stamp_ns, image)
            if fixes is not None and latlon is not None:
                lat, lon = latlon[i]
                fix = types["sensor_msgs/msg/NavSatFix"](
                    header=header, status=types["sensor_msgs/msg/NavSatStatus"](
                        status=fix_status, service=1),
                    latitude=lat, longitude=lon, altitude=0.0,
                    position_covariance=np.diag([4.0, 4.0, 9.0]).ravel(),
                    position_covariance_type=2)  # fmt: skip
                bag.write(fixes, stamp_ns, fix)
    return path


def record_video(path: Path, frames: Sequence[np.ndarray], fps: float) -> Path:
    """An MJPG AVI of BGR ``frames`` (every OpenCV build writes it)."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise EdgeVPRError(f"OpenCV cannot write the video {path}")
    for frame in frames:
        writer.write(np.ascontiguousarray(frame))
    writer.release()
    return path


def write_gpx(path: Path, times: Sequence[float], latlon: Sequence[tuple[float, float]]) -> Path:
    """A GPX 1.1 track: one point a position, its time in UTC."""
    try:
        import gpxpy.gpx
    except ImportError:
        raise EdgeVPRError(f"writing GPX needs gpxpy: {install_hint('gpxpy')}") from None
    gpx = gpxpy.gpx.GPX()
    segment = gpxpy.gpx.GPXTrackSegment()
    for seconds, (lat, lon) in zip(times, latlon, strict=True):
        segment.points.append(gpxpy.gpx.GPXTrackPoint(
            lat, lon, time=datetime.fromtimestamp(seconds, timezone.utc)))  # fmt: skip
    track = gpxpy.gpx.GPXTrack()
    track.segments.append(segment)
    gpx.tracks.append(track)
    path.write_text(gpx.to_xml(version="1.1"))
    return path


def record_photos(folder: Path, frames: Sequence[np.ndarray], times: Sequence[float],
                  latlon: Sequence[tuple[float, float]]) -> list[Path]:  # fmt: skip
    """JPEGs of BGR ``frames`` with EXIF GPS and DateTimeOriginal + SubSecTimeOriginal, as a
    phone writes them (named in no particular order: the EXIF time orders them)."""
    try:
        from PIL import Image
    except ImportError:
        raise EdgeVPRError(f"writing EXIF needs Pillow: {install_hint('PIL')}") from None
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    order = np.random.default_rng(0).permutation(len(frames))
    for rank, i in enumerate(order):
        moment = datetime.fromtimestamp(times[i], timezone.utc)
        exif = Image.Exif()
        exif[0x0132] = moment.strftime("%Y:%m:%d %H:%M:%S")
        details = exif.get_ifd(0x8769)
        details[0x9003] = moment.strftime("%Y:%m:%d %H:%M:%S")  # DateTimeOriginal
        details[0x9291] = f"{moment.microsecond // 1000:03d}"  # SubSecTimeOriginal
        gps = exif.get_ifd(0x8825)
        lat, lon = latlon[i]
        gps[1], gps[2] = ("N" if lat >= 0 else "S"), _dms(abs(lat))
        gps[3], gps[4] = ("E" if lon >= 0 else "W"), _dms(abs(lon))
        path = folder / f"IMG_{rank:05d}.jpg"
        rgb = cv2.cvtColor(np.ascontiguousarray(frames[i]), cv2.COLOR_BGR2RGB)
        Image.fromarray(rgb).save(path, quality=95, exif=exif)
        paths.append(path)
    return paths


def _dms(degrees: float) -> tuple[float, float, float]:
    """Degrees as EXIF's degrees, minutes and seconds (Pillow writes them as rationals)."""
    whole = int(degrees)
    minutes = int((degrees - whole) * 60)
    seconds = round(((degrees - whole) * 60 - minutes) * 60, 4)
    return float(whole), float(minutes), seconds
