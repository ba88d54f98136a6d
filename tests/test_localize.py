"""Localisation from a stream: the route tracker and area filter on known paths, the
Localizer on a real model, calibration, ``eval --pr --sequence``, ``edgevpr localize`` and
its sources (folders, videos, ROS bags); the ROS 2 node is tested in test_field.py."""

from __future__ import annotations

import itertools
import json
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgevpr.cli import main as edgevpr_main
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.images import list_images
from edgevpr.data.synth import SynthConfig, generate
from edgevpr.runtime.embedder import Embedder
from edgevpr.runtime.localize import (
    INITIALISING,
    LOST,
    TRACKING,
    Calibration,
    Localizer,
    StreamFrame,
    precision_recall,
)
from edgevpr.runtime.localize.area import AreaTracker, Motion
from edgevpr.runtime.localize.calibration import sidecar
from edgevpr.runtime.localize.layout import name_key
from edgevpr.runtime.localize.rosmsg import navsat_fields, pixels_of, pose_fields
from edgevpr.runtime.localize.route import MIN_PACE, RouteConfig, RouteTracker
from edgevpr.runtime.localize.vectorcache import VectorCache
from edgevpr.runtime.placemap import PlaceMap
from edgevpr.runtime.placemap.place_record import PlaceRecord, record_for

PLACES = 40
NOISE = 0.4  # added to a query's descriptor: its nearest place is within one of the truth
# about half the time (0.51-0.54 measured at 256-d and 512-d), as real frames are


# ------------------------------------------------------------------ trackers, on known paths
def noisy_route_scorer(truth: float, rng: np.random.Generator, places: int):
    """z-values of a frame standing at ``truth``: a peak there over noise, as real frames
    give (a wrong place wins a single frame now and then)."""
    noise = rng.normal(0, 1, places)
    noise[int(round(truth))] += 2.5
    if rng.random() < 0.3:  # a confusing frame: a far place scores higher
        noise[int(rng.integers(places))] += 4.0

    def score(positions: np.ndarray) -> np.ndarray:
        idx = np.clip(np.round(positions), 0, places - 1).astype(int)
        return noise[idx]

    return score, np.argsort(-noise)[:20]


def run_route(speeds: list[float], seed: int = 0, places: int = 400,
              pace: float | None = None) -> tuple[int, int, int]:  # fmt: skip
    """(frames, right after the window filled, single frames right): speeds per frame."""
    rng = np.random.default_rng(seed)
    tracker = RouteTracker(places, RouteConfig(length=10, pace=pace))
    truth, right, single, frames = 20.0, 0, 0, 0
    for t, speed in enumerate(speeds):
        truth += speed
        if truth > places - 2:
            break
        score, seeds = noisy_route_scorer(truth, rng, places)
        estimate = tracker.update(seeds, score)
        frames += 1
        single += abs(seeds[0] - truth) <= 1
        if t >= 10:
            right += abs(estimate.position - truth) <= 1.5
    return frames, right, single


def test_route_tracker_follows_a_steady_route_through_confusing_frames() -> None:
    frames, right, single = run_route([1.0] * 200)
    assert right / (frames - 10) >= 0.95
    assert right > single  # the sequence beats single frames


def test_route_tracker_survives_speed_changes_drops_and_repeats() -> None:
    speeds = [1.0] * 40 + [0.5] * 40 + [2.0] * 40 + [1.0, 0.0, 1.0, 2.0] * 10
    frames, right, _ = run_route(speeds, seed=1)
    assert right / (frames - 10) >= 0.85


def test_a_route_keyframed_every_fourth_frame_is_followed_at_its_pace() -> None:
    """A stream moving a quarter place a frame (a map keyframed every fourth frame of its
    drive) is outside the speeds searched at pace 1, and inside them at pace 0.25."""
    quarter = [0.25] * 240
    frames, right, _ = run_route(quarter, seed=2, pace=0.25)
    assert right / (frames - 10) >= 0.9
    _, right_at_1, _ = run_route(quarter, seed=2)
    assert right_at_1 < 0.8 * right


