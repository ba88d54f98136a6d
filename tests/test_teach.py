"""Teaching maps from recorded drives: ``index build`` over a video with its GPX, a ROS 2
bag with NavSatFix and geotagged photos gives the places a folder of named images gives;
keyframes by distance; several drives in one map, matched each in its own order; route
maps in metres travelled; bad input refused in one line with nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgevpr.core.images import list_images
from edgevpr.data.recordings import record_bag, record_drive
from edgevpr.data.synth import SynthConfig, generate
from edgevpr.runtime.localize.route import RouteConfig, RouteShape, RouteTracker
from edgevpr.runtime.placemap import PlaceMap

pytest.importorskip("gpxpy")
pytest.importorskip("exifread")
pytest.importorskip("rosbags")

ZONE = "32T"
START = 1_780_000_000.0
PLACES = 16  # synthetic places 40 m apart


@pytest.fixture(scope="module")
def road(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic road: its test split's database and query views are two drives of it."""
    root = tmp_path_factory.mktemp("road") / "set"
    generate(root, SynthConfig(seed=7, places=PLACES, val_places=0, train_places=0))
    return root / "images/test"


@pytest.fixture(scope="module")
def recordings(road: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("recordings")
    record_drive(road / "database", out / "first.avi", "video", ZONE, START, 2.0)
    record_drive(road / "database", out / "first_bag", "bag", ZONE, START, 2.0)
    record_drive(road / "database", out / "first.bag", "rosbag1", ZONE, START, 2.0)
    record_drive(road / "database", out / "photos", "photos", ZONE, START, 2.0)
    record_drive(road / "queries", out / "second.mcap", "mcap", ZONE, START + 86400, 2.0)
    return {"video": out / "first.avi", "gpx": out / "first.gpx", "bag": out / "first_bag",
            "rosbag1": out / "first.bag", "photos": out / "photos",
            "second": out / "second.mcap"}  # fmt: skip


def positions(path: Path) -> np.ndarray:
    """East/north of a map's places in ZONE, in travel (north) order; a taught map is in
    the UTM zone its first fix fell in, which for synthetic names far east of ZONE's
    meridian is the next zone: converted back through latitude/longitude."""
    from edgevpr.core.geo import latlon_to_utm, utm_to_latlon

    records = sorted(PlaceMap.load(path).records(), key=lambda r: r.north)
    return np.array([(r.east, r.north) if r.utm_zone in (None, ZONE) else
                     latlon_to_utm(*utm_to_latlon(r.east, r.north, r.utm_zone), ZONE)
                     for r in records])  # fmt: skip


def test_every_recording_gives_the_folder_maps_places(cli, exported, road, recordings, tmp_path):
    model = exported["onnx"]
    assert cli("index", "build", model, road / "database", "-o", tmp_path / "folder.vprmap",
               "-q").code == 0  # fmt: skip
    folder = positions(tmp_path / "folder.vprmap")
    builds = {
        "video": [recordings["video"], "--track", recordings["gpx"], "--start-time",
                  str(START)],
        "bag": [recordings["bag"]],
        "rosbag1": [recordings["rosbag1"]],
        "photos": [recordings["photos"]],
    }  # fmt: skip
    for name, source in builds.items():
        out = tmp_path / f"{name}.vprmap"
        result = cli("index", "build", model, *source, "-o", out, "-q")
        assert result.code == 0, result.err
        assert f"{PLACES} of {PLACES} frames kept" in result.err
        taught = positions(out)
        assert taught.shape == folder.shape
        assert np.abs(taught - folder).max() < 0.5, name
        placemap = PlaceMap.load(out)
        assert len({r.utm_zone for r in placemap.records()}) == 1
        assert [d["places"] for d in placemap.drives()] == [PLACES]


def test_keyframes_every_metres_and_a_standing_vehicle(cli, exported, road, tmp_path) -> None:
    frames = [cv for cv in _frames(road)]
    # the vehicle stands at each place for three frames (the same image, the same fix)
    still = [f for f in frames for _ in range(3)]
    latlon = [p for p in _latlon(road) for _ in range(3)]
    bag = record_bag(tmp_path / "still", still, [START + i for i in range(len(still))], latlon)
    result = cli("index", "build", exported["onnx"], bag, "--every", "1", "-o",
                 tmp_path / "a.vprmap", "-q")  # fmt: skip
    assert result.code == 0, result.err
    assert len(PlaceMap.load(tmp_path / "a.vprmap")) == PLACES
    assert f"{2 * PLACES} within 1 m of the last" in result.err
    result = cli("index", "build", exported["onnx"], bag, "--every", "100", "-o",
                 tmp_path / "b.vprmap", "-q")  # fmt: skip
    assert result.code == 0, result.err
    kept = positions(tmp_path / "b.vprmap")
    assert 4 <= len(kept) <= PLACES // 2
    assert np.linalg.norm(np.diff(kept, axis=0), axis=1).min() >= 100 - 8  # views jitter 4 m


def test_a_second_drive_joins_the_map_and_both_serve(cli, exported, recordings, tmp_path):
    model, out = exported["onnx"], tmp_path / "two.vprmap"
    assert cli("index", "build", model, recordings["bag"], "-o", out, "-q").code == 0
    added = cli("index", "add", out, recordings["second"], "-m", model, "-q")
    assert added.code == 0, added.err
    assert "in 2 drives" in added.out
    again = cli("index", "add", out, recordings["second"], "-m", model, "-q")
    assert again.code == 2 and "already holds a drive named 'second'" in again.err
    drives = PlaceMap.load(out).drives()
    assert [(d["name"], d["places"], d["first"], d["last"]) for d in drives] == [
        ("first_bag", PLACES, 0, PLACES - 1), ("second", PLACES, 0, PLACES - 1)]
    info = cli("index", "info", out)
    assert f"first_bag: {PLACES} places, frames 0-{PLACES - 1}" in info.out
    # the second drive localised against the map holding both: its own places are there,
    # and the first drive's at the same spots are no rivals
    track = cli("localize", out, recordings["second"], "-m", model, "--length", "4",
                "--truth", "/gps/fix", "-o", tmp_path / "t.jsonl", "-q")  # fmt: skip
    assert track.code == 0, track.err
    assert f"{PLACES} frames with truth" in track.out
    accepted = int(track.out.split(" fixes accepted")[0].rsplit(", ", 1)[-1])
    assert accepted >= PLACES - 4  # every frame once the evidence has built up
    assert "100.0 % of them within 25 m" in track.out


def test_the_route_never_runs_from_one_drive_into_the_next() -> None:
    # two drives of 10 places each; a frame sequence walking drive 0 to its end
    shape = RouteShape(np.repeat([0, 1], 10), np.tile(np.arange(10.0)[:, None] * [1, 0], (2, 1)),
                       near_m=3.0)  # fmt: skip
    tracker = RouteTracker(20, RouteConfig(length=3, speeds=(1.0,)), shape)
    for frame in range(14):
        at = min(frame, 9)

        def score(p: np.ndarray, at: int = at) -> np.ndarray:
            return np.where(np.round(p) == at, 3.0, 0.0) + np.where(np.round(p) == at + 10, 2.9, 0)

        estimate = tracker.update(np.array([at, at + 10]), score)
        assert estimate.position <= 9 or estimate.position >= 10
        assert not (estimate.positions[estimate.positions > 9] < 10).any()
    # the same spot in drive 1 (2.9 against 3.0) is the same answer, not a close rival
    assert estimate.margin > 1.0
    alone = RouteTracker(20, RouteConfig(length=3, speeds=(1.0,)))
    for frame in range(3):
        estimate = alone.update(np.array([frame, frame + 10]), lambda p, at=frame: np.where(
            np.round(p) == at, 3.0, 0.0) + np.where(np.round(p) == at + 10, 2.9, 0))
    assert estimate.margin < 0.2  # without drives, the other copy is a rival


def test_a_route_map_in_metres_travelled(cli, exported, recordings, tmp_path) -> None:
    out = tmp_path / "route.vprmap"
    result = cli("index", "build", exported["onnx"], recordings["video"], "--spacing", "5",
                 "-o", out, "-q")  # fmt: skip
    assert result.code == 0, result.err
    records = sorted(PlaceMap.load(out).records(), key=lambda r: r.order)
    assert [r.route_m for r in records] == [5.0 * i for i in range(PLACES)]
    assert all(r.east is None for r in records)
    track = cli("localize", out, recordings["video"], "-m", exported["onnx"], "--length", "3",
                "-o", tmp_path / "t.csv", "-q")  # fmt: skip
    assert track.code == 0, track.err
    rows = (tmp_path / "t.csv").read_text().splitlines()
    header = rows[0].split(",")
    metres = [row.split(",")[header.index("route_m")] for row in rows[1:]]
    assert metres[-1] and float(metres[-1]) == pytest.approx(5.0 * (PLACES - 1), abs=5.0)


# ------------------------------------------------------------------ bad input
def test_a_track_that_never_meets_the_video_is_refused_and_nothing_written(
    cli, exported, recordings, tmp_path
) -> None:
    out = tmp_path / "late.vprmap"
    result = cli("index", "build", exported["onnx"], recordings["video"], "--track",
                 recordings["gpx"], "--start-time", str(START + 3600), "-o", out, "-q")  # fmt: skip
    assert result.code == 2
    assert "became a place" in result.err and "the track runs" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.iterdir())


