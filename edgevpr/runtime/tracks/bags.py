"""Tracks from a ROS 1 / ROS 2 bag's position topics (read with ``rosbags``):
``sensor_msgs/NavSatFix`` (fixes with status < 0 dropped, covariance kept),
``nav_msgs/Odometry``, ``geometry_msgs/PoseStamped`` and ``PoseWithCovarianceStamped``, and
``/tf`` between two named frames (``--frames map:base_link``). Times are the header stamps.
Also the one way a bag is written here (``bag_written``: tracks out, recordings): ROS 2 as
MCAP or sqlite3, or ROS 1.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edgevpr.core.errors import EdgeVPRError, first_line
from edgevpr.core.extras import install_hint
from edgevpr.core.files import replace_folder
from edgevpr.runtime.localize.rosmsg import stamp_seconds
from edgevpr.runtime.tracks.track import EAST_NORTH, LAT_LON, Track, heading_from_quaternion

NAVSATFIX = "sensor_msgs/msg/NavSatFix"
ODOMETRY = "nav_msgs/msg/Odometry"
POSE = "geometry_msgs/msg/PoseStamped"
POSE_COV = "geometry_msgs/msg/PoseWithCovarianceStamped"
TF = "tf2_msgs/msg/TFMessage"
POSITION_TYPES = (NAVSATFIX, ODOMETRY, POSE, POSE_COV, TF)


# How a bag is stored: a bare ROS 2 .mcap file, a ROS 2 bag folder (sqlite3), or a ROS 1
# .bag file (ROS 1 Noetic message types, as robots still on ROS 1 record them).
MCAP, SQLITE3, ROS1 = "mcap", "sqlite3", "rosbag1"


class BagOut:
    """A bag being written: connections by topic, messages built from ``types`` with
    ``header`` and serialised as the storage needs (CDR for ROS 2, ROS 1 wire format)."""

    def __init__(self, writer: Any, typestore: Any, ros1: bool) -> None:
        self.writer, self.typestore, self.ros1 = writer, typestore, ros1
        self.types = typestore.types

    def topic(self, name: str, msgtype: str) -> Any:
        """A connection for messages of ``msgtype`` (ROS 2 spelling) on topic ``name``."""
        return self.writer.add_connection(name, msgtype, typestore=self.typestore)

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        """A ``std_msgs/Header`` stamped ``stamp_ns`` (ROS 1's carries a sequence number)."""
        stamp = self.types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9,
                                                          nanosec=stamp_ns % 10**9)  # fmt: skip
        extra = {"seq": 0} if self.ros1 else {}
        return self.types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id, **extra)

    def write(self, connection: Any, stamp_ns: int, message: Any) -> None:
        """One message on ``connection``, received at ``stamp_ns``."""
        if self.ros1:
            data = self.typestore.serialize_ros1(message, connection.msgtype)
        else:
            data = self.typestore.serialize_cdr(message, connection.msgtype)
        self.writer.write(connection, stamp_ns, data)