def test_a_long_step_moves_the_route_up_to_l_places_at_speed_1() -> None:
    """A sparse stream against a drive keyframed every 50th frame (pace 0.02): 30 recorded
    frames between two frames move the path 0.6 places, and a gap of an hour at most L."""
    flat = np.zeros(100)

    def peak_at(place: int):
        z = flat.copy()
        z[place] = 5.0
        return lambda positions: z[np.clip(np.round(positions), 0, 99).astype(int)]

    tracker = RouteTracker(100, RouteConfig(length=10, speeds=(1.0,), pace=0.02, seeds=1))
    tracker.update(np.array([10]), peak_at(10))
    assert tracker.update(np.array([], np.int64), peak_at(11), step=30).position == (
        pytest.approx(10.6))
    assert tracker.update(np.array([], np.int64), peak_at(21), step=1e6).position == (
        pytest.approx(20.6))


def test_route_ranking_and_margin() -> None:
    rng = np.random.default_rng(3)
    tracker = RouteTracker(100, RouteConfig(length=5))
    for truth in range(10, 20):
        score, seeds = noisy_route_scorer(truth, rng, 100)
        estimate = tracker.update(seeds, score)
    ranking = estimate.ranking()
    assert ranking[0] == round(estimate.position) and len(set(ranking)) == len(ranking)
    assert estimate.margin > 0 and estimate.frames == 5


def test_vector_cache_gives_the_fetched_cosines_and_fetches_each_place_once_while_kept() -> None:
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((3000, 8)).astype(np.float32)
    fetched: list[int] = []

    def fetch(positions: np.ndarray) -> np.ndarray:
        fetched.extend(positions.tolist())
        return vectors[positions]

    cache = VectorCache(fetch, len(vectors), 8, budget_bytes=0)  # the fewest rows: MIN_ROWS
    query = rng.standard_normal(8).astype(np.float32)
    for start in range(0, 2600, 200):  # a window sliding along the route, as a beam does
        positions = np.arange(start, start + 400)
        assert np.allclose(cache.dots(positions, query), vectors[positions] @ query, atol=1e-5)
    assert len(fetched) == len(set(fetched)) == 2800  # each place once: the window fits
    assert cache.hits == 13 * 400 - 2800
    wide = rng.permutation(3000)[:2500]  # more than the ring holds: still right
    assert np.allclose(cache.dots(wide, query), vectors[wide] @ query, atol=1e-5)
    again = wide[:200]
    assert np.allclose(cache.dots(again, query), vectors[again] @ query, atol=1e-5)


def test_area_filter_follows_a_walk_on_a_grid() -> None:
    """A 20 x 20 grid of places 10 m apart; a robot walks an L, one place a frame, and a
    third of its frames look most like a random place elsewhere."""
    grid = np.stack(np.meshgrid(np.arange(20), np.arange(20)), -1).reshape(-1, 2) * 10.0
    rng = np.random.default_rng(0)
    tracker = AreaTracker(grid, spacing_m=10.0)
    path = [(2 + i, 3) for i in range(15)] + [(16, 4 + i) for i in range(15)]
    right = single = 0
    for t, (x, y) in enumerate(path):
        z = rng.normal(0, 1, len(grid))
        z[y * 20 + x] += 2.5
        if t % 3 == 1:
            z[int(rng.integers(len(grid)))] += 5.0
        estimate = tracker.update(np.argsort(-z)[:30], lambda s, z=z: z[s], Motion(reach_m=15.0))
        if t >= 10:  # once the evidence has built up; right: within a place (diagonal too)
            single += bool(np.linalg.norm(grid[np.argmax(z)] - (x * 10, y * 10)) <= 15)
            right += bool(np.linalg.norm(grid[estimate.place] - (x * 10, y * 10)) <= 15)
    assert right >= 0.8 * (len(path) - 10) and right > single + 3