def test_an_absolute_track_over_a_video_needs_its_start(cli, exported, recordings, tmp_path):
    result = cli("index", "build", exported["onnx"], recordings["video"], "--track",
                 recordings["gpx"], "-o", tmp_path / "m.vprmap", "-q")  # fmt: skip
    assert result.code == 2 and "give --start-time" in result.err
    assert not list(tmp_path.iterdir())


def test_a_photo_without_gps_is_refused_or_listed_and_skipped(cli, exported, recordings, tmp_path):
    import shutil

    import cv2

    photos = tmp_path / "photos"
    shutil.copytree(recordings["photos"], photos)
    cv2.imwrite(str(photos / "zz_plain.jpg"), np.full((48, 48, 3), 90, np.uint8))
    out = tmp_path / "m.vprmap"
    refused = cli("index", "build", exported["onnx"], photos, "-o", out, "-q")
    assert refused.code == 2 and "have no GPS position" in refused.err
    assert "(zz_plain.jpg)" in refused.err
    assert "--skip-unreadable" in refused.err and not out.exists()
    assert not (tmp_path / "m.vprmap.partial").exists()
    skipped = cli("index", "build", exported["onnx"], photos, "-o", out, "-q",
                  "--skip-unreadable")  # fmt: skip
    assert skipped.code == 0, skipped.err
    assert "warning: skipped" in skipped.err and "zz_plain.jpg" in skipped.err
    assert len(PlaceMap.load(out)) == PLACES