@contextmanager
def bag_written(path: Path, storage: str) -> Iterator[BagOut]:
    """``with bag_written(path, storage) as bag``: a bag written in a fresh folder beside
    ``path`` and moved into place only when the block ends without an exception: a ROS 2
    bag (ROS 2 Humble message types) as one bare ``.mcap`` file (MCAP, as Foxglove and
    ``ros2 bag play`` take it) or a bag folder (SQLITE3, replacing a bag folder there), or a
    ROS 1 ``.bag`` file (ROS1)."""
    try:
        from rosbags.rosbag1 import Writer as Ros1Writer
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore
    except ImportError:
        raise EdgeVPRError(f"writing bags needs rosbags: {install_hint('rosbags')}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        if storage == ROS1:
            with Ros1Writer(work / path.name) as writer:
                yield BagOut(writer, get_typestore(Stores.ROS1_NOETIC), ros1=True)
            (work / path.name).replace(path)
            return
        bag = work / path.stem
        plugin = StoragePlugin.MCAP if storage == MCAP else StoragePlugin.SQLITE3
        with Writer(bag, version=8, storage_plugin=plugin) as writer:
            yield BagOut(writer, get_typestore(Stores.ROS2_HUMBLE), ros1=False)
        if storage == MCAP:
            (single,) = bag.glob("*.mcap")
            single.replace(path)
        else:
            replace_folder(bag, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _normal(msgtype: str) -> str:
    """ROS 1 names (``sensor_msgs/NavSatFix``) as ROS 2 ones."""
    package, _, name = msgtype.rpartition("/")
    return msgtype if "/msg/" in msgtype else f"{package}/msg/{name}"


def open_bag_reader(path: Path) -> Any:
    """An open rosbags reader of a bag: a ROS 2 bag folder or a file inside one (where
    metadata.yaml lies beside it), a bare ``.mcap`` file, or a ROS 1 ``.bag``."""
    try:
        from rosbags.highlevel import AnyReader, AnyReaderError
    except ImportError:
        raise EdgeVPRError(f"reading bags needs rosbags: {install_hint('rosbags')}") from None
    inside = path.is_file() and (path.parent / "metadata.yaml").is_file()
    try:
        reader = AnyReader([path.parent if inside else path])
        reader.open()
    except (AnyReaderError, OSError, ValueError) as exc:
        raise EdgeVPRError(f"cannot read bag {path}: {first_line(exc)}") from None
    return reader


@contextmanager
def opened_bag(path: Path) -> Iterator[Any]:
    from rosbags.highlevel import AnyReaderError

    reader = open_bag_reader(path)
    try:
        yield reader
    except AnyReaderError as exc:
        raise EdgeVPRError(f"bag {path} is damaged: {first_line(exc)}") from None
    finally:
        reader.close()


def position_topics(reader: Any) -> dict[str, str]:
    """Topic -> message type of every topic a track can be read from."""
    return {c.topic: _normal(c.msgtype) for c in reader.connections
            if _normal(c.msgtype) in POSITION_TYPES}  # fmt: skip


def read_bag_track(path: Path, topic: str | None, frames: str | None = None) -> Track:
    """The track of ``topic`` (automatic where the bag has one position topic; ``/tf``
    needs ``frames`` "parent:child")."""
    with opened_bag(path) as reader:
        topics = position_topics(reader)
        listed = ", ".join(f"{t} ({m.rsplit('/', 1)[-1]})" for t, m in sorted(topics.items()))
        if topic is None:
            candidates = [t for t, m in topics.items() if m != TF]
            if len(candidates) != 1:
                raise EdgeVPRError(f"bag {path}: give --position-topic, one of: {listed or 'none'}")
            topic = candidates[0]
        if topic not in topics:
            raise EdgeVPRError(f"bag {path} has no position topic {topic} "
                               f"(position topics: {listed or 'none'})")  # fmt: skip
        msgtype = topics[topic]
        connections = [c for c in reader.connections if c.topic == topic]
        messages = ((reader.deserialize(raw, c.msgtype), stamp) for c, stamp, raw in
                    reader.messages(connections))  # fmt: skip
        where = f"{topic} in bag {path}"
        if msgtype == TF:
            return _tf_track(messages, frames, where)
        if frames is not None:
            raise EdgeVPRError("--frames applies to /tf topics only")
        if msgtype == NAVSATFIX:
            return _fix_track(messages, where)
        return _pose_track(messages, where, msgtype)


def _fix_track(messages: Iterator[tuple[Any, int]], where: str) -> Track:
    times, values, heights, variances = [], [], [], []
    dropped = 0
    for message, stamp in messages:
        if int(message.status.status) < 0:  # STATUS_NO_FIX
            dropped += 1
            continue
        lat, lon = float(message.latitude), float(message.longitude)
        if not (np.isfinite(lat) and np.isfinite(lon)):
            raise EdgeVPRError(f"{where} has a fix with a NaN position")
        times.append(_time(message, stamp))
        values.append((lat, lon))
        heights.append(float(message.altitude))
        covariance = np.asarray(message.position_covariance, np.float64)
        known = int(message.position_covariance_type) > 0 and len(covariance) == 9
        variances.append(0.5 * (covariance[0] + covariance[4]) if known else np.nan)
    if not times:
        raise EdgeVPRError(f"{where} holds no fix ({dropped} messages without one)")
    return Track(LAT_LON, times, values, f"{where} ({dropped} without a fix dropped)",
                 altitude=heights, variance=variances)  # fmt: skip


def _pose_track(messages: Iterator[tuple[Any, int]], where: str, msgtype: str) -> Track:
    """Odometry, PoseStamped and PoseWithCovarianceStamped: metres east/north in the
    message's frame (a local frame without a UTM zone)."""
    times, values, heights, headings, variances = [], [], [], [], []
    with_covariance = msgtype in (ODOMETRY, POSE_COV)  # their pose is pose.pose
    for message, stamp in messages:
        pose = message.pose.pose if with_covariance else message.pose
        position, q = pose.position, pose.orientation
        times.append(_time(message, stamp))
        values.append((float(position.x), float(position.y)))
        heights.append(float(position.z))
        headings.append(heading_from_quaternion(q.x, q.y, q.z, q.w))
        covariance = np.asarray(getattr(message.pose, "covariance", []), np.float64)
        variances.append(0.5 * (covariance[0] + covariance[7]) if len(covariance) == 36
                         else np.nan)  # fmt: skip
    return Track(EAST_NORTH, times, values, where, altitude=heights, heading=headings,
                 variance=variances)  # fmt: skip


def _tf_track(messages: Iterator[tuple[Any, int]], frames: str | None, where: str) -> Track:
    """The transforms from one frame to another (given directly, not chained)."""
    if frames is None or frames.count(":") != 1:
        raise EdgeVPRError(f"{where}: give --frames PARENT:CHILD (e.g. map:base_link)")
    parent, child = (f.strip().lstrip("/") for f in frames.split(":"))
    times, values, headings, seen = [], [], [], set()
    for message, stamp in messages:
        for transform in message.transforms:
            pair = (transform.header.frame_id.lstrip("/"), transform.child_frame_id.lstrip("/"))
            seen.add(pair)
            if pair != (parent, child):
                continue
            t, q = transform.transform.translation, transform.transform.rotation
            times.append(_time(transform, stamp))
            values.append((float(t.x), float(t.y)))
            headings.append(heading_from_quaternion(q.x, q.y, q.z, q.w))
    if not times:
        pairs = ", ".join(f"{a}:{b}" for a, b in sorted(seen)[:8]) or "none"
        raise EdgeVPRError(f"{where} has no transform {parent}:{child} (it has: {pairs})")
    return Track(EAST_NORTH, times, values, f"{where} {parent}:{child}", heading=headings)


def _time(message: Any, stamp_ns: int) -> float:
    seconds = stamp_seconds(message)
    return seconds if seconds is not None else stamp_ns * 1e-9
