"""Tracks out and truth in: ``localize --out`` in every track format (read back with the
tools' own readers), refused where a format cannot hold the map's positions, atomic on
failure; ``--truth`` from a bag topic or a track file, the summary equal to the errors
computed here and to what ``evo_ape`` says of the TUM output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from edgevpr.core.geo import latlon_to_utm, utm_to_latlon
from edgevpr.data.recordings import record_drive
from edgevpr.data.synth import SynthConfig, generate
from edgevpr.runtime.placemap import PlaceMap
from edgevpr.runtime.tracks.bags import read_bag_track
from edgevpr.runtime.tracks.writers import TRACK_FORMATS

gpxpy = pytest.importorskip("gpxpy")
pytest.importorskip("exifread")
pytest.importorskip("rosbags")

ZONE = "32T"
START = 1_780_000_000.0
PLACES = 16


@pytest.fixture(scope="module")
def drives(tmp_path_factory: pytest.TempPathFactory, exported, session_cli) -> dict[str, Path]:
    """A map taught from one drive of a synthetic road (a bag), the second drive (an MCAP
    file with its own GNSS), and the folder of the second drive's named frames."""
    root = tmp_path_factory.mktemp("trackout")
    generate(root / "set", SynthConfig(seed=3, places=PLACES, val_places=0, train_places=0))
    test = root / "set/images/test"
    record_drive(test / "database", root / "first", "bag", ZONE, START, 1.0)
    record_drive(test / "queries", root / "second.mcap", "mcap", ZONE, START + 9000, 1.0)
    result = session_cli("index", "build", exported["onnx"], root / "first", "-o",
                         root / "map.vprmap", "-q")  # fmt: skip
    assert result.code == 0, result.err
    return {"map": root / "map.vprmap", "second": root / "second.mcap",
            "queries": test / "queries", "database": test / "database", "root": root}  # fmt: skip


def localize(cli, exported, drives, out: Path, *extra: object):
    return cli("localize", drives["map"], drives["second"], "-m", exported["onnx"],
               "--length", "3", "-o", out, "-q", *extra)  # fmt: skip