@pytest.mark.parametrize(("extra", "message"), [
    (["--position-topic", "/nope"], "has no position topic /nope"),
    (["--topic", "/nope"], "/nope"),
    (["--frames", "map:base"], "--frames applies to /tf topics only"),
])  # fmt: skip
def test_bag_mistakes_are_one_line(cli, exported, recordings, tmp_path, extra, message) -> None:
    result = cli("index", "build", exported["onnx"], recordings["bag"], *extra, "-o",
                 tmp_path / "m.vprmap", "-q")  # fmt: skip
    assert result.code == 2 and message in result.err
    assert len(result.err.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def _frames(road: Path) -> list[np.ndarray]:
    import cv2

    from edgevpr.runtime.localize.layout import name_key

    paths = sorted(list_images(road / "database"), key=lambda p: name_key(p.name))
    return [cv2.imread(str(p)) for p in paths]


def _latlon(road: Path) -> list[tuple[float, float]]:
    from edgevpr.core.geo import utm_to_latlon
    from edgevpr.core.layout_names import parse_layout_name
    from edgevpr.runtime.localize.layout import name_key

    paths = sorted(list_images(road / "database"), key=lambda p: name_key(p.name))
    names = [parse_layout_name(p.name) for p in paths]
    return [utm_to_latlon(n.east, n.north, ZONE) for n in names]