# ------------------------------------------------------------------ the Localizer
@pytest.fixture(scope="module")
def route(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> dict:
    root = tmp_path_factory.mktemp("route") / "set"
    generate(root, SynthConfig(seed=4, places=PLACES, val_places=12, train_places=0))
    database = sorted(list_images(root / "images/test/database"), key=lambda p: name_key(p.name))
    placemap = PlaceMap.create(embedder.descriptor_dim, embedder.fingerprint)
    placemap.add(embedder.embed_paths(database), [record_for(p) for p in database])
    map_path = root.parent / "route.vprmap"
    placemap.save(map_path)
    queries = sorted(list_images(root / "images/test/queries"), key=lambda p: name_key(p.name))
    elsewhere = sorted(list_images(root / "images/val/queries"), key=lambda p: name_key(p.name))
    return {"root": root, "map": map_path, "queries": queries, "elsewhere": elsewhere}


def error_m(fix, path: Path) -> float:
    truth = record_for(path)
    return float(np.hypot(fix.position.east - truth.east, fix.position.north - truth.north))


def test_localizer_tracks_a_route_and_accepts_only_right_fixes(
    embedder: Embedder, route: dict
) -> None:
    localizer = Localizer(embedder, PlaceMap.load(route["map"]), length=5, calibration=None)
    assert localizer.mode == "route" and localizer.layout.ordered_by == "name"
    fixes = list(localizer.run(route["queries"]))
    assert [f.frame for f in fixes] == list(range(PLACES))
    assert fixes[0].state == INITIALISING and not fixes[0].accepted
    assert "initialising" in fixes[0].reason
    errors = np.array([error_m(f, p) for f, p in zip(fixes, route["queries"], strict=True)])
    accepted = np.array([f.accepted for f in fixes])
    assert accepted.sum() >= PLACES // 3
    # places are 40 m apart and the head is untrained: neighbouring places look alike, so an
    # accepted fix may be one place off, never further
    assert (errors[accepted] <= 60).all()
    assert np.mean(errors[accepted] <= 25) >= 0.8
    assert np.mean(errors[5:] <= 25) >= 0.8
    fix = fixes[-1]
    assert fix.position.kind == "east/north"
    assert fix.uncertainty_m >= localizer.layout.spacing_m / 2 > 15.0
    assert 0 <= fix.confidence <= 1 and len(fix.matches) == 5
    assert json.loads(json.dumps(fix.to_dict()))["position"]["kind"] == "east/north"


def test_the_pace_is_the_maps_own_unless_given(embedder: Embedder, tmp_path) -> None:
    """A map taught from a drive keyframed every fourth frame (orders 0, 4, 8, ...) is
    matched at 0.25 places a frame; a map of every frame, or a RouteConfig's pace, at its
    own."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((PLACES, embedder.descriptor_dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    def taught(every: int) -> PlaceMap:
        placemap = PlaceMap.create(embedder.descriptor_dim, embedder.fingerprint)
        placemap.add(vectors, [PlaceRecord(east=80.0 * i, north=0.0, drive="d",
                                           order=every * i) for i in range(PLACES)])  # fmt: skip
        return placemap

    keyframed = Localizer(embedder, taught(4), calibration=None)
    assert keyframed.layout.frames_per_place == 4 and keyframed.pace == 0.25
    assert Localizer(embedder, taught(1), calibration=None).pace == 1.0
    given = Localizer(embedder, taught(4), calibration=None, route=RouteConfig(pace=0.5))
    assert given.pace == 0.5
    with pytest.raises(EdgeVPRError, match="pace"):
        RouteConfig(pace=0.0)
    # a drone hovering between places of a 30 fps video: paces below the searchable floor
    # are held at it, never a refusal of a map the user did not choose the pace of
    assert Localizer(embedder, taught(30_000), calibration=None).pace == MIN_PACE


def timed_drive(embedder: Embedder) -> tuple[Localizer, np.ndarray]:
    """A localizer on a drive recorded at 1 frame a second and keyframed every fourth frame
    (PLACES places 40 m apart), and the drive's recorded frames."""
    rng = np.random.default_rng(5)
    dim = embedder.descriptor_dim
    frames = np.empty((4 * PLACES, dim), np.float32)
    current = rng.standard_normal(dim)
    for i in range(len(frames)):  # a recorded drive whose views drift frame to frame
        current = 0.9 * current + 0.45 * rng.standard_normal(dim)
        frames[i] = current / np.linalg.norm(current)
    placemap = PlaceMap.create(dim, embedder.fingerprint)
    placemap.add(frames[::4], [PlaceRecord(east=40.0 * i, north=0.0, drive="d", order=4 * i,
                                           timestamp=1000.0 + 4 * i) for i in range(PLACES)])
    return Localizer(embedder, placemap, length=10, calibration=None), frames


def test_a_faster_camera_moves_through_a_timed_drive_at_the_recorded_pace(
    embedder: Embedder,
) -> None:
    """From a camera at 4 frames a second: with the stream's timestamps each frame is a
    quarter of a recorded frame, so the path moves 1/16 place a frame; without them it would
    be taken for a stream at the recorded rate (a quarter place a frame) and run ahead."""
    localizer, frames = timed_drive(embedder)
    assert localizer.layout.frame_period_s == 1.0 and localizer.pace == 0.25

    def right_share(timed: bool) -> float:
        rng = np.random.default_rng(6)
        localizer.reset()
        right = []
        for j in range(16 * (PLACES - 8)):  # 4 camera frames a recorded frame
            truth = j / 16  # places
            view = frames[min(round(j / 4), len(frames) - 1)]
            query = view + NOISE * rng.standard_normal(view.shape)
            fix = localizer.update_descriptor(query, timestamp=j * 0.25 if timed else None)
            if j >= 10:
                right.append(abs(fix.route_position - truth) <= 1.0)
        return float(np.mean(right))

    timed, untimed = right_share(timed=True), right_share(timed=False)
    assert timed >= 0.95 and untimed < 0.9  # measured: 0.998 and 0.789


def test_a_view_seen_four_times_is_weighed_as_one(embedder: Embedder) -> None:
    """The same views once a second, then each four times at 4 frames a second: the second
    stream's window of 10 frames holds 2.5 views, so its margins are weighed at half
    (sqrt(2.5 / 10)) of what its frames alone give."""
    localizer, frames = timed_drive(embedder)
    rng = np.random.default_rng(7)
    views = frames[:-8] + NOISE * rng.standard_normal(frames[:-8].shape)

    def margins(repeats: int) -> float:
        localizer.reset()
        fixes = [localizer.update_descriptor(view, timestamp=i + k / repeats)
                 for i, view in enumerate(views) for k in range(repeats)]  # fmt: skip
        return float(np.median([f.margin for f in fixes[10 * repeats:]]))

    once, four_times = margins(1), margins(4)
    # measured: 0.37 (0.75 before the window's views were counted)
    assert 0.25 < four_times / once < 0.6, (once, four_times)


def test_frames_run_one_by_one_give_the_same_fixes(embedder: Embedder, route: dict) -> None:
    placemap = PlaceMap.load(route["map"])
    batch = list(Localizer(embedder, placemap, length=5, calibration=None).run(route["queries"]))
    single = Localizer(embedder, placemap, length=5, calibration=None)
    for path, expected in zip(route["queries"][:12], batch, strict=False):
        fix = single.update(path, name=str(path))
        assert fix.place_id == expected.place_id and fix.accepted == expected.accepted
        assert fix.margin == pytest.approx(expected.margin, abs=1e-4)


def test_off_map_and_blank_frames_are_not_accepted(embedder: Embedder, route: dict) -> None:
    localizer = Localizer(embedder, PlaceMap.load(route["map"]), length=5, calibration=None)
    fixes = list(localizer.run(route["elsewhere"]))  # places of another split: not in the map
    assert not any(f.accepted for f in fixes)
    assert fixes[-1].state == LOST
    localizer.reset()
    for path in route["queries"][:8]:
        localizer.update(path)
    black = localizer.update(np.zeros((96, 128, 3), np.uint8))
    assert not black.accepted and black.reason == "blank frame"
    assert localizer.update(route["queries"][8]).state in (TRACKING, LOST)


def test_run_is_lazy_and_keeps_what_sources_say(embedder: Embedder, route: dict) -> None:
    pulled = itertools.count()

    def camera():
        for i, path in enumerate(itertools.cycle(route["queries"])):
            next(pulled)
            image = cv2.imread(str(path))
            yield StreamFrame(image, timestamp=100.0 + 0.1 * i, name=f"cam#{i}", encoding="bgr8")

    localizer = Localizer(embedder, PlaceMap.load(route["map"]), length=5, calibration=None)
    first = list(itertools.islice(localizer.run(camera()), 30))
    assert [f.name for f in first[:2]] == ["cam#0", "cam#1"]
    assert first[3].timestamp == pytest.approx(100.3)
    assert next(pulled) <= 30 + 2 * embedder.batch_size + 1


def test_localizer_refuses_what_it_cannot_use(embedder: Embedder, route: dict, tmp_path) -> None:
    placemap = PlaceMap.load(route["map"])
    with pytest.raises(EdgeVPRError, match="mode must be one of"):
        Localizer(embedder, placemap, mode="circle")
    bare = PlaceMap.create(embedder.descriptor_dim, embedder.fingerprint)
    bare.add(np.eye(2, embedder.descriptor_dim, dtype=np.float32))
    with pytest.raises(EdgeVPRError, match="area tracking needs a map whose places have"):
        Localizer(embedder, bare, mode="area")
    localizer = Localizer(embedder, placemap, calibration=None)
    with pytest.raises(EdgeVPRError, match="prior must be a GeoPrior"):
        localizer.update(route["queries"][0], prior=(1, 2, 3))
    with pytest.raises(EdgeVPRError, match="512 finite numbers"):
        localizer.update_descriptor(np.zeros(3))
    with pytest.raises(EdgeVPRError, match="a frame must be pixels"):
        localizer.update(42)


# ------------------------------------------------------------------ calibration
def test_precision_recall_by_hand() -> None:
    curve = precision_recall(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 1, 0, 1], bool))
    assert curve.precision.tolist() == [1.0, 1.0, 2 / 3, 0.75]
    assert curve.recall_at_full_precision == 0.5
    assert curve.threshold_at(1.0) == 0.8
    assert curve.average_precision == pytest.approx(0.25 + 0.25 + 0 + 0.25 * 0.75)