def jsonl_fixes(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_format_reads_back_with_its_own_reader(cli, exported, drives, tmp_path) -> None:
    from rosbags.highlevel import AnyReader

    assert localize(cli, exported, drives, tmp_path / "t.jsonl").code == 0
    fixes = jsonl_fixes(tmp_path / "t.jsonl")
    accepted = [f for f in fixes if f["accepted"]]
    assert len(fixes) == PLACES and accepted
    zone = accepted[0]["position"]["utm_zone"]
    latlon = np.array([utm_to_latlon(f["position"]["east"], f["position"]["north"], zone)
                       for f in accepted])  # fmt: skip
    for name, fmt in TRACK_FORMATS.items():
        out = tmp_path / (f"t{fmt.suffixes[0]}" if fmt.suffixes else "bagdir")
        result = localize(cli, exported, drives, out, "--format", name)
        assert result.code == 0, (name, result.err)
        assert f"({name})" in result.out
    rows = (tmp_path / "t.csv").read_text().splitlines()
    assert len(rows) == PLACES + 1 and rows[0].startswith("frame,name,timestamp,state")
    tum = np.loadtxt(tmp_path / "t.tum", comments="#")
    assert np.allclose(tum[:, 1:3], [(f["position"]["east"], f["position"]["north"])
                                     for f in accepted], atol=1e-3)  # fmt: skip
    assert np.allclose(tum[:, 0], [f["timestamp"] for f in accepted])
    points = [p for t in gpxpy.parse((tmp_path / "t.gpx").read_text()).tracks
              for s in t.segments for p in s.points]  # fmt: skip
    assert np.allclose([(p.latitude, p.longitude) for p in points], latlon, atol=1e-7)
    assert points[0].time.timestamp() == pytest.approx(accepted[0]["timestamp"])
    geo = json.loads((tmp_path / "t.geojson").read_text())
    line = geo["features"][0]["geometry"]
    assert line["type"] == "LineString"
    assert np.allclose(np.array(line["coordinates"])[:, ::-1], latlon, atol=1e-7)
    assert len(geo["features"]) == 1 + len(accepted)
    kml = ET.parse(tmp_path / "t.kml").getroot()
    text = kml.find(".//{http://www.opengis.net/kml/2.2}LineString/"
                    "{http://www.opengis.net/kml/2.2}coordinates").text  # fmt: skip
    kml_points = np.array([[float(v) for v in c.split(",")[:2]] for c in text.split()])
    assert np.allclose(kml_points[:, ::-1], latlon, atol=1e-7)
    for bag in (tmp_path / "t.mcap", tmp_path / "bagdir", tmp_path / "t.bag"):
        with AnyReader([bag]) as reader:
            counts = {c.topic: c.msgcount for c in reader.connections}
            assert counts == {"/edgevpr/pose": len(accepted), "/edgevpr/confidence": PLACES,
                              "/edgevpr/state": PLACES}  # fmt: skip
            pose_topic = [c for c in reader.connections if c.topic == "/edgevpr/pose"]
            connection, stamp, raw = next(iter(reader.messages(pose_topic)))
            pose = reader.deserialize(raw, connection.msgtype)
            assert pose.header.frame_id == "utm"
            assert stamp == pytest.approx(accepted[0]["timestamp"] * 1e9, abs=1e3)
            assert (pose.pose.pose.position.x, pose.pose.pose.position.y) == pytest.approx(
                (accepted[0]["position"]["east"], accepted[0]["position"]["north"]))


def test_formats_that_cannot_hold_the_positions_are_refused_first(cli, exported, drives,
                                                                  tmp_path) -> None:
    # a map from named images: east/north without a UTM zone (a local frame)
    local = tmp_path / "local.vprmap"
    assert cli("index", "build", exported["onnx"], drives["database"], "-o", local,
               "-q").code == 0  # fmt: skip
    for out in ("t.gpx", "t.kml", "t.geojson"):
        result = cli("localize", local, drives["queries"], "-m", exported["onnx"], "-o",
                     tmp_path / out, "-q")  # fmt: skip
        assert result.code == 2 and "no UTM zone" in result.err, result.err
        assert not (tmp_path / out).exists()
    unknown = localize(cli, exported, drives, tmp_path / "t.xyz")
    assert unknown.code == 2 and "give --format" in unknown.err


def test_a_failed_run_leaves_the_previous_track(cli, exported, drives, tmp_path) -> None:
    frames = tmp_path / "frames"
    shutil.copytree(drives["queries"], frames)
    broken = sorted(frames.iterdir())[5]
    broken.write_bytes(b"not an image")
    for out in (tmp_path / "t.gpx", tmp_path / "t.mcap"):
        out.write_text("the previous run")
        result = cli("localize", drives["map"], frames, "-m", exported["onnx"], "-o", out, "-q")
        assert result.code == 2 and broken.name in result.err
        assert out.read_text() == "the previous run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "t.gpx", "t.mcap"]


def test_truth_from_the_bag_topic_equals_the_errors_computed_here(cli, exported, drives,
                                                                  tmp_path) -> None:
    result = localize(cli, exported, drives, tmp_path / "t.jsonl", "--truth", "/gps/fix",
                      "--json", "--radius", "10")  # fmt: skip
    assert result.code == 0, result.err
    score = json.loads(result.out)["score"]
    fixes = jsonl_fixes(tmp_path / "t.jsonl")
    truth = read_bag_track(drives["second"], "/gps/fix")
    zone = fixes[0]["position"]["utm_zone"]
    true = np.array([latlon_to_utm(*truth.at(np.array([f["timestamp"]])).values[0], zone)
                     for f in fixes])  # fmt: skip
    got = np.array([(f["position"]["east"], f["position"]["north"]) for f in fixes])
    error = np.linalg.norm(got - true, axis=1)
    accepted = np.array([f["accepted"] for f in fixes])
    assert score["frames"] == score["with_truth"] == PLACES
    assert score["accepted"] == accepted.sum()
    assert score["median_m"] == pytest.approx(np.median(error[accepted]), abs=1e-6)
    assert score["p95_m"] == pytest.approx(np.percentile(error[accepted], 95), abs=1e-6)
    assert score["precision"] == pytest.approx(np.mean(error[accepted] <= 10))
    assert score["share_within"] == pytest.approx(np.mean(error <= 10))
    # the same frames from named files: the same answer against their names
    named = cli("localize", drives["map"], drives["queries"], "-m", exported["onnx"],
                "--length", "3", "-o", tmp_path / "n.jsonl", "-q", "--json")  # fmt: skip
    assert json.loads(named.out)["score"]["truth"] == "the frames' file names"


def test_evo_ape_on_the_tum_track_equals_the_summary(cli, exported, drives, tmp_path) -> None:
    pytest.importorskip("evo")
    truth = read_bag_track(drives["second"], "/gps/fix")
    zone = PlaceMap.load(drives["map"]).records()[0].utm_zone
    truth_tum = tmp_path / "truth.tum"
    metres = [latlon_to_utm(lat, lon, zone) for lat, lon in truth.values]
    truth_tum.write_text("".join(f"{t:.9f} {e:.4f} {n:.4f} 0 0 0 0 1\n"
                                 for t, (e, n) in zip(truth.times, metres, strict=True)))
    result = localize(cli, exported, drives, tmp_path / "track.tum", "--truth", truth_tum,
                      "--json")  # fmt: skip
    assert result.code == 0, result.err
    score = json.loads(result.out)["score"]
    evo = Path(sys.executable).with_name("evo_ape")
    ran = subprocess.run([str(evo), "tum", str(truth_tum), str(tmp_path / "track.tum")],
                         capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    stats = dict(line.split() for line in ran.stdout.splitlines() if line.count("\t") == 1)
    assert float(stats["median"]) == pytest.approx(score["median_m"], abs=1e-3)
    assert float(stats["max"]) >= score["p95_m"] - 1e-3
