"""Positions in: tracks and their sampling at frame times, the track files (GPX, CSV, TUM,
DJI SRT), bag position topics (NavSatFix, Odometry, poses, /tf) and geotagged photos (EXIF,
DJI XMP), each bad input refused in one line."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.geo import latlon_to_utm, utm_to_latlon
from edgevpr.data.recordings import record_bag, record_photos, write_gpx
from edgevpr.runtime.tracks.bags import read_bag_track
from edgevpr.runtime.tracks.files import read_track_file
from edgevpr.runtime.tracks.photos import photo_position
from edgevpr.runtime.tracks.track import EAST_NORTH, LAT_LON, Track, heading_from_quaternion

pytest.importorskip("gpxpy")
pytest.importorskip("exifread")
rosbags = pytest.importorskip("rosbags")

T0 = 1_700_000_000.0
ZONE = "33V"


def route_latlon(n: int, step_m: float = 10.0) -> list[tuple[float, float]]:
    """Points ``step_m`` apart going north from a point in zone 33V."""
    return [utm_to_latlon(400_000.0, 7_000_000.0 + i * step_m, ZONE) for i in range(n)]


# ------------------------------------------------------------------ the track itself
def test_positions_between_samples_are_interpolated_and_far_times_refused() -> None:
    track = Track(EAST_NORTH, [0.0, 2.0, 4.0], [(0, 0), (20, 0), (20, 40)], "t",
                  heading=[350.0, 10.0, 90.0])  # fmt: skip
    sample = track.at(np.array([1.0, 3.0, 4.5, 9.0]), max_gap=1.0)
    assert np.allclose(sample.values[:3], [(10, 0), (20, 20), (20, 40)])
    assert sample.valid.tolist() == [True, True, True, False]
    # 350 and 10 degrees average to 0 on the circle, not 180
    assert min(sample.heading[0], 360 - sample.heading[0]) == pytest.approx(0.0, abs=1e-6)


def test_a_track_sorts_its_samples_and_drops_repeated_times() -> None:
    track = Track(EAST_NORTH, [2.0, 0.0, 2.0, 1.0], [(2, 0), (0, 0), (9, 9), (1, 0)], "t")
    assert track.times.tolist() == [0.0, 1.0, 2.0]
    assert track.values[:, 0].tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("bad", [[(0.0, math.nan)], [(math.inf, 0.0)]])
def test_nan_or_infinite_positions_are_refused(bad) -> None:
    with pytest.raises(EdgeVPRError, match="NaN or infinite"):
        Track(EAST_NORTH, [0.0], bad, "t")


def test_latitude_longitude_become_utm_in_the_first_zone() -> None:
    points = route_latlon(3)
    track = Track(LAT_LON, [0, 1, 2], points, "t").in_utm()
    assert track.zone == ZONE
    assert np.allclose(track.values, [(400_000.0, 7_000_000.0 + 10 * i) for i in range(3)],
                       atol=1e-3)  # fmt: skip
    # a drive across the zone border (12 deg E to 12.1 deg E at 60 deg N: 33V, then 33V...)
    crossing = Track(LAT_LON, [0, 1], [(60.0, 11.99), (60.0, 12.01)], "t").in_utm()
    assert crossing.zone == "32V"
    step = np.linalg.norm(crossing.values[1] - crossing.values[0])
    assert step == pytest.approx(1113.0, rel=0.01)  # 0.02 deg of longitude at 60 N


def test_heading_from_a_ros_orientation() -> None:
    # ENU yaw 0 (facing east) is compass 90; yaw 90 (north) is compass 0
    assert heading_from_quaternion(0, 0, 0, 1) == pytest.approx(90.0)
    half = math.sqrt(0.5)
    assert heading_from_quaternion(0, 0, half, half) == pytest.approx(0.0, abs=1e-9)


# ------------------------------------------------------------------ track files
def test_gpx_csv_tum_and_srt_give_the_same_positions(tmp_path: Path) -> None:
    points = route_latlon(5)
    times = [T0 + i for i in range(5)]
    gpx = write_gpx(tmp_path / "t.gpx", times, points)
    csv_path = tmp_path / "t.csv"
    rows = zip(times, points, strict=True)
    csv_path.write_text("time,lat,lon,alt\n" + "".join(
        f"{t},{lat:.9f},{lon:.9f},12\n" for t, (lat, lon) in rows))  # fmt: skip
    utm = [latlon_to_utm(lat, lon, ZONE) for lat, lon in points]
    tum = tmp_path / "t.tum"
    tum.write_text("# t x y z qx qy qz qw\n" + "".join(
        f"{t} {e} {n} 0 0 0 0 1\n" for t, (e, n) in zip(times, utm, strict=True)))  # fmt: skip
    srt = tmp_path / "t.srt"
    srt.write_text("\n".join(
        f"{i + 1}\n00:00:0{i},000 --> 00:00:0{i},033\n<font>FrameCnt: {i + 1} "
        f"[latitude: {lat:.9f}] [longitude: {lon:.9f}] [rel_alt: 30.0 abs_alt: 80.0]</font>\n"
        for i, (lat, lon) in enumerate(points)))  # fmt: skip
    expected = np.array(utm)
    for path in (gpx, csv_path, srt):
        track = read_track_file(path).in_utm(ZONE)
        assert np.allclose(track.values, expected, atol=0.01), path
    assert read_track_file(gpx).absolute and not read_track_file(srt).absolute
    assert np.allclose(read_track_file(tum).values, expected, atol=1e-4)
    assert read_track_file(srt).times.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize(("name", "text", "message"), [
    ("bad.gpx", "<gpx><trk><trkseg><trkpt lat='1' lon=", "GPX .* is damaged"),
    ("untimed.gpx", '<?xml version="1.0"?><gpx version="1.1" creator="x" '
     'xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg><trkpt lat="1" lon="2"/>'
     "</trkseg></trk></gpx>", "without a time"),
    ("bad.csv", "time,lat,lon\n1,60.0,abc\n", "row 2: not a number"),
    ("nocols.csv", "when,where\n1,2\n", "has no time, lat, lon|has no time, east, north"),
    ("nan.csv", "time,lat,lon\n1,nan,10\n", "NaN or infinite"),
    ("bad.srt", "1\n00:00:00,000 --> 00:00:00,033\nno position here\n", "no timed position"),
    ("bad.tum", "1 2 3\n", "3 values, not 8"),
    ("bad.kmz", "x", "give a .gpx"),
])  # fmt: skip
def test_damaged_track_files_are_refused_in_one_line(tmp_path, name, text, message) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(EdgeVPRError, match=message) as caught:
        read_track_file(path)
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------ bags
def write_bag(path: Path, messages: list[tuple[str, str, float, dict]]) -> Path:
    """A ROS 2 bag of (topic, type, seconds, fields) messages built with rosbags."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types = store.types
    with Writer(path, version=8) as writer:
        connections: dict[str, object] = {}
        for topic, msgtype, seconds, fields in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            ns = int(seconds * 1e9)
            header = types["std_msgs/msg/Header"](
                stamp=types["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
                frame_id="map")  # fmt: skip
            message = build_message(types, msgtype, header, fields)
            writer.write(connections[topic], ns, store.serialize_cdr(message, msgtype))
    return path


def build_message(types, msgtype: str, header, fields: dict):
    if msgtype == "sensor_msgs/msg/NavSatFix":
        return types[msgtype](
            header=header, status=types["sensor_msgs/msg/NavSatStatus"](
                status=fields.get("status", 0), service=1),
            latitude=fields["lat"], longitude=fields["lon"], altitude=0.0,
            position_covariance=np.diag([4.0, 4.0, 9.0]).ravel(),
            position_covariance_type=2)  # fmt: skip
    pose = types["geometry_msgs/msg/Pose"](
        position=types["geometry_msgs/msg/Point"](x=fields["x"], y=fields["y"], z=0.0),
        orientation=types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
    if msgtype == "geometry_msgs/msg/PoseStamped":
        return types[msgtype](header=header, pose=pose)
    with_cov = types["geometry_msgs/msg/PoseWithCovariance"](pose=pose,
                                                             covariance=np.eye(6).ravel())
    if msgtype == "nav_msgs/msg/Odometry":
        twist = types["geometry_msgs/msg/TwistWithCovariance"](
            twist=types["geometry_msgs/msg/Twist"](
                linear=types["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
                angular=types["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)),
            covariance=np.zeros(36))  # fmt: skip
        return types[msgtype](header=header, child_frame_id="base_link", pose=with_cov,
                              twist=twist)  # fmt: skip
    if msgtype == "geometry_msgs/msg/PoseWithCovarianceStamped":
        return types[msgtype](header=header, pose=with_cov)
    assert msgtype == "tf2_msgs/msg/TFMessage"
    transform = types["geometry_msgs/msg/TransformStamped"](
        header=header, child_frame_id="base_link",
        transform=types["geometry_msgs/msg/Transform"](
            translation=types["geometry_msgs/msg/Vector3"](x=fields["x"], y=fields["y"], z=0.0),
            rotation=types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)))
    return types[msgtype](transforms=[transform])


def test_navsatfix_without_a_fix_is_dropped_and_covariance_kept(tmp_path: Path) -> None:
    points = route_latlon(4)
    messages = [("/gps/fix", "sensor_msgs/msg/NavSatFix", T0 + i,
                 {"lat": lat, "lon": lon, "status": -1 if i == 1 else 0})
                for i, (lat, lon) in enumerate(points)]  # fmt: skip
    track = read_bag_track(write_bag(tmp_path / "b", messages), None)
    assert track.times.tolist() == [T0, T0 + 2, T0 + 3]
    assert np.allclose(track.variance, 4.0)
    assert "1 without a fix dropped" in track.source


@pytest.mark.parametrize("msgtype", ["nav_msgs/msg/Odometry", "geometry_msgs/msg/PoseStamped",
                                     "geometry_msgs/msg/PoseWithCovarianceStamped"])
def test_odometry_and_pose_topics_give_metres(tmp_path: Path, msgtype: str) -> None:
    messages = [("/odom", msgtype, T0 + i, {"x": 5.0 * i, "y": -1.0}) for i in range(3)]
    track = read_bag_track(write_bag(tmp_path / "b", messages), "/odom")
    assert track.kind == EAST_NORTH and track.zone is None
    assert track.values.tolist() == [[0.0, -1.0], [5.0, -1.0], [10.0, -1.0]]
    assert np.allclose(track.heading, 90.0)  # identity orientation faces east


def test_tf_needs_its_frames_and_names_the_ones_it_has(tmp_path: Path) -> None:
    messages = [("/tf", "tf2_msgs/msg/TFMessage", T0 + i, {"x": float(i), "y": 0.0})
                for i in range(3)]  # fmt: skip
    bag = write_bag(tmp_path / "b", messages)
    assert read_bag_track(bag, "/tf", "map:base_link").values[:, 0].tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(EdgeVPRError, match="give --frames"):
        read_bag_track(bag, "/tf")
    with pytest.raises(EdgeVPRError, match=r"no transform odom:base_link \(it has: map:base_link"):
        read_bag_track(bag, "/tf", "odom:base_link")


@pytest.mark.parametrize(("status", "lat", "topic", "message"), [
    (-1, 60.0, None, "holds no fix"),
    (0, math.nan, None, "NaN position"),
    (0, 60.0, "/odom", "no position topic /odom"),
])  # fmt: skip
def test_bad_bag_positions_are_refused_in_one_line(tmp_path, status, lat, topic, message):
    messages = [("/gps/fix", "sensor_msgs/msg/NavSatFix", T0 + i,
                 {"lat": lat, "lon": 10.0, "status": status}) for i in range(3)]  # fmt: skip
    with pytest.raises(EdgeVPRError, match=message):
        read_bag_track(write_bag(tmp_path / "b", messages), topic)


def test_a_recorded_bag_reads_back_its_fixes(tmp_path: Path) -> None:
    points = route_latlon(3)
    frames = [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(3)]
    bag = record_bag(tmp_path / "bag", frames, [T0, T0 + 1, T0 + 2], points)
    track = read_bag_track(bag, "/gps/fix")
    assert np.allclose(track.values, points) and track.times.tolist() == [T0, T0 + 1, T0 + 2]


# ------------------------------------------------------------------ photos
def test_exif_gps_and_time_read_back(tmp_path: Path) -> None:
    points = route_latlon(3)
    frames = [np.full((32, 32, 3), 60 * i, np.uint8) for i in range(3)]
    paths = record_photos(tmp_path / "p", frames, [T0 + 0.25, T0 + 1.5, T0 + 2.75], points)
    found = sorted((photo_position(p) for p in paths), key=lambda f: f.time)
    assert [f.time for f in found] == pytest.approx([T0 + 0.25, T0 + 1.5, T0 + 2.75])
    for position, (lat, lon) in zip(found, points, strict=True):
        east, north = latlon_to_utm(position.lat, position.lon, ZONE)
        assert np.hypot(*np.subtract((east, north), latlon_to_utm(lat, lon, ZONE))) < 0.01


def test_dji_xmp_is_read_before_exif(tmp_path: Path) -> None:
    ok, jpeg = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))
    packet = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description '
              b'drone-dji:GpsLatitude="+46.5000010" drone-dji:GpsLongtitude="+7.2500020" '
              b'drone-dji:RelativeAltitude="+35.20" drone-dji:GimbalYawDegree="-90.5"/>'
              b"</x:xmpmeta>")  # fmt: skip
    data = jpeg.tobytes()
    app1 = b"\xff\xe1" + (len(packet) + 2).to_bytes(2, "big") + packet
    path = tmp_path / "DJI_0001.JPG"
    path.write_bytes(data[:2] + app1 + data[2:])
    found = photo_position(path)
    assert found is not None and found.source == "dji-xmp"
    assert (found.lat, found.lon, found.altitude) == pytest.approx((46.500001, 7.250002, 35.2))
    assert found.heading == pytest.approx(269.5)


def test_a_photo_without_gps_has_no_position(tmp_path: Path) -> None:
    path = tmp_path / "plain.jpg"
    cv2.imwrite(str(path), np.zeros((16, 16, 3), np.uint8))
    assert photo_position(path) is None