def test_calibration_is_found_beside_the_map_and_sets_the_threshold(
    embedder: Embedder, route: dict, tmp_path: Path
) -> None:
    margins = np.linspace(0, 1, 50)
    correct = margins > 0.3
    calibration = Calibration.fit(margins, correct, 1.0, embedder.fingerprint, "route", 5)
    assert calibration.threshold == pytest.approx(margins[correct].min())
    assert calibration.confidence(0.9) == 1.0 and calibration.confidence(0.1) == 0.0
    map_copy = tmp_path / "copy.vprmap"
    map_copy.write_bytes(route["map"].read_bytes())
    calibration.save(sidecar(map_copy))
    localizer = Localizer(embedder, PlaceMap.load(map_copy), length=5)
    assert localizer.calibration == Calibration.load(sidecar(map_copy))
    assert localizer.threshold == calibration.threshold
    # found beside the map but for another length: set aside, with a note; given: refused
    aside = Localizer(embedder, PlaceMap.load(map_copy), length=7)
    assert aside.calibration is None
    assert "for route matching over 5 frames, not route over 7" in aside.calibration_note
    with pytest.raises(EdgeVPRError, match="for route matching over 5 frames, not route over 7"):
        Localizer(embedder, PlaceMap.load(map_copy), length=7, calibration=sidecar(map_copy))
    other = Calibration.fit(margins, correct, 1.0, "f" * 64, "route", 5)
    with pytest.raises(EdgeVPRError, match="measured with another model"):
        Localizer(embedder, PlaceMap.load(map_copy), length=5, calibration=other)


# ------------------------------------------------------------------ commands
def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    try:
        edgevpr_main([str(a) for a in argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_eval_reports_sequences_and_pr_and_writes_a_calibration(
    exported: dict[str, Path], route: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calibration = tmp_path / "cal.json"
    code, out, err = run(capsys, "eval", exported["onnx"], route["root"], "--pr",
                         "--sequence", "5", "--threshold-at-precision", "1.0",
                         "--calibration", calibration, "--plot", tmp_path / "pr.png")  # fmt: skip
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[1].startswith("sequence of 5: R@1: ")
    assert lines[2].startswith("single frame: AP ") and "R@100P" in lines[3]
    saved = Calibration.load(calibration)
    assert saved.mode == "route" and saved.length == 5 and saved.precision == 1.0
    assert (tmp_path / "pr.png").stat().st_size > 1000
    code, out, _ = run(capsys, "eval", exported["onnx"], route["root"], "--sequence", "5",
                       "--pr", "--json")  # fmt: skip
    report = json.loads(out)
    assert set(report["sequence"]["recall"]) == {"1", "5", "10", "20"}
    assert report["sequence"]["recall"]["1"] >= report["recall"]["1"]
    assert 0 <= report["sequence"]["pr"]["average_precision"] <= 1
    code, _, err = run(capsys, "eval", exported["onnx"], route["root"],
                       "--threshold-at-precision", "0.9")  # fmt: skip
    assert code == 2 and "needs --sequence L and --calibration OUT" in err


def test_localize_command_on_a_folder(
    exported: dict[str, Path], route: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for path in route["queries"]:
        (frames / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "track.jsonl"
    code, stdout, err = run(capsys, "localize", route["map"], frames, "--model", exported["onnx"],
                            "--out", out, "--plot", tmp_path / "track.png", "--length", "5",
                            "-q")  # fmt: skip
    assert code == 0, err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == PLACES and lines[-1]["state"] in (TRACKING, LOST)
    assert "fixes accepted" in stdout and "% of all fixes within 25 m" in stdout
    assert (tmp_path / "track.png").stat().st_size > 1000
    before = out.read_bytes()
    code, _, err = run(capsys, "localize", route["map"], frames / "nope", "--model",
                       exported["onnx"], "--out", out)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and out.read_bytes() == before


def test_localize_command_on_a_video(
    exported: dict[str, Path], route: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = tmp_path / "drive.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 96))
    for path in route["queries"]:
        writer.write(cv2.imread(str(path)))
    writer.release()
    code, stdout, err = run(capsys, "localize", route["map"], video, "--model", exported["onnx"],
                            "--out", tmp_path / "t.jsonl", "--length", "5", "-q")  # fmt: skip
    assert code == 0, err
    lines = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert len(lines) == PLACES and lines[1]["name"] == "drive.avi#1"
    assert lines[10]["timestamp"] == pytest.approx(1.0, abs=0.05)
    assert sum(line["accepted"] for line in lines) >= PLACES // 3


# ------------------------------------------------------------------ ROS: bags, messages, node
def ros_image(typestore, pixels: np.ndarray, encoding: str, seconds: int):
    types_ = typestore.types
    stamp = types_["builtin_interfaces/msg/Time"](sec=seconds, nanosec=500_000_000)
    header_type = types_["std_msgs/msg/Header"]
    fields = {"stamp": stamp, "frame_id": "camera"}
    if "seq" in header_type.__dataclass_fields__:  # ROS 1 headers carry a sequence number
        fields["seq"] = seconds
    header = header_type(**fields)
    step = pixels.shape[1] * pixels.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1)
    data = np.frombuffer(np.ascontiguousarray(pixels).tobytes(), np.uint8)
    return types_["sensor_msgs/msg/Image"](
        header=header, height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
        is_bigendian=0, step=step, data=data,
    )  # fmt: skip


@pytest.mark.parametrize("version", [1, 2])
def test_bags_from_real_images_are_read_and_localised(
    version: int, exported: dict[str, Path], route: dict, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    pytest.importorskip("rosbags")
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_HUMBLE if version == 2 else Stores.ROS1_NOETIC)
    if version == 2:
        from rosbags.rosbag2 import Writer

        bag, writer = tmp_path / "drive", Writer(tmp_path / "drive", version=9)
        serialize = typestore.serialize_cdr
    else:
        from rosbags.rosbag1 import Writer

        bag, writer = tmp_path / "drive.bag", Writer(tmp_path / "drive.bag")
        serialize = typestore.serialize_ros1
    with writer:
        raw = writer.add_connection(
            "/camera/image_raw", "sensor_msgs/msg/Image", typestore=typestore
        )
        packed = writer.add_connection("/camera/compressed", "sensor_msgs/msg/CompressedImage",
                                       typestore=typestore)  # fmt: skip
        for i, path in enumerate(route["queries"]):
            message = ros_image(typestore, cv2.imread(str(path)), "bgr8", 1000 + i)
            writer.write(raw, (1000 + i) * 10**9, serialize(message, "sensor_msgs/msg/Image"))
            jpeg = typestore.types["sensor_msgs/msg/CompressedImage"](
                header=message.header, format="jpeg",
                data=np.frombuffer(path.read_bytes(), np.uint8),
            )  # fmt: skip
            writer.write(packed, (1000 + i) * 10**9,
                         serialize(jpeg, "sensor_msgs/msg/CompressedImage"))  # fmt: skip
    code, _, err = run(capsys, "localize", route["map"], bag, "--model", exported["onnx"],
                       "--out", tmp_path / "t.jsonl")  # fmt: skip
    assert code == 2 and "give --topic with one of its image topics" in err
    for topic in ("/camera/image_raw", "/camera/compressed"):
        code, _, err = run(capsys, "localize", route["map"], bag, "--model", exported["onnx"],
                           "--topic", topic, "--out", tmp_path / "t.jsonl", "--length", "5",
                           "-q")  # fmt: skip
        assert code == 0, err
        lines = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
        assert len(lines) == PLACES and lines[2]["timestamp"] == pytest.approx(1002.5)
        assert sum(line["accepted"] for line in lines) >= PLACES // 3


def test_image_messages_in_every_encoding() -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 65535, (5, 7), dtype=np.uint16)
    padded = np.zeros((5, 16), np.uint8)  # rows padded to 16 bytes
    padded[:, :14] = grey.astype(">u2").view(np.uint8).reshape(5, 14)
    message = types.SimpleNamespace(height=5, width=7, encoding="mono16", is_bigendian=1,
                                    step=16, data=padded.ravel())  # fmt: skip
    pixels, encoding = pixels_of(message)
    assert encoding == "mono16" and np.array_equal(pixels, grey)
    bgr = rng.integers(0, 255, (4, 6, 3), dtype=np.uint8)
    message = types.SimpleNamespace(height=4, width=6, encoding="bgr8", is_bigendian=0, step=18,
                                    data=bgr.ravel())  # fmt: skip
    assert np.array_equal(pixels_of(message)[0], bgr)
    message.encoding = "yuv422"
    with pytest.raises(EdgeVPRError, match="'yuv422' is not supported"):
        pixels_of(message)
    message.encoding, message.step = "bgr8", 17
    with pytest.raises(EdgeVPRError, match="holds 72 bytes, step 17"):
        pixels_of(message)


def test_fixes_become_poses_and_navsat_fixes() -> None:
    from edgevpr.runtime.localize.fix import Fix, Position

    fix = Fix(frame=3, state=TRACKING, accepted=True, confidence=0.9, margin=1.0,
              position=Position("east/north", 500.0, 6000.0), uncertainty_m=4.0,
              heading=90.0, timestamp=12.25)  # fmt: skip
    pose = pose_fields(fix)
    assert pose["position"] == (500.0, 6000.0, 0.0)
    assert pose["covariance"][0] == pose["covariance"][7] == 16.0
    assert pose["orientation"][3] == pytest.approx(1.0)  # heading east = yaw 0
    geographic = Fix(frame=3, state=TRACKING, accepted=False, confidence=0.1, margin=0.0,
                     position=Position("lat/lon", 59.9, 10.7), uncertainty_m=8.0)  # fmt: skip
    navsat = navsat_fields(geographic)
    assert (navsat["latitude"], navsat["longitude"], navsat["status"]) == (59.9, 10.7, -1)
    assert navsat["position_covariance"][0] == 64.0
    with pytest.raises(EdgeVPRError, match="needs a fix with a latitude/longitude"):
        navsat_fields(fix)
